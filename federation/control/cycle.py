"""The scheduling cycle, as state -> plan -> apply: observe the store into a snapshot, let the pure
`policies.schedule` decide, and write its decisions back in one place."""
from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field, replace

import policies
from federation import queues
from federation.collector import paused_gc
from federation.control.core import Core
from federation.control.gangs import watch_gangs
from federation.control.limits import time_out
from federation.control.nominations import Holds
from federation.control.sites import Sites
from federation.control.snapshot import budget_holds, holds, observe, pending_view
from federation.errors import InvalidSpec
from federation.jobs import Attempt, Explanation, Job
from federation.spec.server import BACKFILL_DEPTH
from policies.explain import quote

log = logging.getLogger("federation.control")
SLUGS = {int(r): r.slug for r in policies.Reason}
# Sites an explanation names one by one; its summary counts them all. With 1,000 sites and 100,000
# jobs waiting, a verdict for every site would be a hundred million rows written each time they change.
MAX_VERDICTS = 16
VerdictRow = tuple[str, bool, str, str]   # site, eligible, reason code, detail


@dataclass(frozen=True)
class Observed:
    """The state one cycle decides on."""
    now: float
    pending: dict[str, Job]
    snapshot: policies.Snapshot
    views: dict[str, policies.PendingJob]   # of the jobs it may place: not held back, not backing off
    waiting: Counter[str] = field(default_factory=Counter)   # jobs left waiting, by what holds them


def placed_explanation(d: policies.Decision, observed: Observed) -> Explanation:
    """Why a job went where it went: its site's reasons, then every other site's verdict, in site order."""
    snapshot = observed.snapshot
    why = "; ".join(d.reasons)
    verdicts: list[VerdictRow] = [(d.site, True, "ok", why)]
    for site, code in zip(snapshot.sites[:MAX_VERDICTS - 1], d.reasons_by_site):
        if site.name == d.site:
            continue
        if code == policies.Reason.OK:
            cost = quote(observed.views[d.job_id], site)
            verdicts.append((site.name, True, "ok", f"eligible; scored lower{f' ({cost})' if cost else ''}"))
        else:
            v = policies.describe(observed.views[d.job_id], site, policies.Reason(code), snapshot)
            verdicts.append((site.name, False, v.reason.slug, v.detail))
    index = {s.name: i for i, s in enumerate(snapshot.sites)}
    verdicts.sort(key=lambda v: index[v[0]])
    return Explanation(summary=f"placed on {d.site}: {why}", evaluated_at=observed.now, verdicts=tuple(verdicts))


def unplaced_summary(u: policies.Unplaced, old: Explanation | None, result: policies.ScheduleResult,
                     waiting_on: dict[str, list[str]]) -> str | None:
    """What an unplaced job's explanation should now say; None when it should stay as it is."""
    if u.job_id in result.making_room:
        if u.job_id in waiting_on:
            return f"waiting: stopping {', '.join(waiting_on[u.job_id])} to make room"
        if old is not None and old.summary.startswith("waiting: stopping"):
            return None  # still waiting on the work named when it was stopped
        return f"waiting: work stopping on {result.making_room[u.job_id]} makes room for it"
    if old is not None and old.summary == u.summary and [v[2] for v in old.verdicts] == [
            SLUGS[c] for c in u.reasons[:MAX_VERDICTS]]:
        return None  # unchanged: no write
    return u.summary


@dataclass(frozen=True)
class Stats:
    """The last cycle, for monitoring: when it ran and what it decided on (None: nothing waited)."""
    at: float
    observed: Observed | None

    @property
    def waiting(self) -> Counter[str]:
        return self.observed.waiting if self.observed is not None else Counter()


def waiting_reason(said: str | Explanation | None) -> str:
    """A pending job's reason in a word, from its explanation's summary (a bounded set of labels)."""
    summary = said if isinstance(said, str) else said.summary if said is not None else ""
    for start, reason in (("deferred", "deferred"), ("waiting: no site", "no-capacity"),
                          ("no site can take", "no-capacity"), ("no site may ever", "no-eligible-site"),
                          ("waiting: ", "preempting"), ("held by a queue limit", "queue-limit"), ("gang ", "gang"),
                          ("no sites are registered", "no-sites")):
        if summary.startswith(start):
            return reason
    return "other"


