"""What every part of the control plane shares: the store, the policy, the clock, the audit log
and the change signal. All durable state is in the store."""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import policies
from federation import queues
from federation.audit import AuditRecord, Signer
from federation.changes import Changes
from federation.control.estimates import RunTimes
from federation.control.refusals import Refusals
from federation.control.rules import rules_from_policy
from federation.errors import Deposed
from federation.jobs import Job
from federation.observe.metrics import FederationMetrics
from federation.sites import SiteRecord
from federation.spec import PolicyConfig
from federation.store import Store
from policies import fairshare

log = logging.getLogger("federation.control")


class Core:
    def __init__(self, store: Store, policy: PolicyConfig, *, site_timeout_s: float = 30.0,
                 signer: Signer | None = None, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.signer = signer
        self.policy = policy
        self.tree = queues.queue_tree(policy)
        self.queue_by_name: dict[str, fairshare.Queue] = {q.name: q for q in self.tree}
        self.time_limits = queues.time_limits(policy)   # queue -> the time limit of jobs that declare none
        self.reservations: dict[str, policies.Reservation] = {}   # job -> its start, as the last cycle reserved it
        self.run_times = RunTimes.from_store(store)   # for running jobs of no time limit, when they likely end
        self.rules: policies.Rules = rules_from_policy(policy)
        self.site_timeout_s = site_timeout_s
        # Leases count from the later of a site's last heartbeat and this process's start: while
        # the federation was down no site could renew, and none is lost for that.
        self.clock = clock
        self.started_at = clock()
        self.changes = Changes()
        self.deaf = False   # heard no site for a lease, at the last look (see hearing)
        self.newest_heard = store.newest_heartbeat()
        self.metrics = FederationMetrics()
        self.refusals = Refusals(self.record, lambda: self.clock(), seen=lambda action: self.metrics.denied.labels(
            action).inc())

    def audit_record(self, actor: str, action: str, subject: str, **detail: Any) -> AuditRecord:
        plain = json.loads(json.dumps(detail, sort_keys=True, default=str))
        return AuditRecord(0, self.clock(), actor, action, subject, plain)

    def applied(self, job: Job | None, number: int) -> bool:
        """After `store.apply_attempt_status`: whether it changed anything; an attempt that ended is counted."""
        if job is None:
            return False
        attempt = next((a for a in job.attempts if a.number == number), None)
        if attempt is not None and not attempt.state.live:
            self.metrics.attempt_ended(attempt.site, attempt.state.value)
            self.run_times.ended(job, attempt)
        return True

    def time_limit(self, job: Job) -> float:
        """How long `job` may run: its own time_limit, else its queue's; 0: no limit."""
        return job.spec.spec.time_limit or self.time_limits.get(job.queue, 0.0)

    def expected_run(self, job: Job, started_at: float, now: float) -> float:
        """How long a running `job` is planned to run: its time limit, else what its earlier runs
        took (`estimates`); 0: unknown."""
        return self.time_limit(job) or self.run_times.estimate(job, started_at, now)

    def record(self, actor: str, action: str, subject: str, **detail: Any) -> None:
        """Append to the audit log (a no-op without a signing key, or on a replica that does not lead)."""
        if self.signer is None:
            return
        try:
            self.store.append_audit(self.audit_record(actor, action, subject, **detail), self.signer.seal)
        except Deposed as e:
            log.warning("not recorded (%s %s %s): %s", actor, action, subject, e.message)

    def begin_term(self) -> None:
        """This process leads from now (`federation.replication`): leases count from then."""
        self.started_at = self.clock()
        self.newest_heard = self.store.newest_heartbeat()
        self.changes.bump()

    def heard(self, at: float) -> None:
        """A site that can be lost was heard at `at`. After a lease in which none was, leases count
        from here: a site that asked in between was told nobody would re-place its work."""
        if not self.hearing(self.newest_heard, at):
            self.started_at = max(self.started_at, at)
            if self.deaf:
                log.warning("hearing sites again: their leases count from now")
            self.deaf = False
        self.newest_heard = max(self.newest_heard, at)

    def hearing(self, newest_heartbeat: float, now: float) -> bool:
        """Whether some site got through within a lease (or there is none to hear). When none did,
        the likelier story is that this process is cut off or overloaded, not that every site
        died at once: it re-places nobody's work, and tells sites that ask that nobody can
        (as Kubernetes stops evicting from a zone where every node went silent)."""
        return not newest_heartbeat or now - newest_heartbeat <= self.site_timeout_s

    def connected(self, site: SiteRecord, now: float) -> bool:
        """Heard from within its lease, and since this process started: a record from before a
        restart says nothing of whether the site is still there."""
        return site.connected(now, self.site_timeout_s) and site.last_heartbeat >= self.started_at

    def lease_expired(self, site: SiteRecord, now: float) -> bool:
        return now - max(site.last_heartbeat, self.started_at) > self.site_timeout_s
