"""The federation's added latency: submit-to-running through the federation vs. a
direct Ray Jobs submission to the same Ray cluster, in the same run.

    python -m bench.overhead [--runs 20]

Starts a real federation process and one site agent with its own Ray head (mutual
TLS, SQLite). Direct and federated submissions alternate so both see the same
machine load. "Running" is when the submitter learns it: the direct path polls Ray
every 10 ms; the federated path watches the job through the federation.

Ray's own submit-to-running time varies by hundreds of ms from run to run, more than
the federation adds, so the federation's own parts are measured directly: dispatch
(SDK submit until Ray has the job, by Ray's own submission timestamp) in the runs above,
and report (Ray says RUNNING, seen by a 10 ms poller, until the SDK's watch says
running) in a second series, since the poller's own load slows Ray. Their medians'
sum is the federation's overhead.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from federation.local import LocalFederation

ENTRYPOINT = "python -c \"import time; time.sleep(0.3)\""


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]




def agent_env(i: int) -> dict:
    """What the agent adds to every job's runtime_env, different per job. Ray takes longer to
    start a job with a runtime_env it has not seen, so the like-for-like direct run carries one."""
    return {"env_vars": {"FEDCTL_JOB_ID": f"j-direct{i:06d}", "FEDCTL_ATTEMPT": "1", "FEDCTL_SITE": "bench"}}


def direct_run(ray, i: int, runtime_env: dict | None = None) -> float:
    t = time.perf_counter()
    sid = ray.submit_job(entrypoint=ENTRYPOINT, submission_id=f"direct-{i}-{time.time_ns()}", entrypoint_num_cpus=1,
                         runtime_env=runtime_env)
    while ray.get_job_status(sid).value == "PENDING":
        time.sleep(0.01)
    elapsed = time.perf_counter() - t
    while not ray.get_job_status(sid).is_terminal():
        time.sleep(0.05)
    return elapsed


def federated_run(client, ray, i: int, split: bool = False) -> tuple[float, float, float]:
    """(submit-to-running, dispatch, report) in seconds; report only with `split`, whose
    10 ms Ray poller loads this 2-core machine, so the end-to-end series runs without it."""
    spec = {"metadata": {"name": f"bench-{i}", "tenant": "bench"},
            "spec": {"entrypoint": ENTRYPOINT, "resources": {"cpus": 1}}}
    ray_running: list[float] = []
    wall0, t0 = time.time(), time.perf_counter()
    job = client.submit(spec)
    sid = f"fed-{job.id}-1"
    poller = threading.Thread(target=_poll_running, args=(ray, sid, ray_running))
    if split:
        poller.start()
    for status in client.watch(job.id, timeout=60):
        if status.state in ("running", "succeeded", "failed"):
            break
    t_running = time.perf_counter()
    dispatch = ray.get_job_info(sid).start_time / 1000 - wall0
    report = 0.0
    if split:
        poller.join()
        report = t_running - ray_running[0]
    job.wait(timeout=60)
    return t_running - t0, dispatch, report


def _poll_running(ray, sid: str, out: list[float]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if ray.get_job_status(sid).value != "PENDING":
                out.append(time.perf_counter())
                return
        except RuntimeError:
            pass  # not submitted yet
        time.sleep(0.01)


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
        # The site's head uses Ray token auth; this process talks to that one cluster.
        os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(fed.ray_token("bench")))
        ray = JobSubmissionClient(fed.dashboard("bench"))
        with fed.client(timeout=60) as client:
            direct_run(ray, -1)          # warm both paths once
            federated_run(client, ray, -1)
            plain, direct, federated, dispatch, report = [], [], [], [], []
            for i in range(args.runs):
                plain.append(direct_run(ray, i))
                direct.append(direct_run(ray, i, agent_env(i)))
                total, d, _ = federated_run(client, ray, i)
                federated.append(total)
                dispatch.append(d)
            for i in range(args.runs):
                report.append(federated_run(client, ray, args.runs + i, split=True)[2])
        md, mf = statistics.median(direct), statistics.median(federated)
        ms = lambda xs: f"median {statistics.median(xs) * 1000:7.1f} ms   p90 {pct(xs, 90) * 1000:7.1f} ms"
        print(f"submit-to-running over {args.runs} runs each (same Ray cluster, same run):")
        print(f"  direct Ray Jobs API, no runtime_env      : {ms(plain)}")
        print(f"  direct Ray Jobs API, the agent's env_vars: {ms(direct)}")
        print(f"  through the federation                   : {ms(federated)}   ratio {mf / md:.2f}x "
              f"to the like-for-like direct run")
        overhead = statistics.median(dispatch) + statistics.median(report)
        print("the federation's own parts:")
        print(f"  dispatch (submit -> Ray has it), the runs above  : {ms(dispatch)}")
        print(f"  report (Ray running -> SDK sees it), {args.runs} more runs: {ms(report)}")
        print(f"  overhead, median dispatch + median report         : {overhead * 1000:7.1f} ms")
    finally:
        fed.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
