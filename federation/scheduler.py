"""The scheduling loop: level-triggered, wakes on change or every interval."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from federation.control import ControlPlane
from federation.control.retention import Retention
from federation.training import TrainingLoop

log = logging.getLogger("federation.scheduler")


class SchedulerLoop:
    def __init__(self, control: ControlPlane, interval_s: float = 0.5, trainings: TrainingLoop | None = None,
                 leading: Callable[[], bool] = lambda: True, retention: Retention | None = None) -> None:
        self.control = control
        self.retention = retention or Retention(control.core)   # ended jobs leave after the policy's retention
        self.leading = leading   # only the leading replica schedules (`federation.replication`)
        self.trainings = trainings
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.control.changes.bump()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        changes = self.control.changes
        while not self._stop.is_set():
            generation = changes.generation
            if not self.leading():
                changes.wait(generation, self.interval_s)
                continue
            try:
                result = self.control.cycle.run_once()
                for d in result.decisions:
                    log.info("placed %s on %s (%s)", d.job_id, d.site, "; ".join(d.reasons))
                if result.deferred:
                    log.info("placement limit reached: %d jobs deferred to the next cycle", result.deferred)
            except Exception:  # the loop must survive a bad cycle; the next one retries
                log.exception("scheduling cycle failed")
            if self.trainings is not None:
                try:
                    self.trainings.advance()
                except Exception:
                    log.exception("training pass failed")
            try:
                self.retention.maybe_run()
            except Exception:
                log.exception("retention pass failed")
            changes.wait(generation, self.interval_s)
