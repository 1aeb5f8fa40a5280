"""What mutual TLS costs: submissions per second and submit-to-running latency, with and
without TLS, in one run.

    python -m bench.mtls [--submits 300] [--runs 30]

Two real federation servers in this process (gRPC, SQLite file, the scheduling loop),
one with mutual TLS and one plain text, each with one site whose agent side is played by
a raw Connect stream over the same kind of channel: it reports an attempt RUNNING as soon
as it is assigned, and SUCCEEDED right after, so "running" measures the federation and
the wire, not Ray, and the live set stays small. The two
servers alternate run by run so both see the same machine load.
"""
from __future__ import annotations

import argparse
import queue
import statistics
import tempfile
import threading
import time
from pathlib import Path

import grpc

from federation.client import Client
from federation.pki import init_pki
from federation.server import start_server
from federation.spec import job_from_dict
from federation.spec.server import FederationBody, FederationConfig, ServerTLS
from federation.transport import open_channel
from federation.v1 import federation_pb2 as pb
from federation.v1 import federation_pb2_grpc as pb_grpc

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SPEC = job_from_dict({"metadata": {"name": "bench", "tenant": "bench"},
                      "spec": {"entrypoint": "true", "resources": {"cpus": 0.001}}})


class Side:
    """One federation with its site and a client, over TLS or plain text."""

    def __init__(self, work: Path, tls: bool, **spec: object) -> None:
        """`spec`: more of the federation's spec (`metrics`, say)."""
        self.tls = tls
        self.pki = pki = init_pki(work / "pki", clients=("admin",),
                                  sites={"site": {"location": {"jurisdiction": "DE", "region": "eu"}}})
        body = FederationBody(listen="127.0.0.1:0", store=work / "fed.db", policy=CONFIGS / "policy.yaml",
                              scheduler={"interval_s": 0.05, "max_placements_per_cycle": 100_000}, **spec,
                              **({"tls": ServerTLS(cert=pki["server"].cert, key=pki["server"].key,
                                                   client_ca=pki["ca"].cert)} if tls else {"insecure": True}))
        self.server = start_server(FederationConfig(spec=body))
        address = f"127.0.0.1:{self.server.port}"
        creds = {"ca": pki["ca"].cert, "cert": pki["admin"].cert, "key": pki["admin"].key} if tls else \
            {"insecure": True}
        self.client = Client(address, timeout=30, **creds)
        site_creds = {"ca": pki["ca"].cert, "cert": pki["site"].cert, "key": pki["site"].key} if tls else \
            {"insecure": True}
        self.channel = open_channel(address, **site_creds)
        stub = pb_grpc.SiteServiceStub(self.channel)
        stub.RegisterSite(pb.RegisterSiteRequest(
            name="site", location=pb.Location(jurisdiction="DE", region="eu"),
            capacity=pb.Resources(cpus=1e6, memory_bytes=2**50)), timeout=10)
        self.outbox: queue.Queue = queue.Queue()
        self.outbox.put(pb.ConnectRequest(site="site"))
        self.responses = stub.Connect(iter(self.outbox.get, None))
        self.reported: set[str] = set()
        self.stub, self.stop = stub, threading.Event()
        threading.Thread(target=self._agent, daemon=True).start()
        threading.Thread(target=self._heartbeat, daemon=True).start()

    def _heartbeat(self) -> None:
        """A site the federation does not hear from for its lease gets no work placed."""
        while not self.stop.wait(1.0):
            try:
                self.stub.Heartbeat(pb.HeartbeatRequest(name="site"), timeout=10)
            except grpc.RpcError:
                pass   # closing

    def _agent(self) -> None:
        """Report every new assignment RUNNING at once, then SUCCEEDED."""
        try:
            for response in self.responses:
                new = [a for a in response.assignments if a.job_id not in self.reported]
                if new:
                    self.reported.update(a.job_id for a in new)
                    for state in (pb.ATTEMPT_STATE_RUNNING, pb.ATTEMPT_STATE_SUCCEEDED):
                        self.outbox.put(pb.ConnectRequest(site="site", statuses=[
                            pb.AttemptStatus(job_id=a.job_id, attempt=a.attempt, state=state) for a in new]))
        except Exception:
            pass  # the stream closes at the end

    def submit_rate(self, n: int) -> float:
        t = time.perf_counter()
        for _ in range(n):
            self.client.submit(SPEC)
        return n / (time.perf_counter() - t)

    def submit_to_running(self) -> float:
        t = time.perf_counter()
        job = self.client.submit(SPEC)
        for status in self.client.watch(job.id, timeout=30):
            if status.state in ("running", "succeeded"):
                return time.perf_counter() - t
        raise RuntimeError(f"{job.id} never ran")

    def close(self) -> None:
        self.stop.set()
        self.outbox.put(None)
        self.responses.cancel()
        self.channel.close()
        self.client.close()
        self.server.stop(grace=0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--submits", type=int, default=300, help="submissions timed for the rate, per side and round")
    p.add_argument("--runs", type=int, default=30, help="submit-to-running samples per side")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sides = {"mtls": Side(Path(tmp) / "mtls", True), "plain": Side(Path(tmp) / "plain", False)}
        try:
            rates: dict[str, list[float]] = {k: [] for k in sides}
            latency: dict[str, list[float]] = {k: [] for k in sides}
            for side in sides.values():
                side.submit_rate(20)  # warm up: connections, caches
            for _ in range(3):
                for name, side in sides.items():
                    rates[name].append(side.submit_rate(args.submits // 3))
            for _ in range(args.runs):
                for name, side in sides.items():
                    latency[name].append(side.submit_to_running())
        finally:
            for side in sides.values():
                side.close()
    print(f"{'channel':<8} {'submits/s':>10} {'run p50 ms':>11} {'run p95 ms':>11}")
    for name in sides:
        lat = sorted(latency[name])
        print(f"{name:<8} {statistics.median(rates[name]):>10.0f} {statistics.median(lat) * 1000:>11.1f} "
              f"{lat[int(0.95 * (len(lat) - 1))] * 1000:>11.1f}")
    print(f"mtls/plain: submits/s x{statistics.median(rates['mtls']) / statistics.median(rates['plain']):.2f}, "
          f"submit-to-running p50 x{statistics.median(latency['mtls']) / statistics.median(latency['plain']):.2f}")


if __name__ == "__main__":
    main()