class Cycle:
    def __init__(self, core: Core, sites: Sites, max_placements: int | None = None,
                 backfill_depth: int = BACKFILL_DEPTH) -> None:
        self.core = core
        self.sites = sites
        self.max_placements = max_placements
        self.backfill = policies.BackfillSettings(backfill_depth) if backfill_depth else None
        self.holds = Holds()
        self.last = Stats(0.0, None)

    def run_once(self) -> policies.ScheduleResult:
        """One observe -> decide -> apply cycle of the scheduling loop."""
        store = self.core.store
        started = time.perf_counter()
        now = self.core.clock()
        self.sites.expire_leases(now)
        live = store.live_attempts()
        if watch_gangs(self.core, live, now) | time_out(self.core, live, now):
            live = store.live_attempts()
        pending = store.pending_jobs()
        if not pending:
            self.core.reservations = {}
            self.last = Stats(self.core.clock(), observed=None)
            self.core.metrics.cycle_ended(time.perf_counter() - started, 0, self.last.at)
            return policies.ScheduleResult((), ())
        observed = self._observe(now, pending, live)
        with paused_gc():
            result = policies.schedule(observed.snapshot, list(observed.views.values()), now, self.max_placements)
        self._apply(result, observed)
        self.core.reservations = {r.job_id: r for r in result.reservations}
        self.last = Stats(now, observed)   # whole: a scrape reads it from another thread
        self.core.metrics.cycle_ended(time.perf_counter() - started, len(result.decisions), self.core.clock())
        return result

    def _observe(self, now: float, pending: list[Job], live: list[tuple[Attempt, Job]]) -> Observed:
        snapshot = replace(observe(self.core, now, live), backfill=self.backfill,
                           nominated=self.holds.current({j.id for j in pending}, live, now))
        held_back = self._settle_holds(pending, live, [s.name for s in snapshot.sites], now)
        views = {}
        waiting = Counter(held_back.values())
        for j in pending:
            if j.id in held_back or j.not_before > now:
                waiting["retry-backoff"] += j.id not in held_back
                continue   # held back, or backing off before a retry (its message says until when)
            queue = j.queue if j.queue in self.core.queue_by_name else self._requeue(j, now)
            if queue:
                views[j.id] = pending_view(j, queue, self.core.time_limits.get(queue, 0.0))
            else:
                waiting["no-queue"] += 1
        return Observed(now, {j.id: j for j in pending}, snapshot, views, waiting)

    def _settle_holds(self, pending: list[Job], live: list[tuple[Attempt, Job]], sites: list[str],
                      now: float) -> dict[str, str]:
        """Explain (or, if it can never start, cancel) each job held back; what holds each one."""
        found = {**budget_holds(self.core, pending, now), **holds(self.core, pending, live)}
        if not found:
            return {}
        by_id = {j.id: j for j in pending}
        for job_id, hold in found.items():
            if hold.never:
                self.core.store.cancel_job(job_id, now, message=f"cancelled: {hold.detail}")
                self.core.record("scheduler", "job.cancel", job_id, reason=hold.detail)
                self.core.changes.bump()
                continue
            summary = f"held: {hold.detail}"
            old = by_id[job_id].explanation
            if old is None or old.summary != summary:
                verdicts = tuple((s, False, hold.reason.slug, hold.detail) for s in sites[:MAX_VERDICTS])
                self.core.store.explain_job(job_id, Explanation(summary, now, verdicts))
        return {job_id: hold.reason.slug for job_id, hold in found.items() if not hold.never}

    def _requeue(self, job: Job, now: float) -> str | None:
        """The queue of a job whose queue left the policy, or None (and the job says why) if it has none."""
        try:
            return queues.resolve(self.core.policy, job.tenant, job.spec.spec.queue)
        except InvalidSpec as e:
            summary = f"held: its queue '{job.queue}' is no longer in the policy ({e})"
            if job.explanation is None or job.explanation.summary != summary:
                self.core.store.explain_job(job.id, Explanation(summary, now))
            return None

    def _apply(self, result: policies.ScheduleResult, observed: Observed) -> None:
        """Write the plan: placements, then preemptions, then why the rest wait."""
        core, now = self.core, observed.now
        changed: set[str] = set()   # sites whose desired sets changed
        for d in result.decisions:
            if core.store.place_job(d.job_id, d.site, placed_explanation(d, observed), now, d.binding,
                                    d.gpu_model, d.node_type, d.price) is not None:
                changed.add(d.site)
                core.metrics.placements.labels(observed.views[d.job_id].queue).inc()
                core.record("scheduler", "job.place", d.job_id, site=d.site, reasons=list(d.reasons),
                            policy=f"{core.policy.metadata.name}@{core.policy.metadata.version}",
                            gpus=[(s.node, list(s.gpus), s.milli) for s in d.binding])
        waiting_on: dict[str, list[str]] = {}
        for p in result.preemptions:
            reason = f"preempted for {p.for_job} ({p.reason})"
            if core.store.request_stop(p.job_id, p.attempt, reason, now):
                log.info("preempting %s attempt %d on %s: %s", p.job_id, p.attempt, p.site, reason)
                core.record("scheduler", "job.preempt", p.job_id, attempt=p.attempt, site=p.site, for_job=p.for_job,
                            reason=p.reason)
                waiting_on.setdefault(p.for_job, []).append(f"{p.job_id} on {p.site}")
                self.holds.add(p, observed.snapshot, now)
                changed.add(p.site)
                core.metrics.preemptions.labels(p.site).inc()
        explained = []
        for u in result.unplaced:
            summary = unplaced_summary(u, observed.pending[u.job_id].explanation, result, waiting_on)
            observed.waiting[waiting_reason(summary or observed.pending[u.job_id].explanation)] += 1
            if summary is not None:
                verdicts = tuple((v.site, False, v.reason.slug, v.detail) for v in policies.verdicts(
                    u, observed.views[u.job_id], observed.snapshot, MAX_VERDICTS))
                explained.append((u.job_id, Explanation(summary, now, verdicts)))
        core.store.explain_jobs(explained)
        if changed:
            core.changes.bump(sites=changed)
