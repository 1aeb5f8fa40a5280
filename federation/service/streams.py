"""Open user streams, bounded. A `WatchJob` or `StreamJobLogs` holds no thread while it waits, but
it reads the store once a second, and after changes (at most five times a second): a caller may hold
`per_caller` streams, and users together `total`."""
from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from federation.errors import ResourceExhausted
from federation.spec.policy import LimitsSpec


class StreamSlots:
    def __init__(self, per_caller: int, total: int) -> None:
        self.per_caller, self.total = per_caller, total
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    @classmethod
    def of(cls, limits: LimitsSpec) -> StreamSlots:
        return cls(limits.streams_per_caller, limits.user_streams)

    @contextmanager
    def slot(self, caller: str) -> Iterator[None]:
        with self._lock:
            if self._open[caller] >= self.per_caller:
                raise ResourceExhausted(f"{caller} has {self._open[caller]} streams open (watch, logs -f); at most "
                                        f"{self.per_caller} (policy spec.limits.streams_per_caller): close one")
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
