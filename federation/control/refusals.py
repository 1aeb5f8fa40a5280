"""Refusals counted, not logged one by one: refused calls, bad enrolment tokens, stale site reports.

Anyone who reaches a listener can make the federation refuse something, so one signed audit
record per refusal would let them grow the log without bound. Refusals are keyed by (actor,
action, kind), where kind is a short, bounded description (a method and why, never the caller's
input). The first refusal of a quiet key is written at once, with its detail; the rest are
counted, and when the window ends one record per key carries the count (`count`, `first_at`,
`last_at`, a few sample subjects and reasons). A key with nothing counted in a window goes quiet
again. At most `max_keys` keys are kept apart a window; refusals of further keys are folded into
one record per action whose actor is `*`. Windows end when a refusal or the timer (`start`) sees
the window is over, and pending counts are written at `close`, so nothing is lost silently.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger("federation.audit")

OTHER = "*"
SAMPLES = 5
REASON_CHARS = 200


class Write(Protocol):
    def __call__(self, actor: str, action: str, subject: str, **detail: Any) -> None: ...


@dataclass
class _Counted:
    count: int = 0
    first_at: float = 0.0
    last_at: float = 0.0
    subjects: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    actors: list[str] = field(default_factory=list)

    def add(self, actor: str, subject: str, reason: str, now: float) -> None:
        if not self.count:
            self.first_at = now
        self.count += 1
        self.last_at = now
        for seen, value in ((self.subjects, subject), (self.reasons, reason[:REASON_CHARS]), (self.actors, actor)):
            if value and value not in seen and len(seen) < SAMPLES:
                seen.append(value)


class Refusals:
    def __init__(self, write: Write, clock: Callable[[], float] = time.time, *, window_s: float = 60.0,
                 max_keys: int = 64, seen: Callable[[str], None] = lambda action: None) -> None:
        self.write = write
        self.seen = seen   # told of every refusal by its action, before counting (metrics)
        self.clock = clock
        self.window_s = window_s
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._keys: dict[tuple[str, str, str], _Counted] = {}
        self._started: float | None = None
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None

    def refuse(self, actor: str, action: str, subject: str, kind: str, **detail: Any) -> None:
        """Count one refusal; written at once only when its key was quiet this window."""
        self.seen(action)
        reason = str(detail.get("reason", ""))
        with self._lock:
            now = self.clock()
            self._roll(now)
            key = (actor, action, kind)
            counted = self._keys.get(key)
            if counted is None and len(self._keys) >= self.max_keys:
                key = (OTHER, action, OTHER)
                counted = self._keys.setdefault(key, _Counted())
            if counted is not None:
                counted.add(actor, subject, reason, now)
                return
            self._keys[key] = _Counted()
            self.write(actor, action, subject, kind=kind, count=1, **detail)

    def flush_due(self) -> None:
        """Write the counts of a window that is over (the timer calls this)."""
        with self._lock:
            self._roll(self.clock())

    def flush(self) -> None:
        """Write every pending count now, whether or not its window is over."""
        with self._lock:
            self._emit()
            self._started = self.clock()

    def start(self, every_s: float = 1.0) -> None:
        self._stop.clear()
        self._timer = threading.Thread(target=self._tick, args=(every_s,), daemon=True, name="audit-refusals")
        self._timer.start()

    def close(self) -> None:
        self._stop.set()
        if self._timer is not None:
            self._timer.join(timeout=5)
            self._timer = None
        self.flush()

    def _tick(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                self.flush_due()
            except Exception:
                log.exception("writing counted refusals to the audit log")

    def _roll(self, now: float) -> None:
        if self._started is None:
            self._started = now
        elif now - self._started >= self.window_s or now < self._started:
            self._emit()
            self._started = now

    def _emit(self) -> None:
        """One record per key with refusals counted; keys with none go quiet (their next is written at once)."""
        keys, self._keys = self._keys, {}
        for (actor, action, kind), counted in keys.items():
            if not counted.count:
                continue
            if actor != OTHER:
                self._keys[(actor, action, kind)] = _Counted()   # still busy: the next window counts too
            subject = counted.subjects[0] if len(counted.subjects) == 1 else OTHER
            self.write(actor, action, subject, kind=kind, count=counted.count, window_s=self.window_s,
                       first_at=counted.first_at, last_at=counted.last_at, subjects=counted.subjects,
                       reasons=counted.reasons, **({"actors": counted.actors} if actor == OTHER else {}))
