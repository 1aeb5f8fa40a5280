"""Rows to domain records and back, and the cache of parsed job specs."""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections import OrderedDict

from federation.gpus import binding_from_json, inventory_from_json
from federation.jobs import Attempt, AttemptState, Explanation, Job, JobState
from federation.pricing import elastic_from_json, pricing_from_json
from federation.sites import Capacity, DatasetRecord, SiteRecord, SiteState
from federation.spec import FederatedTrainingSpec, JobSpec
from training.model import Round, RoundState, Training, TrainingState


class SpecCache:
    """Parsed job specs by their stored text. A stored spec never changes, parsing one is most of
    the cost of reading a job (which the scheduler and every site's stream do many times), and the
    jobs of a sweep or a load share one text, so they share one (frozen) parsed spec."""

    def __init__(self, size: int = 50_000) -> None:
        self._size = size
        self._specs: OrderedDict[bytes, JobSpec] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, text: str) -> JobSpec:
        key = hashlib.blake2b(text.encode(), digest_size=16).digest()
        with self._lock:
            spec = self._specs.get(key)
            if spec is not None:
                self._specs.move_to_end(key)
                return spec
        spec = JobSpec.model_validate_json(text)
        with self._lock:
            self._specs[key] = spec
            if len(self._specs) > self._size:
                self._specs.popitem(last=False)
        return spec


def job_from_row(row: sqlite3.Row, attempts: list[Attempt], specs: SpecCache) -> Job:
    explanation = None
    if row["explanation"]:
        e = json.loads(row["explanation"])
        explanation = Explanation(e["summary"], e["evaluated_at"], tuple(tuple(v) for v in e["verdicts"]))
    return Job(
        id=row["id"], spec=specs.get(row["spec"]), state=JobState(row["state"]),
        site=row["site"], message=row["message"], created_at=row["created_at"], updated_at=row["updated_at"],
        attempts=tuple(attempts), vetoed_by=frozenset(json.loads(row["vetoed_by"])), explanation=explanation,
        queue=row["queue"], array_id=row["array_id"], array_index=row["array_index"], gang_id=row["gang_id"],
        not_before=row["not_before"], submitter=row["submitter"])


def explanation_json(e: Explanation | None) -> str | None:
    if e is None:
        return None
    return json.dumps({"summary": e.summary, "evaluated_at": e.evaluated_at, "verdicts": [list(v) for v in e.verdicts]})


def attempt_from_row(r: sqlite3.Row) -> Attempt:
    return Attempt(job_id=r["job_id"], number=r["number"], site=r["site"], state=AttemptState(r["state"]),
                   message=r["message"], created_at=r["created_at"], started_at=r["started_at"],
                   ended_at=r["ended_at"], binding=binding_from_json(r["binding"]), gpu_model=r["gpu_model"],
                   node_type=r["node_type"], price=r["price"],
                   stop_requested_at=r["stop_requested_at"], stop_reason=r["stop_reason"])


def site_from_row(r: sqlite3.Row) -> SiteRecord:
    return SiteRecord(
        name=r["name"], jurisdiction=r["jurisdiction"], region=r["region"], labels=json.loads(r["labels"]),
        datasets=tuple(DatasetRecord(**d) for d in json.loads(r["datasets"])),
        capacity=Capacity(r["cpus"], r["memory"], r["gpus"]), state=SiteState(r["state"]),
        registered_at=r["registered_at"], last_heartbeat=r["last_heartbeat"],
        inventory=inventory_from_json(r["inventory"]), autonomous=bool(r["autonomous"]),
        agreement_key=r["agreement_key"], agreement_proof=r["agreement_proof"], pricing=pricing_from_json(r["pricing"]),
        elastic=elastic_from_json(r["elastic"]))


def training_from_row(r: sqlite3.Row) -> Training:
    return Training(r["id"], r["tenant"], r["actor"], FederatedTrainingSpec.model_validate_json(r["spec"]),
                    TrainingState(r["state"]), r["round"], r["model_job"], r["message"], r["created_at"],
                    r["updated_at"])


def round_from_row(r: sqlite3.Row) -> Round:
    return Round(r["training_id"], r["number"], r["attempt"], RoundState(r["state"]),
                 tuple(json.loads(r["participants"])), r["aggregator"], json.loads(r["steps"]),
                 r["aggregate_job"], json.loads(r["reveals"]), tuple(json.loads(r["reported"])),
                 tuple(json.loads(r["lost"])), r["bytes_moved"], json.loads(r["metrics"]), r["started_at"],
                 r["ended_at"], json.loads(r["keys"]))
