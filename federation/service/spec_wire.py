"""The user's specs on the wire: one JSON document, written and read by the pydantic models.

Pydantic is the spec's one source of truth, so nothing here mirrors its fields, and every
value arrives as the user wrote it (an integer stays an integer). Light on purpose: the
SDK imports it, so it knows nothing of the scheduler or training.
"""
from __future__ import annotations

import json
from typing import Any

from federation.errors import InvalidSpec
from federation.spec import FederatedTrainingSpec, JobSpec, job_from_dict, training_from_dict
from federation.v1 import federation_pb2 as pb

SOURCE = "request"  # where a spec's errors say it came from


def spec_to_pb(spec: JobSpec) -> pb.JobSpec:
    return pb.JobSpec(json=spec.model_dump_json())


def spec_from_pb(msg: pb.JobSpec) -> JobSpec:
    """Validates like a YAML file would; raises InvalidSpec naming the field."""
    return job_from_dict(spec_document(msg), source=SOURCE)


def training_spec_to_pb(spec: FederatedTrainingSpec) -> pb.TrainingSpec:
    return pb.TrainingSpec(json=spec.model_dump_json())


def training_spec_from_pb(msg: pb.TrainingSpec) -> FederatedTrainingSpec:
    """Validates like a YAML file would; raises InvalidSpec naming the field."""
    return training_from_dict(spec_document(msg), source=SOURCE)


def spec_document(msg: pb.JobSpec | pb.TrainingSpec) -> Any:
    """The spec document as sent, parsed but not validated; {} when none was sent."""
    if not msg.json:
        return {}
    try:
        return json.loads(msg.json)
    except (ValueError, RecursionError) as e:
        raise InvalidSpec(f"{SOURCE}: the spec is not a JSON document: {e}") from None
