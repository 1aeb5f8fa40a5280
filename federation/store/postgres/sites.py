"""Sites: registration, operator state and heartbeats.

Unlike the SQLite store, the list is not cached: other replicas write it too."""
from __future__ import annotations

import json

from federation.errors import NotFound
from federation.gpus import inventory_to_json
from federation.pricing import elastic_to_json, pricing_to_json
from federation.sites import Capacity, SiteRecord, SiteState
from federation.store.postgres.database import Database
from federation.store.sqlite.rows import site_from_row
from policies.gpus import Inventory
from policies.pricing import Elastic


class SiteTables(Database):
    def upsert_site(self, site: SiteRecord) -> SiteRecord:
        with self._tx() as db:
            row = db.execute(
                "INSERT INTO sites (name, jurisdiction, region, labels, datasets, cpus, memory, gpus, state,"
                " registered_at, last_heartbeat, inventory, autonomous, agreement_key, pricing, elastic,"
                " agreement_proof)"
                " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
                " ON CONFLICT (name) DO UPDATE SET jurisdiction=excluded.jurisdiction, region=excluded.region,"
                " labels=excluded.labels, datasets=excluded.datasets, cpus=excluded.cpus,"
                " memory=excluded.memory, gpus=excluded.gpus, registered_at=excluded.registered_at,"
                " last_heartbeat=excluded.last_heartbeat, inventory=excluded.inventory,"
                " autonomous=excluded.autonomous, agreement_key=excluded.agreement_key, pricing=excluded.pricing,"
                " elastic=excluded.elastic, agreement_proof=excluded.agreement_proof RETURNING *",
                (site.name, site.jurisdiction, site.region, json.dumps(site.labels, sort_keys=True),
                 json.dumps([d.__dict__ for d in site.datasets]), site.capacity.cpus, site.capacity.memory,
                 site.capacity.gpus, site.state.value, site.registered_at, site.last_heartbeat,
                 inventory_to_json(site.inventory), site.autonomous, site.agreement_key,
                 pricing_to_json(site.pricing), elastic_to_json(site.elastic), site.agreement_proof)).fetchall()[0]
            return site_from_row(row)

    def get_site(self, name: str) -> SiteRecord:
        rows = self._read("SELECT * FROM sites WHERE name=%s", (name,))
        if not rows:
            raise NotFound(f"site {name} not found")
        return site_from_row(rows[0])

    def list_sites(self) -> list[SiteRecord]:
        return [site_from_row(r) for r in self._read("SELECT * FROM sites ORDER BY name")]

    def set_site_state(self, name: str, state: SiteState) -> SiteRecord:
        with self._tx() as db:
            row = db.execute("UPDATE sites SET state=%s WHERE name=%s RETURNING *", (state.value, name)).fetchone()
            if row is None:
                raise NotFound(f"site {name} not found")
            return site_from_row(row)

    def heartbeat(self, name: str, capacity: Capacity | None, now: float,
                  inventory: Inventory | None = None, elastic: Elastic | None = None) -> SiteRecord:
        with self._tx() as db:
            if inventory is not None:
                db.execute("UPDATE sites SET inventory=%s WHERE name=%s", (inventory_to_json(inventory), name))
            if elastic is not None:
                db.execute("UPDATE sites SET elastic=%s WHERE name=%s", (elastic_to_json(elastic), name))
            if capacity is None:
                row = db.execute("UPDATE sites SET last_heartbeat=%s WHERE name=%s RETURNING *", (now, name))
            else:
                row = db.execute("UPDATE sites SET last_heartbeat=%s, cpus=%s, memory=%s, gpus=%s WHERE name=%s"
                                 " RETURNING *", (now, capacity.cpus, capacity.memory, capacity.gpus, name))
            found = row.fetchone()
            if found is None:
                raise NotFound(f"site {name} is not registered")
            return site_from_row(found)
