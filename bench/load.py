"""Load: many submissions through the SDK against one federation process with several sites,
and the same kind of trivial job submitted to a local Ray Jobs API directly, in one run.

    python -m bench.load [--jobs 10000] [--threads 8] [--ray-jobs N]

The federation is a real `fedctl server start` process (mutual TLS, SQLite file, scheduling
loop). Its sites are played in this process by raw Connect streams that report each assignment
running and then succeeded at once, so the figures measure the federation and the wire, not
Ray. Every job must end succeeded exactly once: the run fails if one is lost or stored twice.
The Ray baseline submits as many `true` jobs (unless `--ray-jobs` says otherwise) from as many
threads to a private Ray head's Jobs API, with its token, each asking for the head's one CPU.
"""
from __future__ import annotations

import argparse
import os
import queue
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from federation.local import LocalFederation
from federation.spec import job_from_dict
from federation.transport import open_channel
from federation.v1 import federation_pb2 as pb
from federation.v1 import federation_pb2_grpc as pb_grpc

SPEC = job_from_dict({"metadata": {"name": "load", "tenant": "load"},
                      "spec": {"entrypoint": "true", "resources": {"cpus": 0.01}}})
SITES = ("site-a", "site-b", "site-c")


class PlayedSite:
    """A site's agent played over the wire: registers, heartbeats, and ends every assignment."""

    def __init__(self, fed: LocalFederation, name: str) -> None:
        self.name = name
        self.channel = open_channel(fed.address, ca=fed.pki["ca"].cert, cert=fed.pki[name].cert,
                                    key=fed.pki[name].key)
        self.stub = pb_grpc.SiteServiceStub(self.channel)
        self.stub.RegisterSite(pb.RegisterSiteRequest(
            name=name, location=pb.Location(jurisdiction="DE", region=name),
            capacity=pb.Resources(cpus=1e6, memory_bytes=2**50)), timeout=10)
        self.stop = threading.Event()
        self.outbox: queue.Queue = queue.Queue()
        self.outbox.put(pb.ConnectRequest(site=name))
        self.responses = self.stub.Connect(iter(self.outbox.get, None))
        self.ended: set[str] = set()
        threading.Thread(target=self._agent, daemon=True).start()
        threading.Thread(target=self._heartbeat, daemon=True).start()

    def _heartbeat(self) -> None:
        while not self.stop.wait(1.0):
            self.stub.Heartbeat(pb.HeartbeatRequest(name=self.name), timeout=10)

    def _agent(self) -> None:
        try:
            for response in self.responses:
                new = [a for a in response.assignments if a.submission_id not in self.ended]
                self.ended.update(a.submission_id for a in new)
                for state in (pb.ATTEMPT_STATE_RUNNING, pb.ATTEMPT_STATE_SUCCEEDED):
                    if new:
                        self.outbox.put(pb.ConnectRequest(site=self.name, statuses=[
                            pb.AttemptStatus(job_id=a.job_id, attempt=a.attempt, state=state) for a in new]))
        except Exception:
            pass   # the stream closes at the end

    def close(self) -> None:
        self.stop.set()
        self.outbox.put(None)
        self.responses.cancel()
        self.channel.close()


def timed_submits(n: int, threads: int, submit) -> tuple[float, list[float], list]:
    """(submissions per second, latencies, results) of n calls of `submit(i)` from `threads` threads."""
    latencies: list[float] = [0.0] * n
    results: list = [None] * n

    def one(i: int) -> None:
        t = time.perf_counter()
        results[i] = submit(i)
        latencies[i] = time.perf_counter() - t

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(n)))
    return n / (time.perf_counter() - start), latencies, results


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


def federation_load(work: Path, jobs: int, threads: int) -> dict:
    fed = LocalFederation(work=work, sites={name: {} for name in SITES}, port_bases={}, scheduler_interval_s=0.2)
    fed.start_server()
    sites = [PlayedSite(fed, name) for name in SITES]
    clients = [fed.client(timeout=60) for _ in range(threads)]
    try:
        for i in range(50):   # warm up
            clients[0].submit(SPEC)
        rate, latencies, submitted = timed_submits(jobs, threads, lambda i: clients[i % threads].submit(SPEC).id)
        deadline = time.monotonic() + 600
        stored = []
        while time.monotonic() < deadline:
            stored = clients[0].jobs(tenant="load", limit=jobs + 1000)
            if sum(1 for s in stored if s.state == "succeeded") == len(stored) == jobs + 50:
                break
            time.sleep(1.0)
        ids = [s.id for s in stored]
        lost = set(submitted) - set(ids)
        duplicated = len(ids) - len(set(ids)) + (len(set(ids)) - jobs - 50)
        unfinished = sum(1 for s in stored if s.state != "succeeded")
        ran_twice = sum(1 for s in stored if len(s.attempts) != 1)
        return {"rate": rate, "p50": pct(latencies, 0.5), "p99": pct(latencies, 0.99), "lost": len(lost),
                "duplicated": duplicated, "unfinished": unfinished, "ran_twice": ran_twice}
    finally:
        for c in clients:
            c.close()
        for s in sites:
            s.close()
        fed.shutdown()


def ray_load(work: Path, jobs: int, threads: int) -> dict:
    from federation.spec.models import LocalRay
    from site_agent.local_ray import LocalRayHead
    head = LocalRayHead(LocalRay(port_base=30500, num_cpus=1, temp_dir=work / "ray"), name="bench")
    # Ray's clients read their token from the environment once, when first used (as the agent's do).
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(head.token_path))
    try:
        head.start()
        from ray.job_submission import JobSubmissionClient
        client = JobSubmissionClient(head.dashboard_url)
        # One CPU per job on a one-CPU head: Ray queues what it cannot start, so the figures are
        # its submission path, not thousands of drivers fighting for two cores.
        def submit(i: int) -> str:
            return client.submit_job(entrypoint="true", entrypoint_num_cpus=1)
        for i in range(5):
            submit(i)
        rate, latencies, _ = timed_submits(jobs, threads, submit)
        return {"rate": rate, "p50": pct(latencies, 0.5), "p99": pct(latencies, 0.99)}
    finally:
        head.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--threads", type=int, default=8, help="concurrent SDK callers")
    p.add_argument("--ray-jobs", type=int, default=10_000, help="jobs submitted to Ray directly (default: the same)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="fload-", dir="/tmp") as tmp:
        fed = federation_load(Path(tmp) / "fed", args.jobs, args.threads)
        ray = ray_load(Path(tmp), args.ray_jobs, args.threads)
    print(f"{'target':<22} {'jobs':>6} {'submits/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    print(f"{'federation (3 sites)':<22} {args.jobs:>6} {fed['rate']:>10.0f} {fed['p50']:>8.1f} {fed['p99']:>8.1f}")
    print(f"{'Ray Jobs API direct':<22} {args.ray_jobs:>6} {ray['rate']:>10.0f} {ray['p50']:>8.1f} {ray['p99']:>8.1f}")
    print(f"federation/Ray: submits/s x{fed['rate'] / ray['rate']:.2f}, p50 x{fed['p50'] / ray['p50']:.2f}; "
          f"target 500/s: x{fed['rate'] / 500:.2f}")
    print(f"lost {fed['lost']}, duplicated {fed['duplicated']}, not succeeded {fed['unfinished']}, "
          f"with more than one attempt {fed['ran_twice']}")
    if fed["lost"] or fed["duplicated"] or fed["unfinished"] or fed["ran_twice"]:
        raise SystemExit("FAILED: every job must end succeeded exactly once")


if __name__ == "__main__":
    main()
