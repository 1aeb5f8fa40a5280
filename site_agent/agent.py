"""The agent loop: register, heartbeat, and reconcile the federation's desired
attempts with the jobs on this site's Ray cluster.

Each pass observes Ray, starts desired attempts it lacks (unless the site vetoes
them), stops federation jobs no longer desired, and reports every federation
attempt Ray holds, with new log bytes. Passes are idempotent: Ray submission ids
are derived from (job, attempt), so a repeated start is a no-op.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import random
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import grpc

from federation.errors import (
    FederationError,
    InvalidSpec,
    NotFound,
    PermissionDenied,
    RayError,
)
from federation.jobs import AttemptState, parse_submission_id
from federation.service import wire
from federation.service.errors import from_rpc_error
from federation.sites import Capacity
from federation.spec import SiteConfig
from federation.v1 import federation_pb2 as pb
from federation.v1 import federation_pb2_grpc as pb_grpc
from site_agent import renewal
from site_agent.binding import MISMATCH, check, wrap
from site_agent.inventory import SiteGpus, site_capacity, site_gpus
from site_agent.ray_driver import SITE_KEY, RayDriver, RayJob
from site_agent.veto import resolve_runtime_env, veto_reason
from training import secagg

log = logging.getLogger("site_agent")

RAY_TO_ATTEMPT = {
    "PENDING": AttemptState.ASSIGNED,
    "RUNNING": AttemptState.RUNNING,
    "SUCCEEDED": AttemptState.SUCCEEDED,
    "FAILED": AttemptState.FAILED,
    "STOPPED": AttemptState.STOPPED,
}
MAX_LOG_CHUNK = 1 << 20
MAX_OUTPUTS = 16
MAX_OUTPUT_BYTES = 4 << 20   # the federation's limit per file
REPORT_EVERY_S = 5.0
FAST_PASS_S = 0.02      # while an attempt is starting, so "running" is seen within tens of ms
FENCE_AT = 2 / 3        # of the lease without an acknowledged heartbeat: stop this site's work


@dataclass
class _Local:
    """What this agent decided itself about an attempt Ray never ran."""

    state: AttemptState
    message: str


@dataclass
class Reconciler:
    """One site's reconcile pass, separate from the wire so it can be driven directly."""

    config: SiteConfig
    driver: RayDriver
    desired: dict[str, pb.Assignment] = field(default_factory=dict)
    local: dict[str, _Local] = field(default_factory=dict)
    shipped: dict[str, int] = field(default_factory=dict)   # log bytes sent, per submission id
    logs_done: set[str] = field(default_factory=set)        # ended, and every byte sent on this stream
    watched: set[str] = field(default_factory=set)         # attempts desired at some point in this process
    synced: bool = False        # a desired set has arrived on the current stream
    starting: set[str] = field(default_factory=set)      # desired attempts Ray has not started yet
    submitted: set[str] = field(default_factory=set)     # desired attempts handed to Ray by this process
    ran: set[str] = field(default_factory=set)           # desired attempts seen past PENDING
    gpus: SiteGpus = field(default_factory=SiteGpus)     # this site's GPU inventory, for bindings
    epochs: dict[str, int] = field(default_factory=dict)   # per job, the newest attempt seen here
    fenced: str = ""            # why this site stopped its work and starts none (its lease expired)
    fetch_input: Callable[[str, int, str], bytes] | None = None   # (job, attempt, name) -> data, from the federation
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def io_root(self) -> Path:
        """Where attempts find their inputs and leave their outputs, on this site only."""
        base = self.config.spec.work_dir or Path(tempfile.gettempdir())
        return base / ".fedctl-io" / self.config.metadata.name

    @property
    def held(self) -> dict[str, str]:
        return {d.name: d.classification for d in self.config.spec.datasets}

    def set_desired(self, assignments: list[pb.Assignment]) -> None:
        with self.lock:
            self.desired = {a.submission_id: a for a in assignments}
            self.watched |= set(self.desired)
            self.synced = True
            self.fenced = ""   # the federation speaks: the lease was renewed when the site registered
            for a in assignments:
                self._saw_epoch(a.job_id, a.attempt)

    def _saw_epoch(self, job_id: str, number: int) -> None:
        if number > self.epochs.get(job_id, 0):
            self.epochs[job_id] = number

    def fence(self, reason: str) -> int:
        """The lease ran out: the federation will soon re-place this site's work elsewhere, so stop
        it here first (a job must never run in two places) and start nothing until the federation
        speaks again. The stopped attempts are reported lost, which their retry policy covers."""
        with self.lock:
            if self.fenced:
                return 0
            self.fenced = reason
            try:
                jobs = self.driver.jobs()
            except RayError as e:
                log.warning("fencing: cannot list Ray jobs: %s", e.message)
                jobs = {}
            stopped = 0
            for sid, job in jobs.items():
                if parse_submission_id(sid) and job.site in (None, self.config.metadata.name) and not job.terminal:
                    try:
                        self.driver.stop(sid)
                    except RayError as e:
                        log.warning("fencing %s: %s", sid, e.message)
                    self.local[sid] = _Local(AttemptState.LOST, f"stopped by the site: {reason}")
                    stopped += 1
            for sid in self.desired:
                self.local.setdefault(sid, _Local(AttemptState.LOST, f"not started: {reason}"))
            return stopped

    def new_stream(self) -> None:
        """Until the federation speaks on a new stream, observe and report but change nothing:
        an empty desired set must not stop work that is running."""
        with self.lock:
            self.synced = False
            self.shipped.clear()
            self.logs_done.clear()

    def reconcile(self) -> pb.ConnectRequest | None:
        """One pass. Returns the full report, or None if Ray could not be observed."""
        with self.lock:
            return self._reconcile()

    def _reconcile(self) -> pb.ConnectRequest | None:
        if self.synced and not self.fenced:
            # New assignments start before Ray is listed: listing grows with Ray's job history,
            # and a start is idempotent (the submission id), so it needs no look first.
            self.submitted &= set(self.desired)
            for sid, assignment in self.desired.items():
                if sid not in self.submitted and sid not in self.local:
                    self._start(sid, assignment, ray_reachable=False)
        try:
            # Only this site's federation jobs: a Ray cluster may be shared with other sites or users.
            observed = {sid: j for sid, j in self.driver.jobs().items()
                        if parse_submission_id(sid) and j.site in (None, self.config.metadata.name)}
        except RayError as e:
            log.warning("cannot observe Ray: %s", e.message)
            return None
        for sid in observed:
            self._saw_epoch(*parse_submission_id(sid))
        if not self.synced or self.fenced:
            return self._report(observed)
        self.ran |= {sid for sid in self.desired if sid in observed and observed[sid].status != "PENDING"}
        self.ran &= set(self.desired)
        for sid, assignment in self.desired.items():
            if sid not in observed and sid not in self.local and sid not in self.ran:
                # Not started yet, or lost by Ray (a restarted cluster) before it ran. One that
                # ran and vanished is the federation's to judge: starting it here could run it twice.
                self._start(sid, assignment, ray_reachable=True)
                if sid in self.submitted:
                    observed[sid] = RayJob(sid, "PENDING")
        self.starting = {sid for sid in self.desired
                         if sid not in self.local and observed.get(sid, RayJob(sid, "PENDING")).status == "PENDING"}
        for sid, job in observed.items():
            if sid not in self.desired and not job.terminal:
                try:
                    self.driver.stop(sid)
                    log.info("stopped %s: no longer desired", sid)
                except RayError as e:
                    log.warning("%s", e.message)
        return self._report(observed)

    def any_started(self) -> bool:
        """A cheap check between full passes: has Ray started any attempt we are waiting on?"""
        for sid in list(self.starting):
            try:
                if self.driver.status(sid) not in (None, "PENDING"):
                    return True
            except RayError:
                return True  # let the full pass find out
        return False

    def _start(self, sid: str, a: pb.Assignment, *, ray_reachable: bool) -> None:
        """Submit an attempt, or refuse it. A Ray error fails the attempt only when Ray has
        just answered a listing: otherwise it may be Ray that is down, not the job that is bad."""
        if a.attempt < self.epochs.get(a.job_id, 0):
            newer = self.epochs[a.job_id]
            log.warning("refused %s: stale epoch (attempt %d of this job is newer)", sid, newer)
            self.local[sid] = _Local(AttemptState.REJECTED, f"stale epoch: attempt {newer} of this job is newer")
            return
        try:
            spec = wire.spec_from_pb(a.spec)
        except InvalidSpec as e:  # refuse what this site cannot read, rather than wedge on it
            self.local[sid] = _Local(AttemptState.REJECTED, f"invalid assignment: {e.message}")
            return
        reason = veto_reason(spec, self.config.spec.veto, self.held)
        runtime_env, env_reason = resolve_runtime_env(spec.spec.runtime_env, self.config.spec.work_dir)
        reason = reason or env_reason
        if reason:
            log.info("refused %s: %s", sid, reason)
            self.local[sid] = _Local(AttemptState.REJECTED, reason)
            return
        io_env = self._inputs(sid, a)
        if io_env is None:
            return  # refused, or an input could not be fetched: next pass tries again
        r = spec.spec.resources
        entrypoint, env, gpus = spec.spec.entrypoint, {**self._job_env(a, spec), **io_env}, r.gpus
        if a.binding:
            binding = wire.binding_from_pb(a.binding)
            try:
                mismatch = check(binding, self.gpus.inventory, self.driver.nodes())
            except RayError as e:
                log.warning("%s", e.message)
                return  # Ray is not answering: try again next pass
            if mismatch:
                log.warning("refused %s: %s", sid, mismatch)
                self.local[sid] = _Local(AttemptState.FAILED, f"failed reservation: {mismatch}")
                return
            # The placement group holds the GPUs, so the entrypoint itself asks for none.
            entrypoint, bound_env = wrap(entrypoint, binding, self.gpus.cuda)
            env, gpus = {**env, **bound_env}, 0.0
        runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), **env}
        try:
            started = self.driver.submit(sid, entrypoint, runtime_env, cpus=r.cpus, memory=r.memory, gpus=gpus,
                                         metadata={"federation_job": a.job_id, "attempt": str(a.attempt),
                                                   "tenant": spec.metadata.tenant, SITE_KEY: self.config.metadata.name})
            self.submitted.add(sid)
            if started:
                log.info("started %s (%s)", sid, spec.metadata.name)
            else:
                log.info("adopted %s (%s): Ray already holds it", sid, spec.metadata.name)
        except RayError as e:
            log.warning("%s", e.message)
            if ray_reachable:
                self.local[sid] = _Local(AttemptState.FAILED, e.message)

    def _inputs(self, sid: str, a: pb.Assignment) -> dict[str, str] | None:
        """Fetch the attempt's inputs into its input folder and make its output folder; their
        paths for the job, or None when it must not start now (an input could not be fetched;
        or one is refused, which is then the attempt's local decision)."""
        root = self.io_root / sid
        inbox, outbox = root / "in", root / "out"
        outbox.mkdir(parents=True, exist_ok=True, mode=0o700)
        inbox.mkdir(exist_ok=True, mode=0o700)
        for ref in a.inputs:
            path = inbox / ref.name
            if Path(ref.name).name != ref.name or ref.name.startswith("."):
                self.local[sid] = _Local(AttemptState.REJECTED, f"invalid input name {ref.name[:64]!r}")
                return None
            if path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == ref.sha256:
                continue
            if self.fetch_input is None:
                return None
            try:
                data = self.fetch_input(a.job_id, a.attempt, ref.name)
            except FederationError as e:
                log.warning("fetching %s of %s: %s", ref.name, sid, e.message)
                return None
            if hashlib.sha256(data).hexdigest() != ref.sha256:
                log.warning("fetching %s of %s: content does not match its digest", ref.name, sid)
                return None
            path.write_bytes(data)
        if any(ref.name == "peers.json" for ref in a.inputs):
            try:
                self._secrets(inbox)
            except (ValueError, KeyError, TypeError) as e:
                self.local[sid] = _Local(AttemptState.REJECTED, f"invalid peers.json: {e}")
                return None
        return {"FEDCTL_INPUT_DIR": str(inbox), "FEDCTL_OUTPUT_DIR": str(outbox)}

    def agreement_key(self) -> secagg.KeyPair:
        """This site's X25519 key for secure aggregation, made here once and never sent."""
        path = self.io_root.parent / f"{self.config.metadata.name}.x25519"
        return secagg.KeyPair.load_or_create(path)

    def _secrets(self, inbox: Path) -> None:
        """From peers.json (the round's context and each peer's public key), write this site's
        pairwise secrets for the job beside it: they never leave the site."""
        peers = json.loads((inbox / "peers.json").read_text())
        me, key = self.config.metadata.name, self.agreement_key()
        secrets_ = {peer: secagg.pair_secret(key, me, peer, bytes.fromhex(public), peers["context"]).hex()
                    for peer, public in peers["keys"].items() if peer != me}
        path = inbox / "secrets.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(secrets_, f)

    def _outputs(self, sid: str) -> list[tuple[str, bytes]]:
        """The files an attempt left in its output folder, at most MAX_OUTPUTS of MAX_OUTPUT_BYTES."""
        outbox = self.io_root / sid / "out"
        files = sorted(p for p in outbox.iterdir() if p.is_file() and not p.is_symlink()) if outbox.is_dir() else []
        out = []
        for p in files[:MAX_OUTPUTS]:
            if p.stat().st_size > MAX_OUTPUT_BYTES:
                log.warning("%s: output %s is over %d bytes; not sent", sid, p.name, MAX_OUTPUT_BYTES)
                continue
            out.append((p.name, p.read_bytes()))
        return out

    def _job_env(self, a: pb.Assignment, spec) -> dict[str, str]:
        env = {"FEDCTL_JOB_ID": a.job_id, "FEDCTL_ATTEMPT": str(a.attempt), "FEDCTL_SITE": self.config.metadata.name}
        for d in self.config.spec.datasets:
            if d.name in spec.spec.datasets:
                env["FEDCTL_DATASET_" + d.name.upper().replace("-", "_")] = d.path
        if spec.spec.checkpoint is not None:
            env["FEDCTL_CHECKPOINT_PATH"] = spec.spec.checkpoint.path.replace("{job_id}", a.job_id)
            if a.attempt > 1:   # an earlier attempt was lost, failed or preempted: carry on from its checkpoint
                env["FEDCTL_RESUME"] = "1"
        return env

    def _report(self, observed: dict[str, RayJob]) -> pb.ConnectRequest:
        statuses, logs, outputs = [], [], []
        for sid, job in sorted(observed.items()):
            job_id, number = parse_submission_id(sid)
            if job.status == "SUCCEEDED" and sid in self.desired:
                # Sent with the terminal status until the federation takes both in.
                outputs += [pb.Output(job_id=job_id, attempt=number, name=name, data=data)
                            for name, data in self._outputs(sid)]
            if not (sid in self.local and sid in self.desired):   # else this site's own word, below
                statuses.append(pb.AttemptStatus(job_id=job_id, attempt=number,
                                                 state=wire.ATTEMPT_STATE_TO_PB[RAY_TO_ATTEMPT[job.status]],
                                                 message=_ended_message(job) if job.terminal else ""))
            if sid in self.watched and sid not in self.logs_done and job.status != "PENDING":
                chunk = self._new_log_bytes(sid)
                if chunk is None:
                    pass  # Ray did not answer; try again next pass
                elif chunk[1]:
                    logs.append(pb.LogChunk(job_id=job_id, attempt=number, offset=chunk[0], data=chunk[1]))
                elif job.terminal:
                    self.logs_done.add(sid)  # Ray writes no more once a job ended
        for sid, decided in sorted(self.local.items()):
            if sid in self.desired:
                job_id, number = parse_submission_id(sid)
                statuses.append(pb.AttemptStatus(job_id=job_id, attempt=number,
                                                 state=wire.ATTEMPT_STATE_TO_PB[decided.state], message=decided.message))
        # Forget local decisions the federation has taken in, and attempts Ray no longer holds.
        self.local = {sid: d for sid, d in self.local.items() if sid in self.desired}
        self.watched &= set(observed) | set(self.desired)
        self._forget_io(observed)
        return pb.ConnectRequest(site=self.config.metadata.name, statuses=statuses, logs=logs, outputs=outputs,
                                 complete=True)

    def _forget_io(self, observed: dict[str, RayJob]) -> None:
        """Remove the folders of attempts that ended and that the federation no longer wants."""
        if not self.io_root.is_dir():
            return
        for root in self.io_root.iterdir():
            job = observed.get(root.name)
            if root.name not in self.desired and (job is None or job.terminal):
                shutil.rmtree(root, ignore_errors=True)

    def _new_log_bytes(self, sid: str) -> tuple[int, bytes] | None:
        """(offset, bytes not yet sent), or None when Ray cannot be read."""
        try:
            data = self.driver.logs(sid)
        except RayError:
            return None
        start = self.shipped.get(sid, 0)
        chunk = data[start:start + MAX_LOG_CHUNK]
        self.shipped[sid] = start + len(chunk)
        return start, chunk


