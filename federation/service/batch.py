"""`SubmitJobs`: many submissions in one call, each decoded, stored or refused on its own, and
each refusal naming its item (`items[3]: spec.resources...`)."""
from __future__ import annotations

import re

from federation.control.admission import Admission
from federation.errors import FederationError, InvalidSpec
from federation.jobs import Job
from federation.service import wire
from federation.service.spec_wire import SOURCE, spec_from_pb
from federation.spec import JobSpec
from federation.v1 import federation_pb2 as pb

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
MAX_ITEMS = 1000

Item = tuple[JobSpec, str] | FederationError


def request_id_of(item: pb.SubmitJobRequest) -> str:
    if item.request_id and not REQUEST_ID_RE.match(item.request_id):
        raise InvalidSpec("request_id: at most 128 letters, digits and . _ : -")
    return item.request_id


def decode(request: pb.SubmitJobsRequest) -> list[Item]:
    """Each item's spec and request id, or why it cannot be read; the whole call is refused only
    when it has too many."""
    if len(request.items) > MAX_ITEMS:
        raise InvalidSpec(f"items: at most {MAX_ITEMS} submissions a call, not {len(request.items)}")
    out: list[Item] = []
    for i, item in enumerate(request.items):
        try:
            out.append((spec_from_pb(item.spec), request_id_of(item)))
        except FederationError as e:
            out.append(_named(e, i))
    return out


def tenants(items: list[Item]) -> set[str]:
    return {item[0].metadata.tenant for item in items if isinstance(item, tuple)}


def submit(admission: Admission, items: list[Item], actor: str) -> pb.SubmitJobsResponse:
    readable = [(i, item) for i, item in enumerate(items) if isinstance(item, tuple)]
    results: list[list[Job] | FederationError] = [item if isinstance(item, FederationError) else [] for item in items]
    for (i, _), stored in zip(readable, admission.submit_many([item for _, item in readable], actor), strict=True):
        results[i] = _named(stored, i) if isinstance(stored, FederationError) else stored
    return pb.SubmitJobsResponse(results=[_result(r) for r in results])


def submitted(jobs: list[Job]) -> pb.SubmitJobResponse:
    return pb.SubmitJobResponse(job=wire.job_to_pb(jobs[0], brief=True),
                                elements=[wire.job_to_pb(j, brief=True) for j in jobs]
                                if len(jobs) > 1 or jobs[0].array_id else [])


def _result(r: list[Job] | FederationError) -> pb.SubmitJobsResult:
    if isinstance(r, FederationError):
        return pb.SubmitJobsResult(error_code=r.code.value, error_message=r.message)
    return pb.SubmitJobsResult(submitted=submitted(r))


def _named(e: FederationError, i: int) -> FederationError:
    return type(e)(f"items[{i}]: {e.message.removeprefix(SOURCE + ': ')}", code=e.code)
