"""Job array ranges as Slurm writes them: `0-99`, `1,3,5-7`, `0-15:4`, with `%N` for at most N at once."""
from __future__ import annotations

import re
from dataclasses import dataclass

MAX_ELEMENTS = 10_000
_PART = re.compile(r"^(\d{1,6})(?:-(\d{1,6})(?::(\d{1,6}))?)?$")


@dataclass(frozen=True)
class ArrayRange:
    indices: tuple[int, ...]
    throttle: int | None = None   # at most this many placed or running at once


def parse_array(text: str) -> ArrayRange:
    """Raises ValueError saying what is wrong with `text`."""
    body, percent, throttle = text.strip().partition("%")
    if percent and not (throttle.isdigit() and int(throttle) >= 1):
        raise ValueError(f"array {text!r}: after % comes how many may run at once, a whole number of 1 or more")
    indices: set[int] = set()
    for part in body.split(","):
        m = _PART.match(part.strip())
        if not m:
            raise ValueError(f"array {text!r}: {part.strip()!r} is not an index, a range a-b, or a range a-b:step")
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) is not None else first
        step = int(m.group(3)) if m.group(3) is not None else 1
        if last < first or step < 1:
            raise ValueError(f"array {text!r}: in {part.strip()!r} the range must go up by a step of 1 or more")
        if (last - first) // step + 1 + len(indices) > MAX_ELEMENTS:
            raise ValueError(f"array {text!r}: more than {MAX_ELEMENTS} elements")
        indices.update(range(first, last + 1, step))
    return ArrayRange(tuple(sorted(indices)), int(throttle) if throttle else None)
