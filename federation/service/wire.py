"""Domain <-> protobuf. The only module that knows both shapes."""
from __future__ import annotations

from google.protobuf import json_format, struct_pb2

from federation.jobs import Attempt, AttemptState, Job, JobState
from federation.sites import Capacity, DatasetRecord, SiteRecord, SiteState
from federation.spec import JobSpec, job_from_dict
from federation.v1 import federation_pb2 as pb

JOB_STATE_TO_PB = {s: getattr(pb, f"JOB_STATE_{s.name}") for s in JobState}
JOB_STATE_FROM_PB = {v: k for k, v in JOB_STATE_TO_PB.items()}
ATTEMPT_STATE_TO_PB = {s: getattr(pb, f"ATTEMPT_STATE_{s.name}") for s in AttemptState}
ATTEMPT_STATE_FROM_PB = {v: k for k, v in ATTEMPT_STATE_TO_PB.items()}
SITE_STATE_TO_PB = {s: getattr(pb, f"SITE_STATE_{s.name}") for s in SiteState}
SITE_STATE_FROM_PB = {v: k for k, v in SITE_STATE_TO_PB.items()}


def spec_to_pb(spec: JobSpec) -> pb.JobSpec:
    body = spec.spec
    env = struct_pb2.Struct()
    env.update(body.runtime_env)
    return pb.JobSpec(
        name=spec.metadata.name, tenant=spec.metadata.tenant, labels=spec.metadata.labels,
        entrypoint=body.entrypoint, runtime_env=env, datasets=body.datasets,
        resources=pb.Resources(cpus=body.resources.cpus, memory_bytes=body.resources.memory,
                               gpus=body.resources.gpus),
        placement=pb.Placement(regions=body.placement.regions, sites=body.placement.sites,
                               prefer=body.placement.prefer),
        priority=body.priority)


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
            "resources": {"cpus": msg.resources.cpus, "memory": msg.resources.memory_bytes,
                          "gpus": msg.resources.gpus},
            "placement": {"regions": list(msg.placement.regions), "sites": list(msg.placement.sites),
                          "prefer": list(msg.placement.prefer)},
            "priority": msg.priority or "normal",
        },
    }
    return job_from_dict(data, source="request")


def attempt_to_pb(a: Attempt) -> pb.Attempt:
    return pb.Attempt(number=a.number, site=a.site, state=ATTEMPT_STATE_TO_PB[a.state],
                      submission_id=a.submission_id, message=a.message, created_at=a.created_at,
                      started_at=a.started_at, ended_at=a.ended_at)


def job_to_pb(job: Job) -> pb.Job:
    return pb.Job(id=job.id, spec=spec_to_pb(job.spec), state=JOB_STATE_TO_PB[job.state], site=job.site,
                  message=job.message, created_at=job.created_at, updated_at=job.updated_at,
                  attempts=[attempt_to_pb(a) for a in job.attempts])


def capacity_to_pb(c: Capacity) -> pb.Resources:
    return pb.Resources(cpus=c.cpus, memory_bytes=c.memory, gpus=c.gpus)


def capacity_from_pb(r: pb.Resources) -> Capacity:
    return Capacity(cpus=r.cpus, memory=r.memory_bytes, gpus=r.gpus)


def site_to_pb(site: SiteRecord, *, connected: bool, allocated: Capacity, running: int) -> pb.Site:
    return pb.Site(
        name=site.name, location=pb.Location(jurisdiction=site.jurisdiction, region=site.region),
        labels=site.labels,
        datasets=[pb.Dataset(name=d.name, classification=d.classification, path=d.path) for d in site.datasets],
        state=SITE_STATE_TO_PB[site.state], connected=connected, capacity=capacity_to_pb(site.capacity),
        allocated=capacity_to_pb(allocated), running_attempts=running, last_heartbeat=site.last_heartbeat)


def site_from_register(req: pb.RegisterSiteRequest) -> SiteRecord:
    return SiteRecord(
        name=req.name, jurisdiction=req.location.jurisdiction, region=req.location.region,
        labels=dict(req.labels),
        datasets=tuple(DatasetRecord(d.name, d.classification, d.path) for d in req.datasets),
        capacity=capacity_from_pb(req.capacity))
