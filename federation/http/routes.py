"""The HTTP API's routes: each one a gRPC call of `FederationServicer`, its request built from the
path, query and body, its answer typed (the OpenAPI document's schemas come from those types)."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message
from multidict import MultiMapping

from federation.errors import InvalidSpec
from federation.jobs import JobState
from federation.results import (
    JobStatus,
    Placement,
    QueueEntry,
    QueueInfo,
    SiteInfo,
    job_status,
    placement,
    queue_entry,
    queue_info,
    site_info,
)
from federation.service import wire
from federation.v1 import federation_pb2 as pb


@dataclass(frozen=True)
class Params:
    path: dict[str, str]
    query: MultiMapping[str]
    body: bytes = b""


@dataclass(frozen=True)
class Query:
    name: str
    what: str
    kind: str = "string"     # an OpenAPI type
    many: bool = False       # repeated, or comma-separated


@dataclass(frozen=True)
class Submitted:
    job: JobStatus
    elements: list[JobStatus] = field(default_factory=list)   # an array's elements, a gang's parts


@dataclass(frozen=True)
class JobPage:
    jobs: list[JobStatus]
    next_page_token: str = ""


@dataclass(frozen=True)
class Queue:
    entries: list[QueueEntry]
    queues: list[QueueInfo]


@dataclass(frozen=True)
class UsageRow:
    tenant: str = ""
    queue: str = ""
    site: str = ""
    gpu_model: str = ""
    attempts: int = 0
    cpu_seconds: float = 0.0
    memory_gib_seconds: float = 0.0
    gpu_seconds: float = 0.0
    cost: float = 0.0


@dataclass(frozen=True)
class PrivacyRow:
    dataset: str
    budget_epsilon: float = 0.0
    budget_delta: float = 0.0
    spent_epsilon: float = 0.0
    held_epsilon: float = 0.0
    trainings: int = 0


@dataclass(frozen=True)
class Usage:
    rows: list[UsageRow]
    since: float
    until: float
    privacy: list[PrivacyRow]


@dataclass(frozen=True)
class Sites:
    sites: list[SiteInfo]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    rpc: str                                   # the FederationServicer method it calls
    summary: str
    build: Callable[[Params], Message]
    answer: Callable[[Any], Any]
    returns: Any
    query: tuple[Query, ...] = ()
    body: bool = False                         # the body is a job spec (JSON)


def _number(params: Params, name: str, default: float = 0.0) -> float:
    raw = params.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise InvalidSpec(f"query {name}: {raw[:40]!r} is not a number of 0 or more")
    return value


def _limit(params: Params) -> int:
    return int(min(_number(params, "limit", 1000), 10_000)) or 1000


def _many(params: Params, name: str) -> list[str]:
    return [v for raw in params.query.getall(name, []) for v in raw.split(",") if v]


def _states(params: Params) -> list[pb.JobState]:
    out: list[pb.JobState] = []
    for s in _many(params, "state"):
        try:
            out.append(wire.JOB_STATE_TO_PB[JobState(s.lower())])
        except ValueError:
            raise InvalidSpec(f"query state: unknown state '{s[:40]}'; choose from "
                              f"{', '.join(state.value for state in JobState)}") from None
    return out


def _submitted(r: pb.SubmitJobResponse) -> Submitted:
    return Submitted(job_status(r.job), [job_status(e) for e in r.elements])


def _usage(r: pb.GetUsageResponse) -> Usage:
    return Usage([UsageRow(row.tenant, row.queue, row.site, row.gpu_model, row.attempts, row.cpu_seconds,
                           row.memory_gib_seconds, row.gpu_seconds, row.cost) for row in r.rows], r.since, r.until,
                 [PrivacyRow(p.dataset, p.budget_epsilon, p.budget_delta, p.spent_epsilon, p.held_epsilon, p.trainings)
                  for p in r.privacy])


ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/jobs", "SubmitJob", "Submit a job (or an array, or a gang) from its spec",
          lambda p: pb.SubmitJobRequest(spec=pb.JobSpec(json=p.body.decode("utf-8", "replace")),
                                        request_id=p.query.get("request_id", "")),
          _submitted, Submitted, (Query("request_id", "the same id again returns the jobs it stored first"),),
          body=True),
    Route("GET", "/v1/jobs", "ListJobs", "Jobs the caller may see, newest first",
          lambda p: pb.ListJobsRequest(tenant=p.query.get("tenant", ""), states=_states(p),
                                       limit=_limit(p), page_token=p.query.get("page_token", ""),
                                       submitter=p.query.get("submitter", "")),
          lambda r: JobPage([job_status(j) for j in r.jobs], r.next_page_token), JobPage,
          (Query("tenant", "only this tenant's"), Query("state", "pending, placed, running, ...", many=True),
           Query("submitter", "only the jobs this identity submitted"),
           Query("limit", "at most this many (1000; at most 10000)", "integer"),
           Query("page_token", "next_page_token of the page before"))),
    Route("GET", "/v1/jobs/{id}", "GetJob", "A job and its attempts",
          lambda p: pb.GetJobRequest(id=p.path["id"]), lambda r: job_status(r.job), JobStatus),
    Route("POST", "/v1/jobs/{id}/cancel", "CancelJob", "Cancel a job",
          lambda p: pb.CancelJobRequest(id=p.path["id"]), lambda r: job_status(r.job), JobStatus),
    Route("GET", "/v1/jobs/{id}/explain", "ExplainJob", "Where the job runs or why it waits, site by site",
          lambda p: pb.ExplainJobRequest(id=p.path["id"]), placement, Placement),
    Route("GET", "/v1/sites", "ListSites", "Every site: where it is, its state, capacity and GPUs",
          lambda p: pb.ListSitesRequest(), lambda r: Sites([site_info(s) for s in r.sites]), Sites),
    Route("GET", "/v1/sites/{name}", "GetSite", "One site",
          lambda p: pb.GetSiteRequest(name=p.path["name"]), lambda r: site_info(r.site), SiteInfo),
    Route("GET", "/v1/queue", "ListQueue", "Waiting jobs in the order the next cycle takes them, and each queue",
          lambda p: pb.ListQueueRequest(queue=p.query.get("queue", ""), tenant=p.query.get("tenant", ""),
                                        limit=_limit(p)),
          lambda r: Queue([queue_entry(e) for e in r.entries], [queue_info(q) for q in r.queues]), Queue,
          (Query("queue", "only this queue"), Query("tenant", "only this tenant's jobs"),
           Query("limit", "at most this many entries", "integer"))),
    Route("GET", "/v1/usage", "GetUsage", "Resource-seconds and cost of attempts, grouped",
          lambda p: pb.GetUsageRequest(group_by=_many(p, "group_by"), since=_number(p, "since"),
                                       until=_number(p, "until")),
          _usage, Usage, (Query("group_by", "tenant, queue, site, gpu_model", many=True),
                          Query("since", "Unix seconds (0: from the start)", "number"),
                          Query("until", "Unix seconds (0: now)", "number"))),
)
