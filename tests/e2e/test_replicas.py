"""Two federation replicas, real `fedctl server` processes on one real PostgreSQL database, with
sites played over mutual TLS: the leader is killed with -9 in the middle of a stream of 2,000
submissions. The other replica leads within the sites' lease, no submission is lost or stored
twice, every job ends once, and no site is ever told to stop work it was running."""
from __future__ import annotations

import itertools
import queue
import signal
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import yaml

from federation.client import Client
from federation.local import LocalFederation, fedctl, free_port, stop_processes
from federation.pki import Issued
from federation.transport import open_channel
from federation.v1 import federation_pb2 as pb
from federation.v1 import federation_pb2_grpc as pb_grpc
from tests.conftest import make_spec
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

LEASE_S = 6.0
JOBS, KILL_AFTER = 2000, 500
SITES = {name: {"location": {"jurisdiction": "DE", "region": name}} for name in ("site-a", "site-b")}


class PlayedSite(threading.Thread):
    """A site's agent over the wire that follows the leader across replicas: each assignment runs
    for `hold_s` and succeeds; `stopped` collects attempts the federation dropped while running."""

    def __init__(self, name: str, addresses: list[str], pki: dict[str, Issued], hold_s: float = 0.3) -> None:
        super().__init__(daemon=True, name=name)
        self.site, self.addresses, self.pki, self.hold_s = name, addresses, pki, hold_s
        self.running: dict[str, pb.Assignment] = {}
        self.ended: set[str] = set()
        self.stopped: set[str] = set()
        self.assigned_at: list[float] = []
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
                    self.assigned_at.append(time.time())
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


def replica_config(fed: LocalFederation, name: str, address: str, database: str) -> Path:
    data = yaml.safe_load(fed.config.read_text())
    data["metadata"]["name"] = name
    data["spec"].update(listen=address, database=database, audit={"key": str(fed.work / "audit.pem")})
    path = fed.work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def start_replica(fed: LocalFederation, config: Path) -> subprocess.Popen:
    log = open(fed.work / f"{config.stem}.log", "ab")  # noqa: SIM115  # the child process keeps it open
    return subprocess.Popen(fedctl("server", "start", "--config", str(config)), stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=fed.env)


def leader_address(address: str, pki: dict[str, Issued]) -> str:
    channel = open_channel(address, ca=pki["ca"].cert, cert=pki["site-a"].cert, key=pki["site-a"].key)
    try:
        answer = pb_grpc.SiteServiceStub(channel).Leader(pb.LeaderRequest(site="site-a"), timeout=2)
        return answer.address if answer.live else ""
    except grpc.RpcError:
        return ""
    finally:
        channel.close()


def test_killing_the_leader_mid_stream_loses_duplicates_and_stops_nothing(tmp_path, postgres_url):
    fed = LocalFederation(work=tmp_path, sites=SITES, port_bases={}, site_timeout_s=LEASE_S,
                          scheduler_interval_s=0.1)
    addresses = [fed.address, f"127.0.0.1:{free_port()}"]
    first = start_replica(fed, replica_config(fed, "replica-1", addresses[0], postgres_url))
    wait_for(lambda: leader_address(addresses[0], fed.pki) == addresses[0], 30, "replica-1 to lead")
    second = start_replica(fed, replica_config(fed, "replica-2", addresses[1], postgres_url))
    sites = [PlayedSite(name, addresses, fed.pki) for name in SITES]
    for s in sites:
        s.start()
    client = Client(addresses, ca=fed.pki["ca"].cert, cert=fed.pki["admin"].cert, key=fed.pki["admin"].key,
                    timeout=60)
    acknowledged: dict[str, str] = {}
    killed_at = 0.0

    def submit(i: int) -> None:
        nonlocal killed_at
        request_id = uuid.uuid4().hex
        acknowledged[request_id] = client.submit(make_spec(f"stream-{i}", tenant="stream",
                                                           resources={"cpus": 0.01}), request_id).id
        if len(acknowledged) == KILL_AFTER and not killed_at:
            first.send_signal(signal.SIGKILL)
            killed_at = time.time()

    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(submit, range(JOBS)))
        assert killed_at, "the leader was killed mid-stream"
        wait_for(lambda: leader_address(addresses[1], fed.pki) == addresses[1], 30, "replica-2 to lead")
        jobs = wait_for(lambda: (js := client.jobs(tenant="stream", limit=None)) and
                        all(j.terminal for j in js) and len(js) >= JOBS and js, 180, "every job to end")
        assert len(set(acknowledged.values())) == JOBS, "each acknowledged submission is its own job"
        assert sorted(j.id for j in jobs) == sorted(acknowledged.values()), "nothing lost, nothing stored twice"
        assert {(j.state, len(j.attempts)) for j in jobs} == {("succeeded", 1)}, "every job ended once"
        assert all(not s.stopped for s in sites), [sorted(s.stopped)[:5] for s in sites]
        after = min(t for s in sites for t in s.assigned_at if t > killed_at)
        print(f"\nkill -9 of the leader to the first placement by the new one: {after - killed_at:.2f}s "
              f"({JOBS} submissions, the leader killed after {KILL_AFTER})")
    finally:
        for s in sites:
            s.done.set()
        client.close()
        stop_processes([p for p in (first, second) if p.poll() is None])
