"""Domain <-> protobuf. The only module that knows both shapes."""
from __future__ import annotations

from google.protobuf import json_format, struct_pb2

from federation.gpus import check_inventory, digest
from federation.jobs import Attempt, AttemptState, Job, JobState
from federation.sites import Capacity, DatasetRecord, SiteRecord, SiteState
from federation.spec import (
    FederatedTrainingSpec,
    JobSpec,
    job_from_dict,
    training_from_dict,
)
from federation.v1 import federation_pb2 as pb
from policies.topology import Binding, GpuNode, Inventory, Slot
from training.model import Round, RoundState, Training, TrainingState

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


def _resources_pb(r) -> pb.Resources:
    return pb.Resources(cpus=r.cpus, memory_bytes=r.memory, gpus=r.gpus, gpu_type=r.gpu_type,
                        gpu_memory_bytes=r.gpu_memory or 0)


def _placement_pb(p) -> pb.Placement:
    return pb.Placement(regions=p.regions, sites=p.sites, prefer=p.prefer)


def _topology_pb(t) -> pb.Topology:
    return pb.Topology(nvlink=t.nvlink or "", gpus_per_node=t.gpus_per_node or 0, colocate=t.colocate or "")


def _gang_pb(gang) -> pb.Gang | None:
    if gang is None:
        return None
    return pb.Gang(timeout_s=gang.timeout, continue_on_part_end=gang.on_part_end == "continue", parts=[pb.GangPart(
        name=p.name, entrypoint=p.entrypoint or "",
        datasets=pb.DatasetList(names=p.datasets) if p.datasets is not None else None,
        resources=_resources_pb(p.resources) if p.resources else None,
        placement=_placement_pb(p.placement) if p.placement else None,
        topology=_topology_pb(p.topology) if p.topology else None) for p in gang.parts])


def spec_to_pb(spec: JobSpec) -> pb.JobSpec:
    body = spec.spec
    env = struct_pb2.Struct()
    env.update(body.runtime_env)
    return pb.JobSpec(
        name=spec.metadata.name, tenant=spec.metadata.tenant, labels=spec.metadata.labels,
        entrypoint=body.entrypoint, runtime_env=env, datasets=body.datasets,
        resources=_resources_pb(body.resources), placement=_placement_pb(body.placement), priority=body.priority,
        topology=_topology_pb(body.topology),
        queue=body.queue or "", singleton=body.singleton, array=body.array or "", gang=_gang_pb(body.gang),
        dependencies=pb.Dependencies(after_ok=body.dependencies.after_ok, after_any=body.dependencies.after_any,
                                     after_not_ok=body.dependencies.after_not_ok),
        retry=pb.Retry(limit=body.retry.limit, on_failure=body.retry.on_failure, backoff_s=body.retry.backoff,
                       max_backoff_s=body.retry.max_backoff),
        checkpoint_path=body.checkpoint.path if body.checkpoint else "")


def _resources_dict(r: pb.Resources) -> dict:
    return {"cpus": r.cpus, "memory": r.memory_bytes, "gpus": r.gpus, "gpu_type": list(r.gpu_type),
            "gpu_memory": r.gpu_memory_bytes or None}


def _placement_dict(p: pb.Placement) -> dict:
    return {"regions": list(p.regions), "sites": list(p.sites), "prefer": list(p.prefer)}


def _topology_dict(t: pb.Topology) -> dict:
    return {"nvlink": t.nvlink or None, "gpus_per_node": t.gpus_per_node or None, "colocate": t.colocate or None}


def _gang_dict(msg: pb.JobSpec) -> dict | None:
    if not msg.HasField("gang"):
        return None
    parts = []
    for p in msg.gang.parts:
        part: dict = {"name": p.name}
        if p.entrypoint:
            part["entrypoint"] = p.entrypoint
        if p.HasField("datasets"):
            part["datasets"] = list(p.datasets.names)
        for field, convert in (("resources", _resources_dict), ("placement", _placement_dict),
                               ("topology", _topology_dict)):
            if p.HasField(field):
                part[field] = convert(getattr(p, field))
        parts.append(part)
    return {"parts": parts, "timeout": msg.gang.timeout_s,
            "on_part_end": "continue" if msg.gang.continue_on_part_end else "stop-all"}


