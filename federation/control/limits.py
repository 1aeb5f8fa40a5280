"""Time limits: an attempt that has run past its job's `time_limit` is stopped (its site stops it
as it stops any attempt: SIGTERM, then SIGKILL after the site's grace) and its job fails as timed
out, where a preemption would have requeued it (`federation.jobs.asked_stop_ends`)."""
from __future__ import annotations

from federation.control.core import Core
from federation.jobs import TIMED_OUT, Attempt, AttemptState, Job


def overdue(attempt: Attempt, job: Job, limit: float, now: float) -> str:
    """Why `attempt` must stop now, or '' while it is within `limit` (its job's, or its queue's; 0:
    none)."""
    if not limit or attempt.state is not AttemptState.RUNNING or not attempt.started_at or attempt.stop_requested_at:
        return ""
    ran = now - attempt.started_at
    return f"{TIMED_OUT} ran {ran:.0f}s, past its time_limit of {limit:g}s" if ran > limit else ""


def time_out(core: Core, live: list[tuple[Attempt, Job]], now: float) -> bool:
    """Ask the sites to stop every attempt past its time limit. Whether any was asked."""
    asked = False
    for attempt, job in live:
        why = overdue(attempt, job, core.time_limit(job), now)
        if why and core.store.request_stop(job.id, attempt.number, why, now):
            core.record("scheduler", "job.time_out", job.id, attempt=attempt.number, site=attempt.site, reason=why)
            asked = True
    if asked:
        core.changes.bump()
    return asked
