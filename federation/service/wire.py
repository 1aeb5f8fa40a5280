"""Federation records (jobs, sites, GPU inventory, trainings) <-> protobuf.

For the servicers and the site agent: it knows the scheduler's topology types and training's
records. The user's specs travel through the light spec_wire, which the SDK uses too.
"""
from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import Any

from google.protobuf import struct_pb2

from federation.errors import InvalidSpec
from federation.gpus import check_inventory, digest
from federation.jobs import Attempt, AttemptState, Job, JobState
from federation.pricing import elastic_from_pb, elastic_to_pb, pricing_from_pb, pricing_of, pricing_to_pb
from federation.service.spec_wire import spec_to_pb, training_spec_to_pb
from federation.sites import Capacity, DatasetRecord, SiteRecord, SiteState
from federation.v1 import federation_pb2 as pb
from policies.gpus import Binding, GpuNode, Inventory, Slot
from training.bonawitz import check_key
from training.model import Round, RoundState, Training, TrainingState
from training.signing import Refused

JOB_STATE_TO_PB = {s: getattr(pb, f"JOB_STATE_{s.name}") for s in JobState}
JOB_STATE_FROM_PB = {v: k for k, v in JOB_STATE_TO_PB.items()}
ATTEMPT_STATE_TO_PB = {s: getattr(pb, f"ATTEMPT_STATE_{s.name}") for s in AttemptState}
ATTEMPT_STATE_FROM_PB = {v: k for k, v in ATTEMPT_STATE_TO_PB.items()}
SITE_STATE_TO_PB = {s: getattr(pb, f"SITE_STATE_{s.name}") for s in SiteState}
SITE_STATE_FROM_PB = {v: k for k, v in SITE_STATE_TO_PB.items()}
TRAINING_STATE_TO_PB = {s: getattr(pb, f"TRAINING_STATE_{s.name}") for s in TrainingState}
TRAINING_STATE_FROM_PB = {v: k for k, v in TRAINING_STATE_TO_PB.items()}
ROUND_STATE_TO_PB = {s: getattr(pb, f"ROUND_STATE_{s.name}") for s in RoundState}
ROUND_STATE_FROM_PB = {v: k for k, v in ROUND_STATE_TO_PB.items()}


def attempt_to_pb(a: Attempt) -> pb.Attempt:
    return pb.Attempt(number=a.number, site=a.site, state=ATTEMPT_STATE_TO_PB[a.state],
                      submission_id=a.submission_id, message=a.message, created_at=a.created_at,
                      started_at=a.started_at, ended_at=a.ended_at, binding=binding_to_pb(a.binding))


def job_to_pb(job: Job, *, brief: bool = False) -> pb.Job:
    """`brief`: the spec's name and tenant only, for answers that list many jobs (a submitted array
    of 10,000 elements, each with a 64 KiB spec, must not outgrow a message)."""
    spec = pb.JobSpec(json=json.dumps({"metadata": {"name": job.spec.metadata.name, "tenant": job.tenant}})) \
        if brief else spec_to_pb(job.spec)
    return pb.Job(id=job.id, spec=spec, state=JOB_STATE_TO_PB[job.state], site=job.site,
                  message=job.message, created_at=job.created_at, updated_at=job.updated_at,
                  attempts=[attempt_to_pb(a) for a in job.attempts], queue=job.queue, array_id=job.array_id,
                  array_index=job.array_index, gang_id=job.gang_id, submitter=job.submitter)


def capacity_to_pb(c: Capacity) -> pb.Resources:
    return pb.Resources(cpus=c.cpus, memory_bytes=c.memory, gpus=c.gpus)


def capacity_from_pb(r: pb.Resources) -> Capacity:
    return Capacity(cpus=r.cpus, memory=r.memory_bytes, gpus=r.gpus)


def site_to_pb(site: SiteRecord, *, connected: bool, allocated: Capacity, running: int, lost: bool = False) -> pb.Site:
    return pb.Site(
        name=site.name, location=pb.Location(jurisdiction=site.jurisdiction, region=site.region),
        labels=site.labels,
        datasets=[pb.Dataset(name=d.name, classification=d.classification) for d in site.datasets],  # no paths
        state=SITE_STATE_TO_PB[site.state], connected=connected, capacity=capacity_to_pb(site.capacity),
        allocated=capacity_to_pb(allocated), running_attempts=running, last_heartbeat=site.last_heartbeat,
        inventory=inventory_to_pb(site.inventory), autonomous=site.autonomous, lost=lost,
        pricing=pricing_to_pb(site.pricing) if site.pricing else None,
        elastic=elastic_to_pb(site.elastic) if site.elastic else None)