def spec_from_pb(msg: pb.JobSpec) -> JobSpec:
    """Validates like a YAML file would; raises InvalidSpec naming the field."""
    data = {
        "apiVersion": "federation/v1",
        "kind": "Job",
        "metadata": {"name": msg.name, "tenant": msg.tenant or "default", "labels": dict(msg.labels)},
        "spec": {
            "entrypoint": msg.entrypoint,
            "runtime_env": json_format.MessageToDict(msg.runtime_env),
            "datasets": list(msg.datasets),
            "resources": _resources_dict(msg.resources),
            "placement": _placement_dict(msg.placement),
            "topology": _topology_dict(msg.topology),
            "priority": msg.priority or "normal",
            "queue": msg.queue or None,
            "dependencies": {"after_ok": list(msg.dependencies.after_ok), "after_any": list(msg.dependencies.after_any),
                             "after_not_ok": list(msg.dependencies.after_not_ok)},
            "singleton": msg.singleton,
            "array": msg.array or None,
            "gang": _gang_dict(msg),
            "checkpoint": {"path": msg.checkpoint_path} if msg.checkpoint_path else None,
        },
    }
    if msg.HasField("retry"):
        r = msg.retry
        data["spec"]["retry"] = {"limit": r.limit, "on_failure": r.on_failure, "backoff": r.backoff_s,
                                 "max_backoff": r.max_backoff_s}
    return job_from_dict(data, source="request")


def attempt_to_pb(a: Attempt) -> pb.Attempt:
    return pb.Attempt(number=a.number, site=a.site, state=ATTEMPT_STATE_TO_PB[a.state],
                      submission_id=a.submission_id, message=a.message, created_at=a.created_at,
                      started_at=a.started_at, ended_at=a.ended_at, binding=binding_to_pb(a.binding))


def job_to_pb(job: Job) -> pb.Job:
    return pb.Job(id=job.id, spec=spec_to_pb(job.spec), state=JOB_STATE_TO_PB[job.state], site=job.site,
                  message=job.message, created_at=job.created_at, updated_at=job.updated_at,
                  attempts=[attempt_to_pb(a) for a in job.attempts], queue=job.queue, array_id=job.array_id,
                  array_index=job.array_index, gang_id=job.gang_id)


def capacity_to_pb(c: Capacity) -> pb.Resources:
    return pb.Resources(cpus=c.cpus, memory_bytes=c.memory, gpus=c.gpus)


def capacity_from_pb(r: pb.Resources) -> Capacity:
    return Capacity(cpus=r.cpus, memory=r.memory_bytes, gpus=r.gpus)


def site_to_pb(site: SiteRecord, *, connected: bool, allocated: Capacity, running: int, lost: bool = False) -> pb.Site:
    return pb.Site(
        name=site.name, location=pb.Location(jurisdiction=site.jurisdiction, region=site.region),
        labels=site.labels,
        datasets=[pb.Dataset(name=d.name, classification=d.classification, path=d.path) for d in site.datasets],
        state=SITE_STATE_TO_PB[site.state], connected=connected, capacity=capacity_to_pb(site.capacity),
        allocated=capacity_to_pb(allocated), running_attempts=running, last_heartbeat=site.last_heartbeat,
        inventory=inventory_to_pb(site.inventory), autonomous=site.autonomous, lost=lost)


def site_from_register(req: pb.RegisterSiteRequest) -> SiteRecord:
    return SiteRecord(
        name=req.name, jurisdiction=req.location.jurisdiction, region=req.location.region,
        labels=dict(req.labels),
        datasets=tuple(DatasetRecord(d.name, d.classification, d.path) for d in req.datasets),
        capacity=capacity_from_pb(req.capacity), inventory=inventory_from_pb(req.inventory, "inventory"),
        autonomous=req.autonomous, agreement_key=req.agreement_key.hex() if len(req.agreement_key) == 32 else "")


def inventory_to_pb(inv: Inventory) -> pb.Inventory:
    return pb.Inventory(nodes=[pb.GpuNode(name=n.name, model=n.model, memory_bytes=n.memory, domains=n.domains,
                                          rack=n.rack, block=n.block) for n in inv.nodes], digest=digest(inv))


