"""Run-time estimates from history, for planning reservations only: how long a running job that
declares no time limit (and whose queue gives none) is likely to run on.

The estimate is the mean of the last two successful runs of the same tenant's job of the same name
(Tsafrir, Etsion and Feitelson, "Backfilling using system-generated predictions rather than user
runtime estimates", 2007: on real workloads this beats what users declare). It never stops a job
and never lets one start ahead of a reservation: only a declared limit, which is enforced, does.
A job already running past its estimate is taken to run on, as one with no estimate."""
from __future__ import annotations

from collections import OrderedDict, deque

from federation.jobs import Attempt, AttemptState, Job, JobState
from federation.store import Store

KEEP = 2            # runs remembered per (tenant, name)
MAX_KEYS = 50_000   # the least recently seen are forgotten first
LOAD = 5_000        # successful jobs read back when this process starts


def key_of(job: Job) -> tuple[str, str]:
    return job.tenant, job.spec.metadata.name


class RunTimes:
    def __init__(self) -> None:
        self._runs: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()

    @classmethod
    def from_store(cls, store: Store, limit: int = LOAD) -> RunTimes:
        out = cls()
        for job in reversed(store.list_jobs(states=[JobState.SUCCEEDED], limit=limit)):   # oldest first
            if job.attempts:
                out.ended(job, job.attempts[-1])
        return out

    def ended(self, job: Job, attempt: Attempt) -> None:
        """Learn from an attempt that ended: only a success says how long the work takes."""
        if attempt.state is not AttemptState.SUCCEEDED or not 0 < attempt.started_at <= attempt.ended_at:
            return
        key = key_of(job)
        runs = self._runs.pop(key, None) or deque(maxlen=KEEP)
        runs.append(attempt.ended_at - attempt.started_at)
        self._runs[key] = runs
        if len(self._runs) > MAX_KEYS:
            self._runs.popitem(last=False)

    def estimate(self, job: Job, started_at: float, now: float) -> float:
        """Seconds `job`, running since `started_at`, is expected to run in all; 0: unknown."""
        runs = self._runs.get(key_of(job))
        if not runs:
            return 0.0
        expected = max(sum(runs) / len(runs), 1.0)
        return expected if not started_at or now - started_at < expected else 0.0
