"""Python SDK: `from federation import Client`.

    client = Client.from_env()
    job = client.submit("configs/examples/tokenize-eu.yaml")
    job.wait(timeout=120)
    print(job.status().state, job.placement.site, job.logs())
"""
from __future__ import annotations

import functools
import itertools
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc

from federation.errors import FederationError, InvalidSpec, Timeout, Unavailable, from_code
from federation.results import (
    JobStatus,
    Placement,
    QueueEntry,
    QueueInfo,
    SiteInfo,
    TrainingStatus,
    job_status,
    placement,
    privacy_use,
    queue_entry,
    queue_info,
    site_info,
    training_status,
)
from federation.service.errors import from_rpc_error
from federation.service.spec_wire import spec_to_pb, training_spec_to_pb
from federation.spec import (
    FederatedTrainingSpec,
    JobSpec,
    as_job,
    load_training,
    training_from_dict,
)
from federation.transport import chunked, open_channel
from federation.v1 import federation_pb2 as pb
from federation.v1 import federation_pb2_grpc as pb_grpc

DEFAULT_ADDRESS = "127.0.0.1:50051"
DEFAULT_PKI = Path(".fedctl/pki")
T = TypeVar("T")


class Job:
    """A handle on a submitted job."""

    def __init__(self, client: Client, job_id: str, last: JobStatus | None = None) -> None:
        self._client = client
        self.id = job_id
        self._last = last

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    def status(self) -> JobStatus:
        self._last = self._client.get(self.id)
        return self._last

    def wait(self, timeout: float | None = None, on_change: Callable[[JobStatus], None] = lambda s: None) -> JobStatus:
        """Block until the job ends, telling `on_change` each state it passes through; rides out
        federation restarts. Raises federation.errors.Timeout."""
        deadline, delay = None if timeout is None else time.monotonic() + timeout, 0.1
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise Timeout(f"job {self.id} still {self._last.state if self._last else 'unknown'} after {timeout:g}s")
            try:
                for status in self._client.watch(self.id, timeout=remaining):
                    self._last = status
                    on_change(status)
                    if status.terminal:
                        return status
            except Unavailable:
                self._client._next_replica(self._client.address)
                time.sleep(min(delay * (0.5 + random.random()), max(0.0, remaining or delay)))
                delay = min(delay * 2, 2.0)

    def logs(self) -> str:
        """The job's logs; where the rules of its data keep them at its site, the line that says so."""
        return self._client.logs(self.id)

    def follow_logs(self) -> Iterator[bytes]:
        return self._client.stream_logs(self.id, follow=True)

    def cancel(self) -> JobStatus:
        self._last = self._client.cancel(self.id)
        return self._last

    @property
    def placement(self) -> Placement:
        return self._client.explain(self.id)


