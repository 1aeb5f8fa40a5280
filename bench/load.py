"""Load: many submissions through the SDK against one federation process with several sites,
and the same kind of trivial job submitted to a local Ray Jobs API directly, in one run.

    python -m bench.load [--jobs 10000] [--threads 8] [--batch 100 (0: none)] [--ray-jobs N (0: none)]
                         [--postgres] [--profile OUT.svg]

The federation is a real `fedctl server start` process (mutual TLS, SQLite file, scheduling
loop). Its sites are played in this process by raw Connect streams that report each assignment
running and then succeeded at once, so the figures measure the federation and the wire, not
Ray. Every job must end succeeded exactly once: the run fails if one is lost or stored twice.
The Ray baseline submits as many `true` jobs (unless `--ray-jobs` says otherwise) from as many
threads to a private Ray head's Jobs API, with its token; they ask for a resource no node has,
so Ray stores them and never starts them: both sides measure submission alone.

With `--batch N` the same jobs are also submitted N to a call (`Client.submit_many`, the
`SubmitJobs` RPC: each job validated, audited and stored as by one `submit`) to a federation of
its own, in the same run: its rate counts jobs, and its latencies are of calls.

Beside each side's rate: its p50 and p99 submit latency (SDK call to acknowledgement; the
federation acknowledges a submission once it is committed), and the federation process's CPU
time per submission while they were made (its scheduler and the sites' reports included).
`--profile` samples that process with py-spy during the submissions.
"""
from __future__ import annotations

import argparse
import os
import queue
import shutil
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import yaml

from bench.common import SPEC, WARMUP, bench_policy, cpu_seconds, profiled, summary, timed_submits
from federation.jobs import JobState
from federation.local import LocalFederation
from federation.transport import open_channel
from federation.v1 import federation_pb2 as pb
from federation.v1 import federation_pb2_grpc as pb_grpc

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


def federation_load(work: Path, jobs: int, threads: int, profile: Path | None = None, database: str = "",
                    batch: int = 0) -> dict:
    """With `database` (a PostgreSQL URL), the federation's store is there instead of a SQLite file;
    with `batch`, jobs go that many to a call."""
    specs = {name: {"location": {"jurisdiction": "DE", "region": name}} for name in SITES}
    fed = LocalFederation(work=work, sites=specs, port_bases={}, scheduler_interval_s=0.2,
                          policy=bench_policy(work, pending=max(10_000, jobs), per_second=100_000))
    if database:
        config = yaml.safe_load(fed.config.read_text())
        config["spec"].update(database=database, audit={"key": str(work / "audit.pem")})
        fed.config.write_text(yaml.safe_dump(config))
    fed.start_server()
    assert fed.server is not None
    sites = [PlayedSite(fed, name) for name in SITES]
    clients = [fed.client(timeout=60) for _ in range(threads)]
    try:
        for _ in range(50):   # warm up, as another tenant
            clients[0].submit(WARMUP)
        cpu = cpu_seconds(fed.server.pid)
        with profiled(fed.server.pid, profile):
            if batch:
                run = timed_submits(-(-jobs // batch), threads, lambda i: [
                    j.id for j in clients[i % threads].submit_many([SPEC] * min(batch, jobs - i * batch))])
                run["rate"] *= batch
                submitted = [job_id for ids in run["results"] for job_id in ids]
            else:
                run = timed_submits(jobs, threads, lambda i: clients[i % threads].submit(SPEC).id)
                submitted = run["results"]
        run["cpu_ms"] = (cpu_seconds(fed.server.pid) - cpu) / jobs * 1000
        unfinished = [s.value for s in JobState if not s.terminal]
        deadline = time.monotonic() + 600
        while clients[0].jobs(tenant="load", states=unfinished, limit=1) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        for c in clients:
            c.close()
        for s in sites:
            s.close()
        fed.shutdown()
    # Counted in the store itself, after the federation stopped: nothing can hide there.
    db = psycopg.connect(database) if database else sqlite3.connect(work / "federation.db")
    stored = db.execute("SELECT id, state FROM jobs WHERE tenant='load'").fetchall()
    attempts = dict(db.execute("SELECT job_id, COUNT(*) FROM attempts GROUP BY job_id").fetchall())
    db.close()
    ids = {job_id for job_id, _ in stored}
    return {**summary(run), "cpu_ms": run["cpu_ms"], "lost": len(set(submitted) - ids),
            "duplicated": len(stored) - len(set(submitted) & ids),
            "unfinished": sum(1 for _, state in stored if state != "succeeded"),
            "ran_twice": sum(1 for job_id in ids if attempts.get(job_id, 0) != 1)}


