"""Retention: jobs that ended longer ago than the policy's `spec.retention.jobs` leave the store.

The scheduling loop of the leading replica calls `Retention.maybe_run` every cycle; a pass runs at
most once every hundredth of the retention (between once a second and once every five minutes),
removes ended jobs in batches (`Store.compact`, one short transaction each) until none is left or
its time budget is spent, and then goes on a little later while a backlog remains. What a batch
removes, and what it keeps (usage, final states, what trainings need), is the store's
(federation.store.retention). A pass that removed anything appends one audit record with the count.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from federation.control.core import Core

log = logging.getLogger("federation.retention")

BATCH = 500              # jobs looked at, and removed at most, in one transaction
BUDGET_S = 1.0           # a pass stops after this long, so that scheduling waits no longer
BACKLOG_PAUSE_S = 2.0    # the next pass after one stopped by its budget
MIN_INTERVAL_S = 1.0
MAX_INTERVAL_S = 300.0


@dataclass(frozen=True)
class Pass:
    removed: int
    finished: bool       # False: the budget ran out with ended jobs still to look at


def interval(keep_s: float) -> float:
    """Seconds between passes for a retention of `keep_s`: a job outstays it by 1% at most, within bounds."""
    return min(MAX_INTERVAL_S, max(MIN_INTERVAL_S, keep_s / 100))


class Retention:
    def __init__(self, core: Core, batch: int = BATCH, budget_s: float = BUDGET_S,
                 timer: Callable[[], float] = time.monotonic) -> None:
        self.core = core
        self.batch = batch
        self.budget_s = budget_s
        self._timer = timer
        self._next_at = 0.0    # by the core's clock

    def maybe_run(self) -> Pass | None:
        """A pass if one is due (None otherwise, and always with a retention of 0: keep forever)."""
        keep = self.core.policy.spec.retention.jobs
        now = self.core.clock()
        if not keep or now < self._next_at:
            return None
        result = self.run(now - keep, keep)
        self._next_at = now + (interval(keep) if result.finished else BACKLOG_PAUSE_S)
        return result

    def run(self, ended_before: float, keep_s: float) -> Pass:
        """Remove jobs that ended before `ended_before`, batch after batch, within the budget."""
        started = self._timer()
        removed, after = 0, None
        while True:
            batch = self.core.store.compact(ended_before, self.batch, after)
            removed += batch.removed
            after = batch.resume_after
            if after is None or self._timer() - started >= self.budget_s:
                break
        if removed:
            self.core.record("federation", "jobs.compacted", "jobs", removed=removed, ended_before=ended_before,
                             retention_s=keep_s)
            log.info("retention: removed %d jobs that ended before %.0f (%s)", removed, ended_before,
                     "done" if after is None else "more next pass")
        return Pass(removed, after is None)
