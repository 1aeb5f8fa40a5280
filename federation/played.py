"""A site's agent played over the wire, for tests and benchmarks: real gRPC and mutual TLS, its own
certificate, no Ray. It follows the leader across the federation's replicas, runs each
assignment for `hold_s` and reports it succeeded; `stopped` collects attempts the federation
dropped from its desired set while they ran (what a real agent would have stopped)."""
from __future__ import annotations

import itertools
import queue
import threading
import time

import grpc

from federation.pki import Issued
from federation.transport import open_channel
from federation.v1 import federation_pb2 as pb
from federation.v1 import federation_pb2_grpc as pb_grpc


class PlayedSite(threading.Thread):
    """A site's agent over the wire that follows the leader across replicas: each assignment runs
    for `hold_s` and succeeds; `stopped` collects attempts the federation dropped while running."""

    def __init__(self, name: str, addresses: list[str], pki: dict[str, Issued], hold_s: float = 0.3) -> None:
        super().__init__(daemon=True, name=name)
        self.site, self.addresses, self.pki, self.hold_s = name, addresses, pki, hold_s
        self.running: dict[str, pb.Assignment] = {}
        self.ended: set[str] = set()
        self.stopped: set[str] = set()
        self.placed: list[tuple[str, float]] = []   # (job id, when its assignment arrived)
        self.done = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        for address in itertools.cycle(self.addresses):
            if self.done.is_set():
                return
            try:
                self._session(address)
            except grpc.RpcError:
                self.done.wait(0.2)

    def _session(self, address: str) -> None:
        key = self.pki[self.site]
        channel = open_channel(address, ca=self.pki["ca"].cert, cert=key.cert, key=key.key)
        try:
            stub = pb_grpc.SiteServiceStub(channel)
            stub.RegisterSite(pb.RegisterSiteRequest(
                name=self.site, location=pb.Location(jurisdiction="DE", region=self.site),
                capacity=pb.Resources(cpus=1e6, memory_bytes=2**50)), timeout=5)
            outbox: queue.Queue = queue.Queue()
            with self.lock:
                outbox.put(pb.ConnectRequest(site=self.site, statuses=[
                    pb.AttemptStatus(job_id=a.job_id, attempt=a.attempt, state=pb.ATTEMPT_STATE_RUNNING)
                    for a in self.running.values()]))
            over = threading.Event()
            threading.Thread(target=self._beat, args=(stub, over), daemon=True).start()
            try:
                for response in stub.Connect(iter(outbox.get, None)):
                    self._desired(list(response.assignments), outbox)
            finally:
                over.set()
                outbox.put(None)
        finally:
            channel.close()

    def _beat(self, stub: pb_grpc.SiteServiceStub, over: threading.Event) -> None:
        while not over.wait(1.0) and not self.done.is_set():
            try:
                stub.Heartbeat(pb.HeartbeatRequest(name=self.site), timeout=3)
            except grpc.RpcError:
                return

    def _desired(self, assignments: list[pb.Assignment], outbox: queue.Queue) -> None:
        desired = {a.submission_id: a for a in assignments}
        statuses = []
        with self.lock:
            self.stopped |= set(self.running) - set(desired)
            for sid, a in desired.items():
                if sid in self.ended:   # its end may not have reached a leader that died: say it again
                    statuses.append(pb.AttemptStatus(job_id=a.job_id, attempt=a.attempt,
                                                     state=pb.ATTEMPT_STATE_SUCCEEDED))
                elif sid not in self.running:
                    self.running[sid] = a
                    self.placed.append((a.job_id, time.time()))
                    statuses.append(pb.AttemptStatus(job_id=a.job_id, attempt=a.attempt,
                                                     state=pb.ATTEMPT_STATE_RUNNING))
                    threading.Timer(self.hold_s, self._end, args=(sid, outbox)).start()
        if statuses:
            outbox.put(pb.ConnectRequest(site=self.site, statuses=statuses))

    def _end(self, sid: str, outbox: queue.Queue) -> None:
        with self.lock:
            a = self.running.pop(sid, None)
            if a is None:
                return
            self.ended.add(sid)
        outbox.put(pb.ConnectRequest(site=self.site, statuses=[
            pb.AttemptStatus(job_id=a.job_id, attempt=a.attempt, state=pb.ATTEMPT_STATE_SUCCEEDED)]))


def leader_at(address: str, pki: dict[str, Issued], site: str = "site-a") -> str:
    """The address of the leader, as the replica at `address` sees it; "" when none or no answer."""
    channel = open_channel(address, ca=pki["ca"].cert, cert=pki[site].cert, key=pki[site].key)
    try:
        answer = pb_grpc.SiteServiceStub(channel).Leader(pb.LeaderRequest(site=site), timeout=2)
        return answer.address if answer.live else ""
    except grpc.RpcError:
        return ""
    finally:
        channel.close()
