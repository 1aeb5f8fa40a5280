"""What the SDK returns: plain frozen records read from the federation's answers."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format

from federation.service.spec_wire import spec_document
from federation.v1 import federation_pb2 as pb


@dataclass(frozen=True)
class AttemptInfo:
    number: int
    site: str
    state: str
    message: str
    submission_id: str
    binding: tuple[dict[str, Any], ...] = ()   # reserved GPUs: {"node", "gpus", "milli"} per node

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__, binding=list(self.binding))


@dataclass(frozen=True)
class JobStatus:
    id: str
    name: str
    tenant: str
    state: str
    site: str
    message: str
    created_at: float
    updated_at: float
    attempts: tuple[AttemptInfo, ...] = ()
    queue: str = ""
    array_id: str = ""          # set on an element of a job array
    array_index: int = 0
    gang_id: str = ""           # set on a part of a gang
    submitter: str = ""         # the identity that submitted it

    @property
    def terminal(self) -> bool:
        return self.state in ("succeeded", "failed", "cancelled")

    def to_dict(self) -> dict[str, Any]:
        out = {"id": self.id, "name": self.name, "tenant": self.tenant, "state": self.state, "queue": self.queue,
               "site": self.site or None, "message": self.message, "created_at": self.created_at,
               "updated_at": self.updated_at,
               "attempts": [a.to_dict() for a in self.attempts]}
        if self.array_id:
            out.update(array_id=self.array_id, array_index=self.array_index)
        if self.gang_id:
            out["gang_id"] = self.gang_id
        if self.submitter:
            out["submitter"] = self.submitter
        return out


@dataclass(frozen=True)
class QueueEntry:
    """A pending job's place in the scheduling order, and what puts it there."""

    position: int
    job: JobStatus
    priority: str
    tier: int        # its queue's tier: 0 below its deserved share, 1 over it, 2 over without weight; -1 held
    share: float     # tier 0: use / deserved; else share of the federation / over-quota weight
    held: str        # what holds it back beyond capacity, if anything
    reserved_site: str = ""    # backfill: where the last cycle reserved it a start
    reserved_at: float = 0.0   # and from when (seconds since the epoch); 0: not reserved

    def to_dict(self) -> dict[str, Any]:
        return {"position": self.position, "id": self.job.id, "name": self.job.name, "tenant": self.job.tenant,
                "queue": self.job.queue, "priority": self.priority, "tier": self.tier, "share": self.share,
                "held": self.held or None, "submitted_at": self.job.created_at,
                "reserved": {"site": self.reserved_site, "at": self.reserved_at} if self.reserved_at else None}


@dataclass(frozen=True)
class QueueInfo:
    name: str
    parent: str
    deserved: dict[str, float]
    limit: dict[str, float]
    over_quota_weight: float
    running: dict[str, float]
    history: dict[str, float]
    tier: int
    share: float
    pending: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class SiteVerdict:
    site: str
    eligible: bool
    reason_code: str
    reason: str


@dataclass(frozen=True)
class Placement:
    """Where a job runs and why, or why it waits."""

    site: str | None
    state: str
    summary: str
    verdicts: tuple[SiteVerdict, ...] = ()
    execution: str = ""   # how its attempts start at a site, and why (federation.spec.execution)

    def to_dict(self) -> dict[str, Any]:
        return {"site": self.site, "state": self.state, "summary": self.summary, "execution": self.execution,
                "verdicts": [v.__dict__ for v in self.verdicts]}


@dataclass(frozen=True)
class SiteInfo:
    name: str
    jurisdiction: str
    region: str
    state: str
    connected: bool
    labels: dict[str, str] = field(default_factory=dict)
    datasets: tuple[dict[str, str], ...] = ()
    capacity: dict[str, float] = field(default_factory=dict)
    allocated: dict[str, float] = field(default_factory=dict)
    running_attempts: int = 0
    last_heartbeat: float = 0.0
    gpu_nodes: tuple[dict[str, Any], ...] = ()   # {"name", "model", "memory", "gpus", "nvlink_domains", rack, block}
    pricing: dict[str, Any] = field(default_factory=dict)   # {} : priced at zero
    # An elastic site's node types: {"name", "cpus", "memory", "gpus", "gpu_model", "spot", "min", "max", "up",
    # "start_s", "price_hour"}, and how long an idle one is kept.
    node_types: tuple[dict[str, Any], ...] = ()
    idle_timeout_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__, datasets=list(self.datasets), gpu_nodes=list(self.gpu_nodes),
                    node_types=list(self.node_types))


@dataclass(frozen=True)
class RoundInfo:
    number: int
    attempt: int
    state: str
    participants: tuple[str, ...]
    aggregator: str
    reported: tuple[str, ...]
    lost: tuple[str, ...]
    bytes_moved: int
    metrics: dict[str, Any]
    started_at: float
    ended_at: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class TrainingStatus:
    id: str
    name: str
    tenant: str
    state: str
    round: int
    rounds: int
    message: str
    history: tuple[RoundInfo, ...] = ()

    @property
    def terminal(self) -> bool:
        return self.state != "running"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__, history=[r.to_dict() for r in self.history])


def _state_names(enum: str) -> dict[int, str]:
    """A protobuf state enum as the domain spells it: JOB_STATE_PENDING -> 'pending' (the domain's enums
    are named alike). Each starts at *_UNSPECIFIED = 0, which gives its prefix."""
    values = pb.DESCRIPTOR.enum_types_by_name[enum].values
    prefix = values[0].name.removesuffix("UNSPECIFIED")
    return {v.number: v.name.removeprefix(prefix).lower() for v in values}