def inventory_from_pb(msg: pb.Inventory, where: str) -> Inventory:
    """What an agent published, bounded and checked: InvalidSpec names the node."""
    inv = Inventory(tuple(GpuNode(n.name, n.model, n.memory_bytes, tuple(n.domains), n.rack, n.block)
                          for n in msg.nodes))
    return check_inventory(inv, where)


def binding_to_pb(binding: Binding) -> list[pb.GpuSlot]:
    return [pb.GpuSlot(node=s.node, gpus=s.gpus, milli=s.milli) for s in binding]


def binding_from_pb(slots) -> Binding:
    return tuple(Slot(s.node, tuple(s.gpus), s.milli) for s in slots)


def _struct(d: dict) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(d)
    return out


def training_spec_to_pb(spec: FederatedTrainingSpec) -> pb.TrainingSpec:
    b = spec.spec
    s, a, step = b.strategy, b.aggregation, b.local_step
    return pb.TrainingSpec(
        name=spec.metadata.name, tenant=spec.metadata.tenant, labels=spec.metadata.labels, dataset=b.dataset,
        min_sites=b.sites.min, max_sites=b.sites.max or 0, rounds=b.rounds,
        local_step=pb.LocalStep(entrypoint=step.entrypoint, runtime_env=_struct(step.runtime_env),
                                resources=_resources_pb(step.resources), topology=_topology_pb(step.topology),
                                config=_struct(step.config)),
        strategy=pb.TrainingStrategy(name=s.name, mu=s.mu, lr=s.lr, beta1=s.beta1, beta2=s.beta2, tau=s.tau),
        aggregation=pb.Aggregation(sites=a.sites, regions=a.regions, resources=_resources_pb(a.resources),
                                   secure=a.secure),
        round_timeout_s=b.round_timeout, priority=b.priority, queue=b.queue or "")


def training_spec_from_pb(msg: pb.TrainingSpec) -> FederatedTrainingSpec:
    """Validates like a YAML file would; raises InvalidSpec naming the field."""
    step, s, a = msg.local_step, msg.strategy, msg.aggregation
    data = {
        "apiVersion": "federation/v1", "kind": "FederatedTraining",
        "metadata": {"name": msg.name, "tenant": msg.tenant or "default", "labels": dict(msg.labels)},
        "spec": {
            "dataset": msg.dataset, "sites": {"min": msg.min_sites or 1, "max": msg.max_sites or None},
            "rounds": msg.rounds,
            "local_step": {"entrypoint": step.entrypoint, "runtime_env": json_format.MessageToDict(step.runtime_env),
                           "resources": _resources_dict(step.resources), "topology": _topology_dict(step.topology),
                           "config": json_format.MessageToDict(step.config)},
            "strategy": {"name": s.name or "fedavg", "mu": s.mu, "lr": s.lr or 0.05, "beta1": s.beta1,
                         "beta2": s.beta2, "tau": s.tau or 1e-3},
            "aggregation": {"sites": list(a.sites), "regions": list(a.regions),
                            "resources": _resources_dict(a.resources), "secure": a.secure},
            "round_timeout": msg.round_timeout_s or 600.0, "priority": msg.priority or "normal",
            "queue": msg.queue or None,
        },
    }
    return training_from_dict(data, source="request")


def round_to_pb(r: Round) -> pb.TrainingRound:
    return pb.TrainingRound(number=r.number, attempt=r.attempt, state=ROUND_STATE_TO_PB[r.state],
                            participants=r.participants, aggregator=r.aggregator, reported=r.reported, lost=r.lost,
                            bytes_moved=r.bytes_moved, metrics=_struct(r.metrics), started_at=r.started_at,
                            ended_at=r.ended_at)


def training_to_pb(t: Training, rounds: list[Round] = ()) -> pb.Training:
    return pb.Training(id=t.id, spec=training_spec_to_pb(t.spec), state=TRAINING_STATE_TO_PB[t.state], round=t.round,
                       message=t.message, created_at=t.created_at, updated_at=t.updated_at,
                       rounds=[round_to_pb(r) for r in rounds])
