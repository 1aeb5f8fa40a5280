"""Kubernetes-style quantities: `4Gi`, `512Mi`, `2G`, `1500000` (bytes); durations: `90s`, `12h`, `7d`."""
from __future__ import annotations

import math
import re

_UNITS = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}
MAX_BYTES = 2**63 - 1      # what a store or a protobuf int64 holds; far above any machine
MAX_SECONDS = 100 * 365 * 86400.0
_PATTERN = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(Ki|Mi|Gi|Ti|k|M|G|T|)\s*$")


def parse_bytes(value: object) -> int:
    """Bytes from an int or a quantity string; raises ValueError with a hint."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 4Gi, not a boolean")
    size: float | int | None = None
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("size must not be negative")
        size = value
    elif isinstance(value, str) and (m := _PATTERN.match(value)):
        size = float(m.group(1)) * _UNITS[m.group(2)]
    if size is None:
        raise ValueError(f"{value!r} is not a size; use bytes or a quantity such as 512Mi, 4Gi, 2G")
    if isinstance(size, float) and not math.isfinite(size):
        raise ValueError(f"{str(value)[:40]!r} is not a finite size")
    if size > MAX_BYTES:
        raise ValueError(f"{str(value)[:40]!r} is larger than any size a site holds (at most {MAX_BYTES} bytes)")
    return int(size)


def format_bytes(n: int | float) -> str:
    for unit, size in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if n >= size:
            return f"{n / size:.4g}{unit}"
    return str(int(n))


_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(s|m|h|d|w|)\s*$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(value: object) -> float:
    """Seconds from a number or a duration string such as 90s, 30m, 12h, 7d, 2w."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 12h, not a boolean")
    seconds: float | int | None = None
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("duration must not be negative")
        seconds = value
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _SECONDS[m.group(2)]
    if seconds is None:
        raise ValueError(f"{value!r} is not a duration; use seconds or a value such as 90s, 30m, 12h, 7d")
    if isinstance(seconds, float) and not math.isfinite(seconds):
        raise ValueError(f"{str(value)[:40]!r} is not a finite duration")
    if seconds > MAX_SECONDS:
        raise ValueError(f"{str(value)[:40]!r} is longer than any duration allowed here (at most 100 years)")
    return float(seconds)
