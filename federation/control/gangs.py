"""A gang runs whole or not at all: the pure rule for one gang, and the step of the cycle that applies it."""
from __future__ import annotations

from dataclasses import dataclass

from federation.control.core import Core
from federation.jobs import Attempt, AttemptState, Job, JobState


@dataclass(frozen=True)
class GangAction:
    """What to do with a gang: cancel its unfinished parts, or stop its live attempts so it waits whole."""
    why: str
    cancel: tuple[Job, ...] = ()
    stop: tuple[tuple[Attempt, Job], ...] = ()


def gang_action(gang: str, parts: list[Job], now: float) -> GangAction | None:
    """When one part failed, the rest are cancelled; when one is waiting again, or has not started
    within the gang's timeout, the live parts are stopped and the gang waits whole. None: leave it."""
    live = tuple((a, j) for j in parts if (a := j.current_attempt) is not None and a.state.live)
    spec = parts[0].spec.spec.gang
    go_on = spec is not None and spec.on_part_end == "continue"
    if go_on and all(j.current_attempt is not None and j.current_attempt.started_at
                     for j in parts if not j.state.terminal):
        return None   # every part left started once: each goes on alone
    ended = next((j for j in parts if j.state in (JobState.FAILED, JobState.CANCELLED)), None)
    if ended is not None and not go_on:
        return GangAction(f"part {ended.id} of gang {gang} {ended.state.value}",
                          cancel=tuple(j for j in parts if not j.state.terminal))
    waiting = next((j for j in parts if j.state is JobState.PENDING), None)
    timeout = spec.timeout if spec else 0.0
    late = next((j for a, j in live if a.state is AttemptState.ASSIGNED and now - a.created_at > timeout), None)
    if waiting is not None:
        return GangAction(f"gang {gang}: part {waiting.id} is waiting again; the gang starts only whole", stop=live)
    if late is not None:
        return GangAction(f"gang {gang}: part {late.id} did not start within {timeout:g}s", stop=live)
    return None


def watch_gangs(core: Core, live: list[tuple[Attempt, Job]], now: float) -> bool:
    """Apply `gang_action` to every gang with live work. Whether anything changed."""
    ids = {j.gang_id for _, j in live if j.gang_id}
    if not ids:
        return False
    changed = False
    for gang, parts in core.store.gang_jobs(ids).items():
        action = gang_action(gang, parts, now)
        if action is None:
            continue
        for j in action.cancel:
            core.store.cancel_job(j.id, now, f"cancelled: {action.why}")
            core.record("scheduler", "job.cancel", j.id, reason=action.why)
            changed = True
        for a, j in action.stop:
            if core.store.request_stop(j.id, a.number, action.why, now):
                core.record("scheduler", "job.preempt", j.id, attempt=a.number, site=a.site, reason=action.why)
                changed = True
    if changed:
        core.changes.bump()
    return changed
