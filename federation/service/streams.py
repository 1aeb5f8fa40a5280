"""Open user streams, bounded. Each `WatchJob` or `StreamJobLogs` holds one of the server's threads
for as long as it is open, so one caller could otherwise take every thread and leave site
heartbeats waiting past their lease: a caller may hold `per_caller` streams, users together
`total`, and the rest of the threads are the sites'."""
from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from federation.errors import ResourceExhausted


class StreamSlots:
    def __init__(self, per_caller: int = 8, total: int = 32) -> None:
        self.per_caller, self.total = per_caller, total
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    @contextmanager
    def slot(self, caller: str) -> Iterator[None]:
        with self._lock:
            if self._open[caller] >= self.per_caller:
                raise ResourceExhausted(f"{caller} has {self._open[caller]} streams open (watch, logs -f); at most "
                                        f"{self.per_caller}: close one")
            if sum(self._open.values()) >= self.total:
                raise ResourceExhausted(f"the federation holds {self.total} user streams; retry later")
            self._open[caller] += 1
        try:
            yield
        finally:
            with self._lock:
                self._open[caller] -= 1
                if not self._open[caller]:
                    del self._open[caller]
