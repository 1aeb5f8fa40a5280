"""Site lifecycle: registration, heartbeats, cordon and drain, leases, and what each site should run."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

from federation.control.catalog import bound_site
from federation.control.core import Core
from federation.errors import InvalidSpec, NotFound
from federation.identity import Identity
from federation.jobs import Attempt, AttemptState, Job
from federation.pricing import nodes_up
from federation.sites import Capacity, SiteRecord, SiteState
from policies.gpus import Inventory

log = logging.getLogger("federation.control")


class Sites:
    def __init__(self, core: Core) -> None:
        self.core = core

    def register(self, who: Identity, site: SiteRecord, actor: str = "") -> SiteRecord:
        """The site as its certificate or the policy binds it (PermissionDenied otherwise), its
        datasets classified by the policy."""
        site = bound_site(who, site, self.core.policy)
        currency = self.core.policy.spec.currency
        if site.pricing is not None and site.pricing.currency != currency:
            raise InvalidSpec(f"registration of {site.name!r}: pricing.currency: {site.pricing.currency}, but the "
                              f"federation's policy prices in {currency} (spec.currency)")
        now = self.core.clock()
        record = self.core.store.upsert_site(replace(site, registered_at=now, last_heartbeat=now))
        if not record.autonomous:
            self.core.heard(now)
        self.core.record(actor, "site.register", site.name, jurisdiction=site.jurisdiction, region=site.region,
                         labels=dict(site.labels), datasets={d.name: d.classification for d in site.datasets})
        self.core.changes.bump()
        return record

    def heartbeat(self, name: str, capacity: Capacity | None, inventory: Inventory | None = None,
                  up: Mapping[str, int] | None = None) -> SiteRecord:
        """`up`: an elastic site's nodes alive per type; ignored from a fixed site."""
        now = self.core.clock()
        elastic = None
        if up:
            known = self.core.store.get_site(name).elastic
            if known is not None:
                counted = nodes_up(up, known.node_types, "nodes_up")
                if counted != dict(known.up):
                    elastic = replace(known, up=counted)
        site = self.core.store.heartbeat(name, capacity, now, inventory, elastic)
        if not site.autonomous:
            self.core.heard(now)
        if inventory is not None or elastic is not None:
            self.core.changes.bump()
        return site

    def set_state(self, name: str, state: SiteState, actor: str = "", handover: bool = False) -> SiteRecord:
        """With `handover` (draining only), the site's running attempts are stopped as a preemption
        would stop them, and their jobs go back to the queue to run elsewhere."""
        if handover and state is not SiteState.DRAINING:
            raise InvalidSpec("handover: only a draining site hands its work over")
        store = self.core.store
        site = store.set_site_state(name, state)
        handed = []
        if handover:
            now = self.core.clock()
            for attempt, job in store.live_attempts(name):
                if not attempt.stop_requested_at and store.request_stop(
                        job.id, attempt.number, f"handed over: site {name} drained", now):
                    handed.append(job.id)
        self.core.record(actor, "site.state", name, state=state.value,
                         **({"handed_over": handed} if handover else {}))
        self.core.changes.bump()
        return site

    def expire_leases(self, now: float) -> int:
        """Sites silent for longer than their lease lose their assignments: each live attempt becomes
        lost and its job is retried by its policy, wherever its rules allow. An autonomous site
        keeps its work, and so does any site the jobs that say `on_site_loss: wait`. Returns how
        many attempts were lost."""
        core, store = self.core, self.core.store
        if not self._hearing(now):
            return 0
        lost = 0
        for site in store.list_sites():
            if site.autonomous or not core.lease_expired(site, now):
                continue
            silent = now - max(site.last_heartbeat, core.started_at)
            for attempt, job in store.live_attempts(site.name):
                if job.spec.spec.on_site_loss == "wait":
                    continue   # its site keeps it running (it does not fence it), and it waits for the site
                message = f"site {site.name} lost: no heartbeat for {silent:.0f}s (lease {core.site_timeout_s:g}s)"
                if core.applied(store.apply_attempt_status(job.id, attempt.number, AttemptState.LOST, message, now),
                                attempt.number):
                    lost += 1
                    log.warning("%s attempt %d: %s", job.id, attempt.number, message)
                    core.record("federation", "attempt.lost", job.id, attempt=attempt.number, site=site.name,
                                silent_s=round(silent, 1))
        if lost:
            core.changes.bump()
        return lost

    def _hearing(self, now: float) -> bool:
        """While no site gets through, no lease runs out (and the next heartbeat that does restarts
        every lease: `Core.heard`)."""
        core = self.core
        if core.hearing(core.newest_heard, now):
            return True
        if not core.deaf:
            log.warning("no site heard from for %gs: re-placing nobody's work until one is", core.site_timeout_s)
            core.record("federation", "federation.deaf", "sites", newest_heartbeat=core.newest_heard)
        core.deaf = True
        return False

    def desired(self, site: str) -> list[tuple[Attempt, Job]]:
        """Attempts the site should be running: live ones whose job still wants them."""
        return sorted(((a, j) for a, j in self.core.store.live_attempts(site)
                       if not j.state.terminal and not a.stop_requested_at),
                      key=lambda x: (x[1].id, x[0].number))

    def input_of(self, site: str, job_id: str, number: int, name: str) -> tuple[bytes, str]:
        """An input of an attempt `site` holds now; NotFound for anything else, so a site learns
        nothing of other sites' work."""
        store = self.core.store
        if not any(a.number == number for a, _ in store.live_attempts(site, [job_id])):
            raise NotFound(f"{name} of {job_id}/{number} not found")
        return store.get_artifact(job_id, 0, name)
