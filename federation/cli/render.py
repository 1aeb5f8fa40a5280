"""Plain-text tables and JSON for fedctl output."""
from __future__ import annotations

import io
import json
import re
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

# C0 controls but tab, newline and carriage return (escaped unless it ends a line, as in CSV),
# DEL and C1 controls: what could drive a terminal
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if chr(c) not in "\t\n\r"}
_LONE_CR = re.compile(r"\r(?!\n)")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO | None = None) -> None:
    """Columns as wide as their widest cell; on a terminal narrower than that, the widest columns
    are cut (with an ellipsis) until the table fits. `--format json` always has the whole text."""
    out = out or sys.stdout  # looked up on each call: callers may redirect it
    cells = [[str(c) for c in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = shrink([max(len(r[i]) for r in cells) for i in range(len(headers))], terminal_width(out))
    for r in cells:
        out.write("  ".join(fit(c, w).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")


def terminal_width(out: TextIO) -> int:
    """The terminal's columns when `out` is one; 0 (no limit) for a file or a pipe."""
    return shutil.get_terminal_size((120, 24)).columns if out.isatty() else 0


def shrink(widths: list[int], columns: int, least: int = 8) -> list[int]:
    """Column widths (two spaces apart) cut, widest first, to fit `columns` (0: no limit)."""
    widths = list(widths)
    while columns and sum(widths) + 2 * (len(widths) - 1) > columns:
        widest = max(range(len(widths)), key=lambda i: widths[i])
        if widths[widest] <= least:
            break
        widths[widest] -= 1
    return widths


def fit(text: str, columns: int) -> str:
    """`text` in `columns` characters at most (0: as it is), cut with an ellipsis."""
    return text if not columns or len(text) <= columns else text[:max(0, columns - 1)] + "…"


def emit_json(obj: Any, out: TextIO | None = None) -> None:
    (out or sys.stdout).write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def ago(ts: float) -> str:
    if not ts:
        return "-"
    s = max(0, time.time() - ts)
    if s < 60:
        return f"{s:.0f}s ago"
    if s < 3600:
        return f"{s / 60:.0f}m ago"
    return f"{s / 3600:.1f}h ago"


def when(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts else "-"


def gib(n: float) -> str:
    return f"{n / 2**30:.3g}Gi"


def escape(text: str) -> str:
    """Control characters shown as escapes (`\\x1b`): names, messages and logs come from jobs and
    sites, and none of them may move the cursor, retitle or clear the operator's terminal."""
    return _LONE_CR.sub(r"\\x0d", text.translate(_CONTROLS))


class Escaped(io.TextIOBase):
    """A text stream that writes through `escape`."""

    def __init__(self, raw: TextIO) -> None:
        self.raw = raw

    def write(self, text: str) -> int:
        self.raw.write(escape(text))
        return len(text)

    def flush(self) -> None:
        self.raw.flush()

    def isatty(self) -> bool:
        return self.raw.isatty()


@contextmanager
def escaped_output() -> Iterator[None]:
    """stdout and stderr escaped while a command runs."""
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = Escaped(out), Escaped(err)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err
