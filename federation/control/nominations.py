"""Nominated preemption: what stopping work frees for a waiting job is held for that job, so that
no other job takes it first and the preemption is not wasted. Held from when the stopped attempt
has ended until the job starts, or for HOLD_S at most (the job may have been refused elsewhere, or
no longer fit). Kept by the leading replica alone: a new leader starts without holds, and the next
preemption makes them again."""
from __future__ import annotations

from dataclasses import dataclass

import policies
from federation.jobs import Attempt, Job
from policies.preemption import Preemption

HOLD_S = 120.0


@dataclass(frozen=True)
class _Hold:
    victim: tuple[str, int]        # the stopped (job, attempt)
    nomination: policies.Nomination
    until: float


class Holds:
    def __init__(self) -> None:
        self.holds: list[_Hold] = []

    def add(self, p: Preemption, snapshot: policies.Snapshot, now: float) -> None:
        """Work stopped for `p.for_job`: what it held is to be held for that job once it has ended."""
        victim = next((r for r in snapshot.running if r.job.id == p.job_id and r.attempt == p.attempt), None)
        if victim is not None:
            self.holds.append(_Hold((p.job_id, p.attempt), policies.Nomination(
                p.for_job, p.site, victim.job.cpus, victim.job.memory, victim.binding), now + HOLD_S))

    def current(self, pending: set[str], live: list[tuple[Attempt, Job]],
                now: float) -> tuple[policies.Nomination, ...]:
        """The holds in force: for jobs still waiting, not run out, of stopped work that has ended
        (until then it holds its capacity itself)."""
        self.holds = [h for h in self.holds if h.nomination.job_id in pending and now < h.until]
        running = {(a.job_id, a.number) for a, _ in live}
        return tuple(h.nomination for h in self.holds if h.victim not in running)
