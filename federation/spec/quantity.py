"""Kubernetes-style quantities: `4Gi`, `512Mi`, `2G`, `1500000` (bytes); durations: `90s`, `12h`, `7d`."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

_UNITS = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}
MAX_BYTES = 2**63 - 1      # what a store or a protobuf int64 holds; far above any machine
MAX_SECONDS = 100 * 365 * 86400.0
_PATTERN = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(Ki|Mi|Gi|Ti|k|M|G|T|)\s*$")


def parse_bytes(value: object) -> int:
    """Bytes from an int or a quantity string; raises ValueError with a hint."""
    return int(_parse(value, _SIZE))


def format_bytes(n: int | float) -> str:
    for unit, size in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if n >= size:
            return f"{n / size:.4g}{unit}"
    return str(int(n))


_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(s|m|h|d|w|)\s*$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(value: object) -> float:
    """Seconds from a number or a duration string such as 90s, 30m, 12h, 7d, 2w."""
    return float(_parse(value, _TIME))


@dataclass(frozen=True)
class _Kind:
    noun: str
    example: str
    pattern: re.Pattern[str]
    units: dict[str, int]
    hint: str         # how to write one
    limit: float
    too_big: str


_SIZE = _Kind("size", "4Gi", _PATTERN, _UNITS, "bytes or a quantity such as 512Mi, 4Gi, 2G", MAX_BYTES,
              f"is larger than any size a site holds (at most {MAX_BYTES} bytes)")
_TIME = _Kind("duration", "12h", _DURATION, _SECONDS, "seconds or a value such as 90s, 30m, 12h, 7d", MAX_SECONDS,
              "is longer than any duration allowed here (at most 100 years)")


def _parse(value: object, kind: _Kind) -> float | int:
    if isinstance(value, bool):
        raise ValueError(f"expected a {kind.noun} such as {kind.example}, not a boolean")
    number: float | int | None = None
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"{kind.noun} must not be negative")
        number = value
    elif isinstance(value, str) and (m := kind.pattern.match(value)):
        number = float(m.group(1)) * kind.units[m.group(2)]
    if number is None:
        raise ValueError(f"{value!r} is not a {kind.noun}; use {kind.hint}")
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError(f"{str(value)[:40]!r} is not a finite {kind.noun}")
    if number > kind.limit:   # an int is compared as it is: float() of a huge one overflows
        raise ValueError(f"{str(value)[:40]!r} {kind.too_big}")
    return number