def site_from_register(req: pb.RegisterSiteRequest) -> SiteRecord:
    priced = pricing_from_pb(req.pricing, "pricing") if req.HasField("pricing") else None
    return SiteRecord(
        name=req.name, jurisdiction=req.location.jurisdiction, region=req.location.region,
        labels=dict(req.labels),
        datasets=tuple(DatasetRecord(d.name, d.classification, d.path, d.size_bytes) for d in req.datasets),
        capacity=capacity_from_pb(req.capacity), inventory=inventory_from_pb(req.inventory, "inventory"),
        autonomous=req.autonomous, agreement_key=agreement_key(req.agreement_key),
        agreement_proof=agreement_proof(req.agreement_proof, req.name, req.agreement_key),
        pricing=pricing_of(priced) if priced else None,
        elastic=elastic_from_pb(req.elastic, priced, "elastic") if req.HasField("elastic") else None)


def agreement_key(key: bytes) -> str:
    """A site's public key for secure aggregation (none: it takes no part), refused when zero or of
    low order: every secret agreed with such a key is known to all, so one site could make every
    secure round fail or be read."""
    if not key:
        return ""
    try:
        return check_key(key, "agreement_key").hex()
    except Refused as e:
        raise InvalidSpec(str(e)) from None


def agreement_proof(proof: str, site: str, key: bytes) -> str:
    """The site's signed statement of its agreement key, kept for its peers to check (they verify
    the signature; here only that it states this site and this key)."""
    if not proof:
        return ""
    try:
        body = json.loads(proof)["body"] if len(proof) <= 8192 else None
    except (ValueError, TypeError, KeyError):
        body = None
    if not isinstance(body, dict) or body.get("site") != site or body.get("agreement_key") != key.hex():
        raise InvalidSpec("agreement_proof: not a statement of this site's agreement key")
    return proof


def inventory_to_pb(inv: Inventory) -> pb.Inventory:
    return pb.Inventory(nodes=[pb.GpuNode(name=n.name, model=n.model, memory_bytes=n.memory, domains=n.domains,
                                          rack=n.rack, block=n.block, spot=n.spot) for n in inv.nodes],
                        digest=digest(inv))


def inventory_from_pb(msg: pb.Inventory, where: str) -> Inventory:
    """What an agent published, bounded and checked: InvalidSpec names the node."""
    inv = Inventory(tuple(GpuNode(n.name, n.model, n.memory_bytes, tuple(n.domains), n.rack, n.block, n.spot)
                          for n in msg.nodes))
    return check_inventory(inv, where)


def binding_to_pb(binding: Binding) -> list[pb.GpuSlot]:
    return [pb.GpuSlot(node=s.node, gpus=s.gpus, milli=s.milli) for s in binding]


def binding_from_pb(slots: Iterable[pb.GpuSlot]) -> Binding:
    return tuple(Slot(s.node, tuple(s.gpus), s.milli) for s in slots)


def _struct(d: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(d)
    return out


def round_to_pb(r: Round) -> pb.TrainingRound:
    return pb.TrainingRound(number=r.number, attempt=r.attempt, state=ROUND_STATE_TO_PB[r.state],
                            participants=r.participants, aggregator=r.aggregator, reported=r.reported, lost=r.lost,
                            bytes_moved=r.bytes_moved, metrics=_struct(r.metrics), started_at=r.started_at,
                            ended_at=r.ended_at)


def training_to_pb(t: Training, rounds: Iterable[Round] = ()) -> pb.Training:
    return pb.Training(id=t.id, spec=training_spec_to_pb(t.spec), state=TRAINING_STATE_TO_PB[t.state], round=t.round,
                       message=t.message, created_at=t.created_at, updated_at=t.updated_at,
                       rounds=[round_to_pb(r) for r in rounds])


def page_token(last: Job) -> str:
    """Where the next page of jobs starts: after `last` (newest first)."""
    return base64.urlsafe_b64encode(json.dumps([last.created_at, last.id]).encode()).decode()


def page_after(token: str) -> tuple[float, str] | None:
    if not token:
        return None
    try:
        at, job_id = json.loads(base64.urlsafe_b64decode(token.encode()))
        if isinstance(at, (int, float)) and not isinstance(at, bool) and isinstance(job_id, str):
            return float(at), job_id
    except (ValueError, TypeError):
        pass
    raise InvalidSpec("page_token: not a token a listing returned")