class Training:
    """A handle on a submitted federated training."""

    def __init__(self, client: Client, training_id: str) -> None:
        self._client = client
        self.id = training_id

    def __repr__(self) -> str:
        return f"Training({self.id!r})"

    def status(self) -> TrainingStatus:
        return training_status(self._client._call("GetTraining",
                                                   pb.GetTrainingRequest(id=self.id)).training)

    def wait(self, timeout: float | None = None, poll: float = 0.5,
             on_change: Callable[[TrainingStatus], None] = lambda t: None) -> TrainingStatus:
        """Block until the training ends. Raises federation.errors.Timeout. `on_change` sees each look."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            on_change(status := self.status())
            if status.terminal:
                return status
            if deadline is not None and time.monotonic() >= deadline:
                raise Timeout(f"training {self.id} still at round {status.round} after {timeout:g}s: {status.message}")
            time.sleep(poll)

    def cancel(self) -> TrainingStatus:
        return training_status(self._client._call("CancelTraining",
                                                   pb.CancelTrainingRequest(id=self.id), retry=False).training)

    def model(self) -> dict[str, Any]:
        """The current global model as named NumPy arrays."""
        import io

        import numpy as np
        r = self._client._call("GetTrainingModel", pb.GetTrainingModelRequest(id=self.id))
        with np.load(io.BytesIO(r.model), allow_pickle=False) as data:
            return {k: data[k] for k in data.files}


class JobArray:
    """A handle on the elements of a job array (in index order) or the parts of a gang."""

    def __init__(self, client: Client, array_id: str, jobs: list[Job]) -> None:
        self._client = client
        self.id = array_id
        self.jobs = jobs

    def __repr__(self) -> str:
        return f"JobArray({self.id!r}, {len(self.jobs)} elements)"

    def __len__(self) -> int:
        return len(self.jobs)

    def __iter__(self) -> Iterator[Job]:
        return iter(self.jobs)

    def statuses(self) -> list[JobStatus]:
        return [j.status() for j in self.jobs]

    def wait(self, timeout: float | None = None, on_change: Callable[[JobStatus], None] = lambda s: None
             ) -> list[JobStatus]:
        """Block until every element ends. Raises federation.errors.Timeout."""
        end = None if timeout is None else time.monotonic() + timeout
        return [j.wait(None if end is None else max(0.0, end - time.monotonic()), on_change) for j in self.jobs]

    def cancel(self) -> list[JobStatus]:
        return [j.cancel() for j in self.jobs if not j.status().terminal]


class Client:
    """`address`: one, or the federation's replicas, as a list or comma-separated: a call a replica
    refuses as not leading, or one that cannot reach it, goes on to the next."""

    def __init__(self, address: str | Sequence[str] = DEFAULT_ADDRESS, *, ca: str | Path | None = None,
                 cert: str | Path | None = None, key: str | Path | None = None, insecure: bool = False,
                 timeout: float = 30.0) -> None:
        given = address.split(",") if isinstance(address, str) else list(address)
        self.addresses = list(dict.fromkeys(a.strip() for a in given if a.strip())) or [DEFAULT_ADDRESS]
        self.timeout = timeout
        self._open = functools.partial(open_channel, ca=_path(ca), cert=_path(cert), key=_path(key),
                                       insecure=insecure)
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()
        self._connect(self.addresses[0])

    def _connect(self, address: str) -> None:
        if address not in self._channels:
            self._channels[address] = self._open(address)
        self._target = (address, pb_grpc.FederationServiceStub(self._channels[address]))   # one assignment

    @property
    def address(self) -> str:
        return self._target[0]

    @property
    def _stub(self) -> pb_grpc.FederationServiceStub:
        return self._target[1]

    def _next_replica(self, failed: str) -> bool:
        """Move on from `failed` to the next address (unless another call already has); False when
        there is only one."""
        if len(self.addresses) < 2:
            return False
        with self._lock:
            if self.address == failed:
                self._connect(self.addresses[(self.addresses.index(failed) + 1) % len(self.addresses)])
        return True

    @classmethod
    def from_env(cls, **overrides: Any) -> Client:
        """FEDCTL_ADDRESS, FEDCTL_CA / FEDCTL_CERT / FEDCTL_KEY or FEDCTL_PKI (a folder with ca.pem,
        admin.pem, admin.key; default .fedctl/pki), FEDCTL_INSECURE=1 for plain text."""
        env = os.environ
        pki = Path(env.get("FEDCTL_PKI", DEFAULT_PKI))
        settings: dict[str, Any] = {
            "address": env.get("FEDCTL_ADDRESS", DEFAULT_ADDRESS),
            "insecure": env.get("FEDCTL_INSECURE", "") in ("1", "true", "yes"),
            "ca": env.get("FEDCTL_CA") or (pki / "ca.pem"),
            "cert": env.get("FEDCTL_CERT") or (pki / "admin.pem"),
            "key": env.get("FEDCTL_KEY") or (pki / "admin.key"),
        }
        settings.update({k: v for k, v in overrides.items() if v is not None})
        if not settings["insecure"] and not Path(settings["ca"]).exists():
            raise FederationError(
                f"no TLS credentials: {settings['ca']} does not exist; run `fedctl ca init`, set FEDCTL_PKI, "
                "or FEDCTL_INSECURE=1 for a plain-text development federation")
        return cls(**settings)

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ calls

    def _call(self, method: str, request: Any, *, retry: bool = True) -> Any:
        """Unary call; reads and idempotent writes are retried on UNAVAILABLE (and on a deadline
        that leaves time for another try) with exponential backoff and jitter."""
        delay = 0.1
        deadline = time.monotonic() + self.timeout
        while True:
            address, stub = self._target
            try:
                return getattr(stub, method)(request, timeout=max(0.1, deadline - time.monotonic()))
            except grpc.RpcError as e:
                err = from_rpc_error(e)
                if not (retry and isinstance(err, (Unavailable, Timeout))) or time.monotonic() + delay >= deadline:
                    raise err from None
            if self._next_replica(address) and self.addresses.index(self.address):
                continue   # try every replica once before backing off
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)

    def submit_training(self, spec: str | Path | dict | FederatedTrainingSpec) -> Training:
        """A federated training (YAML `kind: FederatedTraining`)."""
        if isinstance(spec, (str, Path)):
            spec = load_training(spec)
        elif isinstance(spec, dict):
            spec = training_from_dict(spec)
        elif not isinstance(spec, FederatedTrainingSpec):
            raise InvalidSpec("submit_training: expected a path, dict or FederatedTrainingSpec, "
                              f"got {type(spec).__name__}")
        r = self._call("SubmitTraining", pb.SubmitTrainingRequest(spec=training_spec_to_pb(spec)),
                       retry=False)
        return Training(self, r.training.id)

    def trainings(self, tenant: str | None = None) -> list[TrainingStatus]:
        r = self._call("ListTrainings", pb.ListTrainingsRequest(tenant=tenant or ""))
        return [training_status(t) for t in r.trainings]

    def submit(self, spec: str | Path | dict | JobSpec, request_id: str | None = None) -> Job | JobArray:
        """A Job, or for a spec with `array:` or `gang:` a JobArray of its elements or parts.

        Every submission carries a request id (a new one unless given): the call is retried on a
        lost connection, and the federation returns the job it stored the first time instead of
        storing it twice. Give your own id to make a retry of the whole program safe too."""
        request = pb.SubmitJobRequest(spec=spec_to_pb(as_job(spec, "submit")),
                                      request_id=request_id or uuid.uuid4().hex)
        return self._submitted(self._call("SubmitJob", request))

    def submit_many(self, specs: Iterable[str | Path | dict | JobSpec]) -> list[Job | JobArray | FederationError]:
        """Many submissions in few calls: per spec, in order, its Job or JobArray, or the error that
        refused it (`specs[3]: spec.resources: ...`); one refused never stops the others. Every spec
        is read before anything is sent, and each carries its own request id, so a retried call
        stores nothing twice. A call that fails (a rate limit, the federation unreachable) ends the
        sending: its specs and those after it carry its error, and what went before stays."""
        items = [pb.SubmitJobRequest(spec=spec_to_pb(as_job(s, f"specs[{i}]")), request_id=uuid.uuid4().hex)
                 for i, s in enumerate(specs)]
        out: list[Job | JobArray | FederationError] = []
        for chunk in chunked(items):
            try:
                results = self._call("SubmitJobs", pb.SubmitJobsRequest(items=chunk)).results
            except FederationError as e:
                return out + [type(e)(f"specs[{i}]: {e.message}", code=e.code) for i in range(len(out), len(items))]
            for r in results:
                out.append(from_code(r.error_code, f"specs[{len(out)}]: {r.error_message.partition(': ')[2]}")
                           if r.error_code else self._submitted(r.submitted))
        return out

    def _submitted(self, response: pb.SubmitJobResponse) -> Job | JobArray:
        if response.elements:
            statuses = [job_status(e) for e in response.elements]
            return JobArray(self, response.job.array_id or response.job.gang_id, [Job(self, s.id, s) for s in statuses])
        status = job_status(response.job)
        return Job(self, status.id, status)

    def queue(self, queue: str | None = None, tenant: str | None = None,
              limit: int = 1000) -> tuple[list[QueueEntry], list[QueueInfo]]:
        """Pending jobs in scheduling order with their fair-share factors, and each queue's standing."""
        r = self._call("ListQueue", pb.ListQueueRequest(queue=queue or "", tenant=tenant or "", limit=limit))
        return [queue_entry(e) for e in r.entries], [queue_info(q) for q in r.queues]

    def usage(self, group_by: Iterable[str] = ("tenant",), since: float = 0.0, until: float = 0.0) -> list[dict]:
        """Resource-seconds and cost of attempts that ran within [since, until] (0: from the start / now), grouped."""
        r = self._call("GetUsage", pb.GetUsageRequest(group_by=list(group_by), since=since, until=until))
        fields = list(group_by) or ["tenant"]
        return [{**{f: getattr(row, f) for f in fields}, "attempts": row.attempts, "cpu_seconds": row.cpu_seconds,
                 "memory_gib_seconds": row.memory_gib_seconds, "gpu_seconds": row.gpu_seconds, "cost": row.cost}
                for row in r.rows]

    def privacy(self) -> list[dict]:
        """Per dataset with a privacy budget or a private training: the budget, epsilon spent and held."""
        return [privacy_use(p) for p in self._call("GetUsage", pb.GetUsageRequest()).privacy]

    def job(self, job_id: str) -> Job:
        return Job(self, job_id, self.get(job_id))

    def get(self, job_id: str) -> JobStatus:
        return job_status(self._call("GetJob", pb.GetJobRequest(id=job_id)).job)

    def jobs(self, tenant: str | None = None, states: Iterable[str] = (), limit: int | None = 1000,
             submitter: str | None = None) -> list[JobStatus]:
        """Newest first, at most `limit` (None: every one), fetched a page at a time; with `submitter`,
        only the jobs that identity submitted."""
        return list(itertools.islice(self.iter_jobs(tenant, states, submitter=submitter), limit))

    def iter_jobs(self, tenant: str | None = None, states: Iterable[str] = (), page: int = 1000,
                  submitter: str | None = None) -> Iterator[JobStatus]:
        """Every job, newest first, a page of `page` jobs per call."""
        request = pb.ListJobsRequest(tenant=tenant or "", limit=page, submitter=submitter or "",
                                     states=[getattr(pb, f"JOB_STATE_{s.upper()}") for s in states])
        while True:
            response = self._call("ListJobs", request)
            yield from (job_status(j) for j in response.jobs)
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    def cancel(self, job_id: str) -> JobStatus:
        return job_status(self._call("CancelJob", pb.CancelJobRequest(id=job_id)).job)

    def explain(self, job_id: str) -> Placement:
        return placement(self._call("ExplainJob", pb.ExplainJobRequest(id=job_id)))

    def watch(self, job_id: str, timeout: float | None = None) -> Iterator[JobStatus]:
        """Yields the job each time it changes, ending when it ends (or at `timeout`)."""
        call = self._stub.WatchJob(pb.WatchJobRequest(id=job_id), timeout=timeout)
        try:
            for r in call:
                yield job_status(r.job)
        except grpc.RpcError as e:
            if e.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
                return
            raise from_rpc_error(e) from None
        finally:
            call.cancel()   # a caller that stops early frees its stream at once (the federation bounds them)

    def logs(self, job_id: str) -> str:
        """A job's logs so far; where the rules of its data keep them at its site, the line that says
        so and how to read them there."""
        return b"".join(self.stream_logs(job_id)).decode("utf-8", "replace")

    def stream_logs(self, job_id: str, follow: bool = False, offset: int = 0) -> Iterator[bytes]:
        """A job's log bytes as they come; where its logs stay at its site, that line instead."""
        for data, kept in self.log_stream(job_id, follow, offset):
            yield (kept + "\n").encode() if kept else data

    def log_stream(self, job_id: str, follow: bool = False, offset: int = 0) -> Iterator[tuple[bytes, str]]:
        """(bytes, '') as a job's logs come; or one (b'', why and where) when the rules of its data
        keep its logs at the site that runs it."""
        call = self._stub.StreamJobLogs(pb.StreamJobLogsRequest(id=job_id, follow=follow, offset=offset),
                                        timeout=None if follow else self.timeout)
        try:
            for r in call:
                yield r.data, r.kept_at_site
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        finally:
            call.cancel()

    def create_join_token(self, name: str, jurisdiction: str, region: str, labels: dict[str, str] | None = None,
                          ttl_s: float = 0.0) -> tuple[str, float]:
        """A one-time token for a site to enrol as `name` with these attributes: (token, expires at)."""
        r = self._call("CreateJoinToken", pb.CreateJoinTokenRequest(
            name=name, location=pb.Location(jurisdiction=jurisdiction, region=region), labels=labels or {},
            ttl_s=ttl_s), retry=False)
        return r.token, r.expires_at

    def drain_federation(self, drain: bool = True) -> tuple[bool, int, int]:
        """Stop (or, with False, resume) taking submissions: (draining, jobs pending, attempts live)."""
        r = self._call("DrainFederation", pb.DrainFederationRequest(drain=drain))
        return r.draining, r.pending, r.live

    def revoke(self, name: str) -> int:
        """Refuse every certificate issued for this user or site until now, used or not; how many of
        them the federation had seen. Certificates issued afterwards work."""
        return self._call("RevokeCertificates", pb.RevokeCertificatesRequest(name=name), retry=False).revoked

    def sites(self) -> list[SiteInfo]:
        return [site_info(s) for s in self._call("ListSites", pb.ListSitesRequest()).sites]

    def site(self, name: str) -> SiteInfo:
        return site_info(self._call("GetSite", pb.GetSiteRequest(name=name)).site)

    def _set_site_state(self, name: str, state: pb.SiteState, handover: bool = False) -> SiteInfo:
        request = pb.SetSiteStateRequest(name=name, state=state, handover=handover)
        return site_info(self._call("SetSiteState", request).site)

    def cordon(self, name: str) -> SiteInfo:
        return self._set_site_state(name, pb.SITE_STATE_CORDONED)

    def uncordon(self, name: str) -> SiteInfo:
        return self._set_site_state(name, pb.SITE_STATE_READY)

    def drain(self, name: str, handover: bool = False) -> SiteInfo:
        """No new work at the site; its running work finishes there, or with `handover` is stopped
        now and placed elsewhere (resuming from its checkpoint where it declares one)."""
        return self._set_site_state(name, pb.SITE_STATE_DRAINING, handover)


def _path(p: str | Path | None) -> Path | None:
    return None if p is None else Path(p)