def _ended_message(job: RayJob) -> str:
    """Ray's message, or the binding wrapper's own line when Ray could not honour a reservation."""
    if job.status == "FAILED" and MISMATCH in job.message:
        line = next(ln for ln in job.message.splitlines() if MISMATCH in ln)
        return "failed reservation: " + line[line.index(MISMATCH):][:450]
    return job.message[:500]


class SiteAgent:
    """Runs until `stop()`: registers, heartbeats, and keeps one Connect stream open."""

    def __init__(self, config: SiteConfig, driver: RayDriver, channel_factory: Callable[[], grpc.Channel],
                 *, pass_interval_s: float = 0.5) -> None:
        self.config = config
        self.name = config.metadata.name
        self.driver = driver
        self.channel_factory = channel_factory
        self.pass_interval_s = pass_interval_s
        self.reconciler = Reconciler(config, driver)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.heartbeat_interval_s = 2.0
        self._published = ""   # digest of the inventory the federation has
        self.lease_s = 0.0     # from the federation at registration; 0: no lease (never fence)
        self._renewed = time.monotonic()   # when the last acknowledged registration or heartbeat was sent

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def run(self) -> None:
        """Reconnects with backoff on any error but a refusal: a revoked certificate or a claim
        the enrolment does not allow will not change by retrying, so it ends the agent."""
        backoff = Backoff()
        threading.Thread(target=self._watch_lease, daemon=True, name="lease").start()
        while not self._stop.is_set():
            channel = self.channel_factory()
            session_over = threading.Event()
            try:
                stub = pb_grpc.SiteServiceStub(channel)
                self._register(stub)
                backoff.reset()
                threading.Thread(target=self._heartbeats, args=(stub, session_over), daemon=True,
                                 name="heartbeat").start()
                self._stream(stub, session_over)
            except PermissionDenied:
                raise
            except FederationError as e:
                if not self._stop.is_set():
                    log.warning("federation: %s; retrying", e.message)
            finally:
                session_over.set()
                channel.close()
            self._stop.wait(backoff.next())

    def _watch_lease(self) -> None:
        """Fence this site's work when its lease runs out. The lease is counted from when the last
        acknowledged heartbeat was *sent*, which is before the federation received it, so the site
        stops its work at least a third of a lease before the federation may re-place it."""
        while not self._stop.wait(0.25):
            if self.config.spec.autonomous or not self.lease_s:
                continue
            silent = time.monotonic() - self._renewed
            if silent > self.lease_s * FENCE_AT and not self.reconciler.fenced:
                reason = f"lease expired (no heartbeat acknowledged for {silent:.1f}s of a {self.lease_s:g}s lease)"
                n = self.reconciler.fence(reason)
                log.warning("fenced: %s; stopped %d jobs, starting none until the federation answers", reason, n)

    def _capacity(self) -> Capacity | None:
        try:
            return site_capacity(self.config.spec.capacity, self.driver)
        except RayError as e:
            log.warning("inventory: %s", e.message)
            return None

    def _inventory(self) -> pb.Inventory:
        gpus = site_gpus(self.config, self.driver)
        self.reconciler.gpus = gpus
        return wire.inventory_to_pb(gpus.inventory)

    def _register(self, stub: pb_grpc.SiteServiceStub) -> None:
        body = self.config.spec
        capacity = self._capacity() or Capacity()
        inventory = self._inventory()
        self._published = inventory.digest
        request = pb.RegisterSiteRequest(
            name=self.name, location=pb.Location(jurisdiction=body.location.jurisdiction, region=body.location.region),
            labels=body.labels, capacity=wire.capacity_to_pb(capacity), agent_version="0.1.0", inventory=inventory,
            datasets=[pb.Dataset(name=d.name, classification=d.classification, path=d.path) for d in body.datasets],
            autonomous=body.autonomous, agreement_key=self.reconciler.agreement_key().public)
        sent = time.monotonic()
        try:
            response = stub.RegisterSite(request, timeout=10)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        self._renewed = sent
        self.heartbeat_interval_s = response.heartbeat_interval_s or 2.0
        self.lease_s = response.lease_s
        log.info("registered %s with the federation", self.name)

    def _fetch_input(self, stub) -> Callable[[str, int, str], bytes]:
        def fetch(job_id: str, attempt: int, name: str) -> bytes:
            try:
                return stub.GetInput(pb.GetInputRequest(site=self.name, job_id=job_id, attempt=attempt, name=name),
                                     timeout=60).data
            except grpc.RpcError as e:
                raise from_rpc_error(e) from None
        return fetch

    def _heartbeats(self, stub: pb_grpc.SiteServiceStub, session_over: threading.Event) -> None:
        while not session_over.wait(self.heartbeat_interval_s):
            request = pb.HeartbeatRequest(name=self.name)
            capacity = self._capacity()
            if capacity is not None:
                request.capacity.CopyFrom(wire.capacity_to_pb(capacity))
            inventory = self._inventory()
            if inventory.digest != self._published:
                request.inventory.CopyFrom(inventory)  # only when it changed: a GPU lost, a node added
            sent = time.monotonic()
            try:
                stub.Heartbeat(request, timeout=min(5.0, self.lease_s / 3 or 5.0))
                self._renewed = sent
                self._published = inventory.digest
                if self._renew(stub):
                    session_over.set()  # the next session connects with the new certificate
                    self._wake.set()
                    return
            except grpc.RpcError as e:
                err = from_rpc_error(e)
                if isinstance(err, NotFound):
                    log.warning("federation forgot this site; re-registering")
                    session_over.set()
                    self._wake.set()
                    return

    def _renew(self, stub: pb_grpc.SiteServiceStub) -> bool:
        """Renew the site's certificate when it nears expiry; whether it was renewed."""
        tls = self.config.spec.federation.tls
        if tls is None or not renewal.due(tls.cert):
            return False
        try:
            renewal.renew(stub, tls.cert, tls.key)
        except (grpc.RpcError, OSError) as e:
            log.warning("certificate renewal failed (the current one still works): %s", e)
            return False
        log.info("certificate renewed: %s", tls.cert)
        return True

    def _stream(self, stub: pb_grpc.SiteServiceStub, session_over: threading.Event) -> None:
        outbox: queue.Queue[pb.ConnectRequest | None] = queue.Queue()
        self.reconciler.fetch_input = self._fetch_input(stub)
        self.reconciler.new_stream()
        first = self.reconciler.reconcile()
        outbox.put(first or pb.ConnectRequest(site=self.name))
        responses = stub.Connect(_drain(outbox))
        reader_error: list[BaseException] = []
        reader = threading.Thread(target=self._read, args=(responses, reader_error), daemon=True, name="assignments")
        reader.start()
        last_report, last_sent = first, time.monotonic()
        last_pass = time.monotonic()
        try:
            while not self._stop.is_set() and reader.is_alive() and not session_over.is_set():
                starting = bool(self.reconciler.starting)
                woken = self._wake.wait(FAST_PASS_S if starting else self.pass_interval_s)
                self._wake.clear()
                if (starting and not woken and time.monotonic() - last_pass < self.pass_interval_s
                        and not self.reconciler.any_started()):
                    continue  # between full passes, only ask Ray about attempts that are starting
                last_pass = time.monotonic()
                report = self.reconciler.reconcile()
                if report is None:
                    continue
                now = time.monotonic()
                if report != last_report or report.logs or now - last_sent >= REPORT_EVERY_S:
                    outbox.put(report)
                    last_report, last_sent = report, now
        finally:
            outbox.put(None)
            responses.cancel()
            reader.join(timeout=5)
        if reader_error:
            raise reader_error[0]

    def _read(self, responses: Iterator[pb.ConnectResponse], errors: list[BaseException]) -> None:
        try:
            for response in responses:
                self.reconciler.set_desired(list(response.assignments))
                self._wake.set()
        except grpc.RpcError as e:
            if e.code() is not grpc.StatusCode.CANCELLED:
                errors.append(from_rpc_error(e))
        finally:
            self._wake.set()


def _drain(outbox: queue.Queue) -> Iterator[pb.ConnectRequest]:
    while True:
        item = outbox.get()
        if item is None:
            return
        yield item


class Backoff:
    """Exponential backoff with full jitter, capped."""

    def __init__(self, base: float = 0.2, cap: float = 5.0) -> None:
        self.base, self.cap, self.attempt = base, cap, 0

    def reset(self) -> None:
        self.attempt = 0

    def next(self) -> float:
        delay = min(self.cap, self.base * 2 ** self.attempt)
        self.attempt += 1
        return random.uniform(0, delay)
