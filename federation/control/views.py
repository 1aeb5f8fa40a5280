"""Read views: what the servicers and the training loop show, read from the store and never written."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import policies
import policies.placement
from federation import queues
from federation.control.border import Border, kept_notice
from federation.control.core import Core
from federation.control.snapshot import holds, observe, pending_view, usage
from federation.jobs import Job, JobState
from federation.sites import Capacity, SiteRecord
from federation.spec.common import Resources
from policies import fairshare
from training.model import Round, Training


@dataclass(frozen=True)
class QueuedJob:
    job: Job
    tier: int            # its queue's fair-share tier when its turn comes; -1: held back
    share: float
    held_back: str       # what holds it back beyond capacity, if anything
    reserved: policies.Reservation | None = None   # where and from when the last cycle reserved it a start


@dataclass(frozen=True)
class QueueState:
    queue: fairshare.Queue
    factors: fairshare.Factors
    running: dict
    history: dict
    pending: int


@dataclass(frozen=True)
class SiteStatus:
    record: SiteRecord
    allocated: Capacity
    running: int
    connected: bool
    lost: bool           # its lease expired


class Views:
    def __init__(self, core: Core) -> None:
        self.core = core

    # ------------------------------------------------------------ jobs and trainings

    def job(self, job_id: str) -> Job:
        return self.core.store.get_job(job_id)

    def jobs(self, tenants: Iterable[str] | None, states: list[JobState], limit: int,
             before: tuple[float, str] | None = None, submitter: str | None = None) -> list[Job]:
        """A page of jobs, newest first: of `tenants` (None: every tenant's), older than `before`,
        submitted by `submitter` (None: anyone)."""
        return self.core.store.list_jobs(tenants=tenants, states=states, limit=limit, before=before,
                                         submitter=submitter)

    def log(self, job_id: str, offset: int) -> bytes:
        return self.core.store.read_log(job_id, offset)

    def logs_kept(self, job: Job) -> str:
        """Where the rules of the job's data keep its logs at its site: what to say instead; else ''."""
        reason = Border(self.core).logs_kept(job)
        return kept_notice(job, reason) if reason else ""

    def crossing(self, jobs: Iterable[Job]) -> dict[str, frozenset[str]]:
        """Per job id: what of it may leave the site that runs it."""
        border = Border(self.core)
        return {j.id: border.may_cross(j) for j in jobs}

    def training(self, training_id: str) -> Training:
        return self.core.store.get_training(training_id)

    def rounds(self, training_id: str) -> list[Round]:
        return self.core.store.rounds(training_id)

    def trainings(self, tenant: str | None) -> list[Training]:
        return self.core.store.trainings(tenant=tenant)

    def backlog(self) -> tuple[int, int]:
        """How many jobs wait, and how many attempts are live."""
        return len(self.core.store.pending_jobs()), len(self.core.store.live_attempts())

    # ------------------------------------------------------------ sites

    def site(self, name: str) -> SiteRecord:
        return self.core.store.get_site(name)

    def site_statuses(self, name: str | None = None, live: list[tuple[str, str, Resources]] | None = None
                      ) -> list[SiteStatus]:
        """Every site (or the one named) with what it runs (`live`: `Store.live_use`, when already
        read), whether it is connected and whether its lease expired."""
        store = self.core.store
        records = store.list_sites() if name is None else [store.get_site(name)]
        in_use = usage((site, r) for site, _, r in (store.live_use() if live is None else live))
        now = self.core.clock()
        return [SiteStatus(s, *in_use.get(s.name, (Capacity(), 0)),
                           connected=self.core.connected(s, now), lost=self.core.lease_expired(s, now))
                for s in records]

    def inputs(self, job_ids: Iterable[str]) -> dict[str, list[tuple[str, str, int]]]:
        """Per job: (name, sha256, size) of the files its attempts fetch."""
        return self.core.store.artifact_refs(job_ids)

    # ------------------------------------------------------------ scheduling

    def snapshot(self, now: float) -> policies.Snapshot:
        return observe(self.core, now)

    def queue(self) -> tuple[list[QueuedJob], list[QueueState]]:
        """Pending jobs in the order the next cycle considers them if each were placed in turn,
        then those held back; and each queue's standing."""
        core = self.core
        now = core.clock()
        pending = core.store.pending_jobs()
        live = core.store.live_attempts()
        held_back = holds(core, pending, live)
        snapshot = observe(core, now, live)
        known = core.queue_by_name.keys()
        views = [pending_view(j) for j in pending if j.id not in held_back and j.queue in known]
        assert snapshot.queues is not None   # observe always weighs the queues
        ledger = fairshare.Ledger(snapshot.queues, policies.placement.totals(snapshot), views)
        counts = Counter(v.queue for v in views)
        # The standing before anything is charged; then the order, charging each job in turn.
        states = [QueueState(q, ledger.factors(q.name), ledger.nodes[q.name].running, ledger.nodes[q.name].history,
                             counts[q.name]) for q in core.tree]
        by_id = {j.id: j for j in pending}
        out = []
        for view in ledger:
            factors = ledger.factors(view.queue)
            blocked = ledger.admits(view.queue, fairshare.demand(view))
            out.append(QueuedJob(by_id[view.id], factors.tier, factors.ratio, blocked, core.reservations.get(view.id)))
            if not blocked:
                ledger.charge(view.queue, fairshare.demand(view))
        out += [QueuedJob(by_id[i], -1, 0.0, h.detail) for i, h in held_back.items()]
        out += [QueuedJob(j, -1, 0.0, f"its queue '{j.queue}' is no longer in the policy")
                for j in pending if j.id not in held_back and j.queue not in known]
        return out, states

    def usage_report(self, by: tuple[str, ...], since: float, until: float,
                     tenants: frozenset[str] | None = None) -> list[dict]:
        """Resource-seconds grouped by `by`; only of `tenants` when given."""
        records = [r for r in self.core.store.usage_records(since) if tenants is None or r.tenant in tenants]
        return queues.report(records, by, since, until or self.core.clock())
