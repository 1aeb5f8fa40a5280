"""The agent loop: register, heartbeat, and keep one Connect stream open, over which the
federation's desired attempts arrive and the reconciler's reports go up.

The reconcile pass itself is `site_agent.reconciler` (observe, plan, apply); this module only
paces it, and fences the site's work when its lease runs out.
"""
from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator

import grpc

from federation.errors import ConfigError, FederationError, NotFound, PermissionDenied, RayError, Unavailable
from federation.pricing import elastic_of, elastic_to_pb, pricing_of, pricing_to_pb
from federation.service import wire
from federation.service.errors import from_rpc_error
from federation.sites import Capacity
from federation.spec import SiteConfig
from federation.v1 import federation_pb2 as pb
from federation.v1 import federation_pb2_grpc as pb_grpc
from site_agent import anchor, lease_file, renewal, witness
from site_agent.elastic import nodes_up
from site_agent.files import Fetch, work_dir
from site_agent.guard import GUARD_AT
from site_agent.inventory import site_capacity, site_gpus
from site_agent.lease_file import FENCE_AT
from site_agent.metrics import AgentMetrics
from site_agent.plan import ASK_AT, fence_reason
from site_agent.ray_driver import RayDriver
from site_agent.reconciler import Reconciler

log = logging.getLogger("site_agent")

REPORT_EVERY_S = 5.0
FAST_PASS_S = 0.02      # while an attempt is starting, so "running" is seen within tens of ms


