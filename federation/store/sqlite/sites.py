"""Sites: registration, operator state and heartbeats; the list is cached until the next write."""
from __future__ import annotations

import json

from federation.errors import NotFound
from federation.gpus import inventory_to_json
from federation.pricing import elastic_to_json, pricing_to_json
from federation.sites import Capacity, SiteRecord, SiteState
from federation.store.sqlite.database import Database
from federation.store.sqlite.rows import site_from_row
from policies.gpus import Inventory
from policies.pricing import Elastic


class SiteTables(Database):
    def upsert_site(self, site: SiteRecord) -> SiteRecord:
        with self._tx() as db:
            self._sites = None
            db.execute(
                "INSERT INTO sites (name, jurisdiction, region, labels, datasets, cpus, memory, gpus, state,"
                " registered_at, last_heartbeat, inventory, autonomous, agreement_key, pricing, elastic,"
                " agreement_proof)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT(name) DO UPDATE SET jurisdiction=excluded.jurisdiction, region=excluded.region,"
                " labels=excluded.labels, datasets=excluded.datasets, cpus=excluded.cpus,"
                " memory=excluded.memory, gpus=excluded.gpus, registered_at=excluded.registered_at,"
                " last_heartbeat=excluded.last_heartbeat, inventory=excluded.inventory,"
                " autonomous=excluded.autonomous, agreement_key=excluded.agreement_key, pricing=excluded.pricing,"
                " elastic=excluded.elastic, agreement_proof=excluded.agreement_proof",
                (site.name, site.jurisdiction, site.region, json.dumps(site.labels, sort_keys=True),
                 json.dumps([d.__dict__ for d in site.datasets]), site.capacity.cpus, site.capacity.memory,
                 site.capacity.gpus, site.state.value, site.registered_at, site.last_heartbeat,
                 inventory_to_json(site.inventory), int(site.autonomous), site.agreement_key,
                 pricing_to_json(site.pricing), elastic_to_json(site.elastic), site.agreement_proof))
            return site_from_row(db.execute("SELECT * FROM sites WHERE name=?", (site.name,)).fetchone())

    def get_site(self, name: str) -> SiteRecord:
        with self._lock:
            row = self._db.execute("SELECT * FROM sites WHERE name=?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"site {name} not found")
        return site_from_row(row)

    def list_sites(self) -> list[SiteRecord]:
        cached = self._sites   # a write empties it before it begins: a list here is the last commit's
        if cached is not None:
            return list(cached)
        with self._lock:
            if self._sites is None:
                rows = self._db.execute("SELECT * FROM sites ORDER BY name").fetchall()
                self._sites = [site_from_row(r) for r in rows]
            return list(self._sites)

    def set_site_state(self, name: str, state: SiteState) -> SiteRecord:
        with self._tx() as db:
            self._sites = None
            if db.execute("UPDATE sites SET state=? WHERE name=?", (state.value, name)).rowcount == 0:
                raise NotFound(f"site {name} not found")
            return site_from_row(db.execute("SELECT * FROM sites WHERE name=?", (name,)).fetchone())

    def heartbeat(self, name: str, capacity: Capacity | None, now: float,
                  inventory: Inventory | None = None, elastic: Elastic | None = None) -> SiteRecord:
        """Once committed, the cached list gets the site's new record in place of its old one, rather
        than being read again whole: every site heartbeats every few seconds."""
        with self._lock:   # held past the commit: no other write comes between it and the cache
            cached, term, self._sites = self._sites, self._term, None
            with self._tx() as db:
                if inventory is not None:
                    db.execute("UPDATE sites SET inventory=? WHERE name=?", (inventory_to_json(inventory), name))
                if elastic is not None:
                    db.execute("UPDATE sites SET elastic=? WHERE name=?", (elastic_to_json(elastic), name))
                if capacity is None:
                    n = db.execute("UPDATE sites SET last_heartbeat=? WHERE name=?", (now, name)).rowcount
                else:
                    n = db.execute("UPDATE sites SET last_heartbeat=?, cpus=?, memory=?, gpus=? WHERE name=?",
                                   (now, capacity.cpus, capacity.memory, capacity.gpus, name)).rowcount
                if n == 0:
                    raise NotFound(f"site {name} is not registered")
                site = site_from_row(db.execute("SELECT * FROM sites WHERE name=?", (name,)).fetchone())
            if cached is not None and self._sites is None and self._term == term:   # not fenced meanwhile
                self._sites = [site if s.name == name else s for s in cached]
            return site
