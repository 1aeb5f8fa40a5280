"""The user's specs on the wire: one JSON document, written and read by the pydantic models.

Pydantic is the spec's one source of truth, so nothing here mirrors its fields, and every
value arrives as the user wrote it (an integer stays an integer). Light on purpose: the
SDK imports it, so it knows nothing of the scheduler or training.
"""
from __future__ import annotations

import json
import math
from typing import Any

from federation.errors import InvalidSpec
from federation.spec import FederatedTrainingSpec, JobSpec, job_from_dict, training_from_dict
from federation.v1 import federation_pb2 as pb

SOURCE = "request"  # where a spec's errors say it came from
MAX_DEPTH = 32      # far deeper than any spec; the store's JSON reader gives up near 200
INT64 = 2**63
MAX_SPEC_BYTES = 64 << 10   # a spec as it travels and is stored: every attempt and assignment carries it


def spec_to_pb(spec: JobSpec) -> pb.JobSpec:
    return pb.JobSpec(json=spec.model_dump_json())


def spec_from_pb(msg: pb.JobSpec) -> JobSpec:
    """Validates like a YAML file would; raises InvalidSpec naming the field."""
    return job_from_dict(_received(msg), source=SOURCE)


def training_spec_to_pb(spec: FederatedTrainingSpec) -> pb.TrainingSpec:
    return pb.TrainingSpec(json=spec.model_dump_json())


def training_spec_from_pb(msg: pb.TrainingSpec) -> FederatedTrainingSpec:
    """Validates like a YAML file would; raises InvalidSpec naming the field."""
    return training_from_dict(_received(msg), source=SOURCE)


def spec_document(msg: pb.JobSpec | pb.TrainingSpec) -> Any:
    """A spec document the federation wrote (it validated it), parsed; {} when there is none."""
    return json.loads(msg.json) if msg.json else {}


def _received(msg: pb.JobSpec | pb.TrainingSpec) -> Any:
    """A spec document as a caller sent it, parsed but not validated, refusing what a stored spec
    could not hold; {} when none was sent."""
    if not msg.json:
        return {}
    if len(msg.json) > MAX_SPEC_BYTES:
        raise InvalidSpec(f"{SOURCE}: the spec is {len(msg.json) / 1024:.0f} KiB; at most {MAX_SPEC_BYTES >> 10} KiB "
                          "(large data belongs in datasets or inputs, not in a spec)")
    try:
        document = json.loads(msg.json, parse_constant=_no_constant, parse_float=_finite)
    except (ValueError, RecursionError) as e:
        raise InvalidSpec(f"{SOURCE}: the spec is not a JSON document: {e}") from None
    _check_values(document)
    return document


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number a spec may hold")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is out of range")
    return value


def _check_values(document: Any) -> None:
    """Refuse what JSON can say but a stored spec cannot hold: nesting deeper than MAX_DEPTH and
    integers beyond 64 bits, naming where."""
    found = _problem(document, 0)
    if found is not None:
        keys, what = found
        path = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in reversed(keys)).lstrip(".")
        raise InvalidSpec(f"{SOURCE}: {path}: {what}")


def _problem(value: Any, depth: int) -> tuple[list[str | int], str] | None:
    """What is wrong and where (the keys, innermost first), or None; paths are built only on failure."""
    if depth > MAX_DEPTH:
        return [], f"nested more than {MAX_DEPTH} levels deep"
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    elif type(value) is int and not -INT64 <= value < INT64:
        return [], f"{str(value)[:32]}... does not fit in 64 bits"
    else:
        return None
    for key, item in items:
        found = _problem(item, depth + 1)
        if found is not None:
            found[0].append(key)
            return found
    return None