def ray_load(work: Path, jobs: int, threads: int, cap_s: float) -> dict:
    from federation.spec.site import LocalRay
    from site_agent.local_ray import LocalRayHead
    head = LocalRayHead(LocalRay(port_base=30500, num_cpus=1, temp_dir=work / "ray"), name="bench")
    # Ray's clients read their token from the environment once, when first used (as the agent's do).
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(head.token_path))
    try:
        head.start()
        from ray.job_submission import JobSubmissionClient
        client = JobSubmissionClient(head.dashboard_url)
        # A resource no node has: Ray stores each job and asks for its supervisor, which never
        # starts, so the figures are Ray's submission path, as the played sites make the
        # federation's, and not thousands of drivers fighting over two cores.
        def submit(i: int) -> str:
            return client.submit_job(entrypoint="true", entrypoint_resources={"bench-never": 1})

        for i in range(5):
            submit(i)
        return summary(timed_submits(jobs, threads, submit, cap_s))
    finally:
        head.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--threads", type=int, default=8, help="concurrent SDK callers")
    p.add_argument("--batch", type=int, default=100, help="also submit the jobs this many to a call (0: not)")
    p.add_argument("--ray-jobs", type=int, default=None,
                   help="jobs submitted to Ray directly (default: the same; 0: no Ray baseline)")
    p.add_argument("--ray-cap", type=float, default=300.0,
                   help="stop submitting to Ray after this many seconds (it slows as its queue grows)")
    p.add_argument("--profile", type=Path, help="py-spy the federation during the submissions into this file "
                                                  "(.svg: a flame graph; else raw stacks)")
    p.add_argument("--postgres", action="store_true",
                   help="also with the store on PostgreSQL (a real server from the OS packages), in the same run")
    args = p.parse_args()
    ray_jobs = args.jobs if args.ray_jobs is None else args.ray_jobs
    with tempfile.TemporaryDirectory(prefix="fload-", dir="/tmp") as tmp:
        fed = federation_load(Path(tmp) / "fed", args.jobs, args.threads, args.profile)
        many = federation_load(Path(tmp) / "many", args.jobs, args.threads, batch=args.batch) if args.batch else None
        pg = postgres_load(Path(tmp) / "pg", args.jobs, args.threads) if args.postgres else None
        pg_many = postgres_load(Path(tmp) / "pg-many", args.jobs, args.threads, args.batch) \
            if args.postgres and args.batch else None
        ray = ray_load(Path(tmp), ray_jobs, args.threads, args.ray_cap) if ray_jobs else None
    report(fed, ray, ray_jobs, args)
    if many is not None:
        report_batched(many, fed, args.batch)
    if pg is not None:
        report_postgres(pg, fed)
    if pg_many is not None and many is not None:
        print(f"PostgreSQL, {args.batch} a call: {pg_many['rate']:.0f} jobs/s, p99 {pg_many['p99']:.0f} ms a call; "
              f"x{pg_many['rate'] / many['rate']:.2f} SQLite's, x{pg_many['rate'] / 1000:.2f} the 1,000/s goal")


def postgres_load(work: Path, jobs: int, threads: int, batch: int = 0) -> dict:
    from tests.postgres import MISSING, PostgresServer, binaries
    bin_dir = binaries()
    if bin_dir is None:
        raise SystemExit(MISSING)
    work.mkdir(parents=True)
    server = PostgresServer(bin_dir, Path(tempfile.mkdtemp(prefix="fedctl-pg-")))
    server.start()
    try:
        return federation_load(work, jobs, threads, database=server.database(), batch=batch)
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


def report_postgres(pg: dict, sqlite: dict) -> None:
    print(f"{'federation, PostgreSQL':<22} {pg['done']:>6} {pg['rate']:>10.0f} {pg['p50']:>8.1f} {pg['p99']:>8.1f}  "
          + " ".join(f"{w:.0f}" for w in pg["windows"]))
    print(f"PostgreSQL/SQLite: submits/s x{pg['rate'] / sqlite['rate']:.2f}, p99 x{pg['p99'] / sqlite['p99']:.2f}; "
          f"lost {pg['lost']}, duplicated {pg['duplicated']}, not succeeded {pg['unfinished']}")
    if pg["lost"] or pg["duplicated"] or pg["unfinished"] or pg["ran_twice"]:
        raise SystemExit("FAILED: every job must end succeeded exactly once")


def report_batched(many: dict, one: dict, batch: int) -> None:
    print(f"{f'federation, {batch} a call':<22} {many['done'] * batch:>6} {many['rate']:>10.0f} {many['p50']:>8.1f} "
          f"{many['p99']:>8.1f}  (latencies of calls of {batch}; CPU {many['cpu_ms']:.2f} ms a job)")
    print(f"{batch} a call / one a call: jobs/s x{many['rate'] / one['rate']:.2f}; vs targets: "
          f"x{many['rate'] / 500:.2f} Slurm's documented 500/s, x{many['rate'] / 1000:.2f} the 1,000/s goal")
    exactly_once(many)


def report(fed: dict, ray: dict | None, ray_jobs: int, args: argparse.Namespace) -> None:
    print(f"{'target':<22} {'jobs':>6} {'submits/s':>10} {'p50 ms':>8} {'p99 ms':>8}  submits/s per 1,000 in turn")
    for name, r in (("federation (3 sites)", fed), ("Ray Jobs API direct", ray)):
        if r is not None:
            print(f"{name:<22} {r['done']:>6} {r['rate']:>10.0f} {r['p50']:>8.1f} {r['p99']:>8.1f}  "
                  + " ".join(f"{w:.0f}" for w in r["windows"]))
    print(f"{args.threads} SDK threads; federation process CPU {fed['cpu_ms']:.2f} ms per submission "
          f"(scheduler and site reports included)")
    if ray is not None:
        if ray["done"] < ray_jobs:
            print(f"Ray: stopped after {args.ray_cap:g}s with {ray['done']} of {ray_jobs} submitted")
        print(f"federation/Ray: submits/s x{fed['rate'] / ray['rate']:.2f}, p50 x{fed['p50'] / ray['p50']:.2f}, "
              f"p99 x{fed['p99'] / ray['p99']:.2f}")
    print(f"federation vs targets: x{fed['rate'] / 500:.2f} Slurm's documented 500/s, "
          f"x{fed['rate'] / 1000:.2f} the 1,000/s goal")
    exactly_once(fed)


def exactly_once(r: dict) -> None:
    print(f"lost {r['lost']}, duplicated {r['duplicated']}, not succeeded {r['unfinished']}, "
          f"with more than one attempt {r['ran_twice']}")
    if r["lost"] or r["duplicated"] or r["unfinished"] or r["ran_twice"]:
        raise SystemExit("FAILED: every job must end succeeded exactly once")


if __name__ == "__main__":
    main()
