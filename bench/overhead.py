"""The federation's added latency: submit-to-running through the federation vs. a
direct Ray Jobs submission to the same Ray cluster, in the same run.

    python -m bench.overhead [--runs 15]

Starts a real federation process and one site agent with its own Ray head (mutual
TLS, SQLite). Direct and federated submissions alternate so both see the same
machine load. "Running" is when the submitter learns it: the direct path polls Ray
every 10 ms; the federated path watches the job through the federation.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from federation.local import LocalFederation

ENTRYPOINT = "python -c \"import time; time.sleep(0.3)\""


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def direct_run(ray, i: int) -> float:
    t = time.perf_counter()
    sid = ray.submit_job(entrypoint=ENTRYPOINT, submission_id=f"direct-{i}-{time.time_ns()}", entrypoint_num_cpus=1)
    while ray.get_job_status(sid).value == "PENDING":
        time.sleep(0.01)
    elapsed = time.perf_counter() - t
    while not ray.get_job_status(sid).is_terminal():
        time.sleep(0.05)
    return elapsed


def federated_run(client, i: int) -> float:
    spec = {"metadata": {"name": f"bench-{i}", "tenant": "bench"},
            "spec": {"entrypoint": ENTRYPOINT, "resources": {"cpus": 1}}}
    t = time.perf_counter()
    job = client.submit(spec)
    for status in client.watch(job.id, timeout=60):
        if status.state in ("running", "succeeded", "failed"):
            break
    elapsed = time.perf_counter() - t
    job.wait(timeout=60)
    return elapsed


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=15)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fbench-", dir="/tmp"))
    site = {"location": {"jurisdiction": "DE", "region": "eu-west"}, "ray": {"local": {"num_cpus": 4}}}
    fed = LocalFederation(work=work, sites={"bench": site}, port_bases={"bench": 28000}, scheduler_interval_s=0.5)
    try:
        fed.start_server()
        fed.start_agents()
        from ray.job_submission import JobSubmissionClient
        ray = JobSubmissionClient(fed.dashboard("bench"))
        with fed.client(timeout=60) as client:
            direct_run(ray, -1)          # warm both paths once
            federated_run(client, -1)
            direct, federated = [], []
            for i in range(args.runs):
                direct.append(direct_run(ray, i))
                federated.append(federated_run(client, i))
        md, mf = statistics.median(direct), statistics.median(federated)
        print(f"submit-to-running over {args.runs} runs each (same Ray cluster, same run):")
        print(f"  direct Ray Jobs API : median {md * 1000:7.1f} ms   p90 {pct(direct, 90) * 1000:7.1f} ms")
        print(f"  through federation  : median {mf * 1000:7.1f} ms   p90 {pct(federated, 90) * 1000:7.1f} ms")
        print(f"  federation overhead : median {(mf - md) * 1000:7.1f} ms   ratio {mf / md:.2f}x")
    finally:
        fed.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
