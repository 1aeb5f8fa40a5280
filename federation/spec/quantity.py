"""Kubernetes-style quantities: `4Gi`, `512Mi`, `2G`, `1500000` (bytes); durations: `90s`, `12h`, `7d`."""
from __future__ import annotations

import re

_UNITS = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}
_PATTERN = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(Ki|Mi|Gi|Ti|k|M|G|T|)\s*$")


def parse_bytes(value: object) -> int:
    """Bytes from an int or a quantity string; raises ValueError with a hint."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 4Gi, not a boolean")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("size must not be negative")
        return int(value)
    if isinstance(value, str):
        m = _PATTERN.match(value)
        if m:
            return int(float(m.group(1)) * _UNITS[m.group(2)])
    raise ValueError(f"{value!r} is not a size; use bytes or a quantity such as 512Mi, 4Gi, 2G")


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
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("duration must not be negative")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _SECONDS[m.group(2)]
    raise ValueError(f"{value!r} is not a duration; use seconds or a value such as 90s, 30m, 12h, 7d")
