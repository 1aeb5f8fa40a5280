"""Live progress on the terminal: one status line rewritten in place while a job or a training
runs (plain lines, one per change, when the output is not a terminal), and tables cut to its width."""
from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable
from typing import Any, TextIO

from federation.cli import render

CLEAR_LINE = "\x1b[K"


class StatusLine:
    """What the federation says goes through `render.escape`: only this class moves the cursor."""

    def __init__(self, out: TextIO | None = None) -> None:
        out = out or sys.stderr   # stdout keeps the ids and results a script reads
        self.raw: TextIO = getattr(out, "raw", out)   # past render.Escaped: the escaping is done here
        self.tty = self.raw.isatty()
        self.last = ""

    def show(self, text: str) -> None:
        text = render.escape(text).replace("\n", " ")
        if text == self.last:
            return
        self.last = text
        if self.tty:
            self.raw.write("\r" + render.fit(text, render.terminal_width(self.raw) - 1) + CLEAR_LINE)
        else:
            self.raw.write(text + "\n")
        self.raw.flush()

    def end(self) -> None:
        if self.tty and self.last:
            self.raw.write("\n")
            self.raw.flush()


def job_line(status: Any) -> str:
    """pending and why → placed at SITE → running at SITE → how it ended."""
    attempt = status.attempts[-1] if status.attempts else None
    where = f" at {status.site}" if status.site else ""
    again = f" (attempt {attempt.number})" if attempt is not None and attempt.number > 1 else ""
    if status.state == "pending":
        return f"{status.id}: pending{again}" + (f": {status.message}" if status.message else "")
    if status.state in ("placed", "running"):
        return f"{status.id}: {status.state}{where}{again}"
    return f"{status.id}: {status.state}{where}" + (f": {status.message}" if status.message else "")


def array_line(statuses: Iterable[Any]) -> str:
    counts = Counter(s.state for s in statuses)
    order = ("pending", "placed", "running", "succeeded", "failed", "cancelled")
    return ", ".join(f"{counts[s]} {s}" for s in order if counts[s])


def training_line(t: Any) -> str:
    current = t.history[-1] if t.history else None
    parts = [f"{t.id}: {t.state}, round {t.round} of {t.rounds}"]
    if current is not None:
        parts.append(f"{current.state} with {len(current.participants)} sites")
    done = [r for r in t.history if r.state == "done"]
    if done:
        m = done[-1].metrics
        parts += [f"{k} {m[k]:.4g}" for k in ("loss", "accuracy") if isinstance(m.get(k), (int, float))]
    return "; ".join(parts)
