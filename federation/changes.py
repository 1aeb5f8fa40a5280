"""In-process change signal: watchers wait for the generation to move on."""
from __future__ import annotations

import threading


class Changes:
    """Two generations: every change, and the changes that can alter what a site should run
    (a submission cannot), so that sites' streams sleep through a stream of submissions."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0
        self._assignments = 0

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def assignments(self) -> int:
        return self._assignments

    def bump(self, assignments: bool = True) -> None:
        with self._cond:
            self._generation += 1
            self._assignments += assignments
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float) -> int:
        """Block until the generation differs from `seen` or `timeout` passes; return it."""
        return self._wait("_generation", seen, timeout)

    def wait_assignments(self, seen: int, timeout: float) -> int:
        return self._wait("_assignments", seen, timeout)

    def _wait(self, counter: str, seen: int, timeout: float) -> int:
        with self._cond:
            self._cond.wait_for(lambda: getattr(self, counter) != seen, timeout=timeout)
            return getattr(self, counter)