class SiteAgent:
    """Runs until `stop()`: registers, heartbeats, and keeps one Connect stream open."""

    def __init__(self, config: SiteConfig, driver: RayDriver, channel_factory: Callable[[str], grpc.Channel],
                 *, pass_interval_s: float = 0.5) -> None:
        self.config = config
        self.name = config.metadata.name
        self.driver = driver
        self.channel_factory = channel_factory
        fed = config.spec.federation
        self.addresses = list(dict.fromkeys([fed.address, *fed.replicas]))
        self.address = fed.address   # where the next session connects: the leader, when known
        self.pass_interval_s = pass_interval_s
        self.reconciler = Reconciler(config, driver)
        self.metrics = AgentMetrics()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.heartbeat_interval_s = 2.0
        self._published = ""   # digest of the inventory the federation has
        self.lease_s = 0.0     # from the federation at registration; 0: no lease (never fence)
        self._renewed = time.monotonic()   # when the last acknowledged registration or heartbeat was sent
        self._saved = 0.0
        self.lease_file = lease_file.lease_path(work_dir(config), self.name)
        try:
            lease_file.prepare(self.lease_file)
        except PermissionError as e:
            raise ConfigError(f"spec.work_dir: {e}") from None
        kept = lease_file.load(self.lease_file)
        if kept is not None:   # a restart: the lease runs from when it was renewed before, not from now
            silent = max(0.0, time.time() - kept.renewed_at)
            self.lease_s = kept.lease_s
            self._renewed -= silent
            # Down long enough for its attempts' guards to have stopped them: those are lost, not failed.
            self.reconciler.guards_fired = bool(kept.lease_s) and silent > kept.lease_s * GUARD_AT
        self.anchor = anchor.anchor_path(self.reconciler.files.root.parent, self.name)
        self._anchor_warning = ""
        self._outage = False   # the replicas said nobody leads; until the next registration

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def run(self) -> None:
        """Reconnects with backoff on any error but a refusal: a revoked certificate or a claim
        the enrolment does not allow will not change by retrying, so it ends the agent."""
        backoff = Backoff()
        threading.Thread(target=self._watch_lease, daemon=True, name="lease").start()
        while not self._stop.is_set():
            channel = self.channel_factory(self.address)
            session_over = threading.Event()
            try:
                stub = pb_grpc.SiteServiceStub(channel)
                self._register(stub)
                self.metrics.connected.set(1)
                backoff.reset()
                # Back within a quarter of the lease once the federation returns: a restarted federation
                # counts leases from its own start, and must not find this site silent for a whole one.
                backoff.cap = min(Backoff.CAP, self.lease_s / 4) if self.lease_s else Backoff.CAP
                threading.Thread(target=self._heartbeats, args=(stub, session_over), daemon=True,
                                 name="heartbeat").start()
                self._stream(stub, session_over)
            except PermissionDenied:
                raise
            except FederationError as e:
                if not self._stop.is_set():
                    log.warning("federation at %s: %s; retrying", self.address, e.message)
                    if len(self.addresses) > 1:   # with one address there is nobody else to follow
                        self._follow(witness.ask(self.addresses, self.channel_factory, self.name, 2.0).leader)
            finally:
                self.metrics.connected.set(0)
                session_over.set()
                channel.close()
            self._stop.wait(backoff.next())

    def _watch_lease(self) -> None:
        """Fence this site's work when its lease runs out. The lease is counted from when the last
        acknowledged heartbeat was *sent*, which is before the federation received it, so the site
        stops its work at least a third of a lease before the federation may re-place it."""
        while not self._stop.wait(0.25):
            if self.config.spec.autonomous or self.reconciler.fenced:
                continue
            if fence_reason(time.monotonic(), self._renewed, self.lease_s, at=ASK_AT) is None:
                continue   # heartbeats renew it
            if self._federation_down():
                continue   # renewed on the witnesses' word
            reason = fence_reason(time.monotonic(), self._renewed, self.lease_s)
            if reason:
                n = self.reconciler.fence(reason)
                log.warning("fenced: %s; stopped %d jobs, starting none until the federation answers", reason, n)

    def _federation_down(self) -> bool:
        """Whether the replicas and witnesses say nobody leads: then nobody can re-place this site's
        work, and their answer renews the lease, counted from when it was asked (a replica that
        takes the lead after that counts this site's lease from then)."""
        asked = time.monotonic()
        verdict = witness.ask(self.addresses, self.channel_factory, self.name, max(0.5, min(2.0, self.lease_s / 10)))
        self._follow(verdict.leader)
        if not verdict.federation_down:
            return False
        if not self._outage:
            log.warning("nobody can re-place this site's work (%s): keeping it running", verdict.down_by)
        self._outage = True
        self._renew_lease(asked)
        return True

    def _renew_lease(self, sent: float) -> None:
        """The lease runs from `sent` (monotonic); kept on disk a few times a lease, for a restart."""
        self._renewed = sent
        if self.lease_s and time.monotonic() - self._saved >= self.lease_s / 6:
            try:
                ago = time.monotonic() - sent
                lease_file.save(self.lease_file, lease_file.Lease(self.lease_s, time.time() - ago,
                                                                  lease_file.now_boot() - ago))
                self._saved = time.monotonic()
            except OSError as e:
                log.warning("cannot keep the lease in %s: %s", self.lease_file, e)

    def _follow(self, leader: str) -> None:
        """Connect next to the leader named, when it is one of this site's addresses; else the next one."""
        if leader in self.addresses:
            self.address = leader
        elif len(self.addresses) > 1:
            self.address = self.addresses[(self.addresses.index(self.address) + 1) % len(self.addresses)]

    def _capacity(self) -> Capacity | None:
        try:
            return site_capacity(self.config.spec.capacity, self.driver)
        except RayError as e:
            log.warning("inventory: %s", e.message)
            return None

    def _nodes_up(self) -> dict[str, int] | None:
        """An elastic site's nodes alive per type; None for a fixed site or while Ray does not answer."""
        elastic = self.config.spec.elastic
        if elastic is None:
            return None
        try:
            return nodes_up(self.driver.nodes(), elastic)
        except RayError as e:
            log.warning("elastic nodes: %s", e.message)
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
            datasets=[pb.Dataset(name=d.name, classification=d.classification, path=d.path, size_bytes=d.size or 0)
                      for d in body.datasets],
            autonomous=body.autonomous, agreement_key=self.reconciler.files.agreement_key().public,
            agreement_proof=self.reconciler.files.agreement_proof(),
            pricing=pricing_to_pb(pricing_of(body.pricing)) if body.pricing else None,
            elastic=elastic_to_pb(elastic_of(body.elastic, self._nodes_up())) if body.elastic else None)
        sent = time.monotonic()
        try:
            response = stub.RegisterSite(request, timeout=10)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        self._outage = False
        self.heartbeat_interval_s = response.heartbeat_interval_s or 2.0
        self.lease_s = response.lease_s
        self._saved = 0.0
        self._renew_lease(sent)
        self.reconciler.classified = {d.name: d.classification for d in response.datasets}
        log.info("registered %s with the federation", self.name)

    def _fetch_input(self, stub: pb_grpc.SiteServiceStub) -> Fetch:
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
            for name, n in (self._nodes_up() or {}).items():
                request.nodes_up[name] = n
            sent = time.monotonic()
            try:
                response = stub.Heartbeat(request, timeout=min(5.0, self.lease_s / 3 or 5.0))
                self._renew_lease(sent)
                self._keep_anchor(response)
                self._published = inventory.digest
                if self._renew(stub):
                    session_over.set()  # the next session connects with the new certificate
                    self._wake.set()
                    return
            except grpc.RpcError as e:
                err = from_rpc_error(e)
                if isinstance(err, (NotFound, Unavailable)):
                    # Forgotten (re-register), or a replica that no longer leads (find the one that does).
                    log.warning("heartbeat: %s; connecting again", err.message)
                    session_over.set()
                    self._wake.set()
                    return

    def _keep_anchor(self, response: pb.HeartbeatResponse) -> None:
        """Keep the federation's audit head outside it (`site_agent.anchor`); warn once per refusal."""
        if not response.HasField("audit_head"):
            return
        try:
            warning = anchor.keep(self.anchor, response.audit_head.seq, response.audit_head.hash,
                                  self.config.spec.federation.address)
        except OSError as e:
            warning = f"cannot keep the federation's audit head in {self.anchor}: {e}"
        if warning and warning != self._anchor_warning:
            log.warning("%s", warning)
        self._anchor_warning = warning

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

    def _reconcile(self) -> pb.ConnectRequest | None:
        started = time.perf_counter()
        report = self.reconciler.reconcile()
        running = sum(s.state == pb.ATTEMPT_STATE_RUNNING for s in report.statuses) if report is not None else 0
        self.metrics.passed(time.perf_counter() - started, report is not None, running)
        return report

    def lease_left(self, now: float) -> float:
        """Seconds until this site fences its work unless a heartbeat is acknowledged; 0 without a lease."""
        return max(0.0, self._renewed + self.lease_s * FENCE_AT - now) if self.lease_s else 0.0

    def _stream(self, stub: pb_grpc.SiteServiceStub, session_over: threading.Event) -> None:
        outbox: queue.Queue[pb.ConnectRequest | None] = queue.Queue()
        self.reconciler.fetch_input = self._fetch_input(stub)
        self.reconciler.new_stream()
        first = self._reconcile()
        outbox.put(first or pb.ConnectRequest(site=self.name))
        responses = stub.Connect(_drain(outbox))
        reader_error: list[BaseException] = []
        reader = threading.Thread(target=self._read, args=(responses, reader_error), daemon=True, name="assignments")
        reader.start()
        if self.driver.runs_tasks:
            threading.Thread(target=self._watch_tasks, args=(session_over,), daemon=True, name="task-ends").start()
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
                report = self._reconcile()
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

    def _watch_tasks(self, session_over: threading.Event) -> None:
        """A pass as soon as a task of the site's runner ends, not at the next interval: a short job's
        slot goes back to the federation within milliseconds."""
        version = 0
        while not (self._stop.is_set() or session_over.is_set()):
            try:
                now = self.driver.changes(version, self.pass_interval_s * 2)
            except Exception as e:   # Busy among them: no runner yet, or one starting; passes go on meanwhile
                log.debug("waiting for the task runner's changes: %s", getattr(e, "message", e))
                session_over.wait(self.pass_interval_s)
                continue
            if now != version:
                version = now
                self._wake.set()

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

    CAP = 5.0

    def __init__(self, base: float = 0.2, cap: float = CAP) -> None:
        self.base, self.cap, self.attempt = base, cap, 0

    def reset(self) -> None:
        self.attempt = 0

    def next(self) -> float:
        delay = min(self.cap, self.base * 2 ** self.attempt)
        self.attempt += 1
        return random.uniform(0, delay)