JOB_STATES = _state_names("JobState")
ATTEMPT_STATES = _state_names("AttemptState")
SITE_STATES = _state_names("SiteState")
TRAINING_STATES = _state_names("TrainingState")
ROUND_STATES = _state_names("RoundState")


def job_status(job: pb.Job) -> JobStatus:
    meta = spec_document(job.spec).get("metadata", {})
    return JobStatus(
        id=job.id, name=meta.get("name", ""), tenant=meta.get("tenant", ""),
        state=JOB_STATES[job.state], site=job.site, message=job.message, created_at=job.created_at,
        updated_at=job.updated_at, queue=job.queue, array_id=job.array_id, array_index=job.array_index,
        gang_id=job.gang_id, submitter=job.submitter,
        attempts=tuple(AttemptInfo(a.number, a.site, ATTEMPT_STATES[a.state], a.message,
                                   a.submission_id,
                                   tuple({"node": b.node, "gpus": list(b.gpus), "milli": b.milli} for b in a.binding))
                       for a in job.attempts))


def queue_entry(e: pb.QueueEntry) -> QueueEntry:
    priority = spec_document(e.job.spec).get("spec", {}).get("priority") or "normal"
    return QueueEntry(e.position, job_status(e.job), priority, e.tier, e.share, e.held, e.reserved_site, e.reserved_at)


def queue_info(q: pb.QueueStatus) -> QueueInfo:
    return QueueInfo(q.name, q.parent, dict(q.deserved), dict(q.limit), q.over_quota_weight, dict(q.running),
                     dict(q.history), q.tier, q.share, q.pending)


def placement(r: pb.ExplainJobResponse) -> Placement:
    return Placement(site=r.job.site or None, state=JOB_STATES[r.job.state], summary=r.summary,
                     verdicts=tuple(SiteVerdict(v.site, v.eligible, v.reason_code, v.reason) for v in r.verdicts),
                     execution=r.execution)


def _resources(r: pb.Resources) -> dict[str, float]:
    return {"cpus": r.cpus, "memory": r.memory_bytes, "gpus": r.gpus}


def site_info(s: pb.Site) -> SiteInfo:
    return SiteInfo(
        name=s.name, jurisdiction=s.location.jurisdiction, region=s.location.region,
        state=SITE_STATES[s.state], connected=s.connected, labels=dict(s.labels),
        datasets=tuple({"name": d.name, "classification": d.classification} for d in s.datasets),
        capacity=_resources(s.capacity), allocated=_resources(s.allocated), running_attempts=s.running_attempts,
        last_heartbeat=s.last_heartbeat,
        gpu_nodes=tuple({"name": n.name, "model": n.model, "memory": n.memory_bytes, "gpus": len(n.domains),
                         "nvlink_domains": len({d for d in n.domains if d}), "rack": n.rack, "block": n.block}
                        for n in s.inventory.nodes),
        pricing=_pricing(s.pricing) if s.HasField("pricing") else {},
        node_types=tuple(_node_type(t, s) for t in s.elastic.node_types),
        idle_timeout_s=s.elastic.idle_timeout_s)


def _pricing(p: pb.Pricing) -> dict[str, Any]:
    def rates(r: pb.Rates) -> dict[str, Any]:
        return {"cpu_hour": r.cpu_hour, "memory_gib_hour": r.memory_gib_hour, "gpu_hour": dict(r.gpu_hour)}
    return {"currency": p.currency, **rates(p.on_demand), "spot": rates(p.spot) if p.HasField("spot") else None,
            "egress_gb": p.egress_gb}


def _node_type(t: pb.NodeType, s: pb.Site) -> dict[str, Any]:
    """A node type as `site show` lists it, with what one node of it costs an hour."""
    r = s.pricing.spot if t.spot else s.pricing.on_demand
    price = (r.cpu_hour * t.cpus + r.memory_gib_hour * t.memory_bytes / 2**30
             + r.gpu_hour.get(t.gpu_model, 0.0) * t.gpu_count)
    return {"name": t.name, "cpus": t.cpus, "memory": t.memory_bytes, "gpus": t.gpu_count, "gpu_model": t.gpu_model,
            "spot": t.spot, "min": t.min, "max": t.max, "up": s.elastic.up.get(t.name, 0), "start_s": t.start_s,
            "price_hour": price}


def training_status(t: pb.Training) -> TrainingStatus:
    history = tuple(RoundInfo(r.number, r.attempt, ROUND_STATES[r.state], tuple(r.participants),
                              r.aggregator, tuple(r.reported), tuple(r.lost), r.bytes_moved,
                              json_format.MessageToDict(r.metrics), r.started_at, r.ended_at) for r in t.rounds)
    doc = spec_document(t.spec)
    meta = doc.get("metadata", {})
    return TrainingStatus(t.id, meta.get("name", ""), meta.get("tenant", ""), TRAINING_STATES[t.state],
                          t.round, doc.get("spec", {}).get("rounds", 0), t.message, history)


def privacy_use(p: pb.PrivacyUsage) -> dict[str, Any]:
    return {"dataset": p.dataset, "budget_epsilon": p.budget_epsilon, "budget_delta": p.budget_delta,
            "spent_epsilon": p.spent_epsilon, "held_epsilon": p.held_epsilon, "trainings": p.trainings}
