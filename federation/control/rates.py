"""Submissions per caller, metered: a token bucket for each caller (its client certificate's name), so
one caller submitting in a loop cannot take the federation's time from the others.

A request is one token, however many jobs it makes: an array's elements and a gang's parts are
bounded by the submission's size and the tenant's waiting jobs (`spec.limits.pending_per_tenant`)
instead. The jobs a federated training submits for its rounds are the federation's own, not metered.
A refused request takes no token and stores nothing."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from federation.errors import ResourceExhausted
from federation.spec.policy import LimitsSpec

FIELD = "spec.limits.submissions_per_second"
MAX_CALLERS = 10_000   # buckets kept; past this, those full again are forgotten


class SubmissionRates:
    def __init__(self, per_second: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second, self.burst, self.clock = per_second, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}   # caller -> (tokens, when counted)
        self._lock = threading.Lock()

    @classmethod
    def of(cls, limits: LimitsSpec, clock: Callable[[], float] = time.monotonic) -> SubmissionRates:
        return cls(limits.submissions_per_second, limits.burst, clock)

    def take(self, caller: str, n: int = 1) -> None:
        """`n` submissions by `caller`; ResourceExhausted, taking nothing, when its bucket holds fewer."""
        if n > self.burst:
            raise ResourceExhausted(f"{n} submissions in one call pass {caller}'s burst of {self.burst} "
                                    f"(policy {FIELD}); send fewer at a time")
        with self._lock:
            now = self.clock()
            tokens = self._tokens(caller, now)
            if tokens < n:
                self._buckets[caller] = (tokens, now)
                wait = (n - tokens) / self.per_second
                raise ResourceExhausted(f"{caller} submits faster than its limit of {self.per_second:g} a second "
                                        f"(burst {self.burst}; policy {FIELD}); retry in {wait:.2g}s")
            if caller not in self._buckets and len(self._buckets) >= MAX_CALLERS:
                self._forget_full(now)
            self._buckets[caller] = (tokens - n, now)

    def _tokens(self, caller: str, now: float) -> float:
        tokens, at = self._buckets.get(caller, (float(self.burst), now))
        return min(float(self.burst), tokens + max(0.0, now - at) * self.per_second)

    def _forget_full(self, now: float) -> None:
        for caller in [c for c in self._buckets if self._tokens(c, now) >= self.burst]:
            del self._buckets[caller]
