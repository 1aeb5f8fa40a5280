"""Short jobs end to end: 1,000 trivial jobs and a 1,000-element array through the federation to one
local site (the task path), against Slurm from the OS packages (`sbatch --wrap`, `sbatch --array`)
and Ray's Jobs API directly, in the same run on this machine.

    python -m bench.short_jobs [--jobs 1000] [--array 1000] [--ray-jobs 100] [--no-slurm]

Each job is `true`, 0.1 CPU on the federation's and Ray's side, so 20 run at once on the 2 cores.
Slurm cannot give less than one CPU, so its node declares 20 CPUs (`--slurm-slots`, see bench.slurm)
and runs 20 at once too; with its real 2 CPUs it runs about 2 jobs a second (its scheduler starts
batch jobs once a second). Per path: submit rate, time from the first submission until
every job has ended, jobs a second over that time, and p50/p99 from a job's submission to its start
(each system's own record of both: the federation's store, Ray's job table, Slurm's jobcomp file,
which keeps whole seconds). The ratio that counts is all-done time against Slurm's (target <= 1).

Ray's Jobs API starts a driver per job (about a second of CPU each here), so it runs `--ray-jobs`
of them (100 by default; 1,000 take about twenty minutes) and its all-done time is also given
scaled to --jobs.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.common import bench_policy, pct
from federation.jobs import JobState
from federation.local import LocalFederation
from federation.spec import job_from_dict

FED_PORT, RAY_PORT = 30600, 30900
SITE = "short"
STAMP = re.compile(r"^\d{10}\.\d+$", re.MULTILINE)   # what `date +%s.%N` prints
UNFINISHED = [s.value for s in JobState if not s.terminal]


def spec(name: str, **extra: object):
    return job_from_dict({"metadata": {"name": name, "tenant": "short"},
                          "spec": {"entrypoint": "true", "resources": {"cpus": 0.1}, **extra}})


def federation_runs(work: Path, jobs: int, array: int) -> dict[str, dict]:
    sites = {SITE: {"location": {"jurisdiction": "DE", "region": "eu-central"},
                    "ray": {"local": {"num_cpus": 2}}}}
    fed = LocalFederation(work=work, sites=sites, port_bases={SITE: FED_PORT}, scheduler_interval_s=0.05,
                          policy=bench_policy(work, pending=max(10_000, 2 * jobs), per_second=100_000))
    out = {}
    try:
        fed.start_server()
        fed.start_agents(timeout=180)
        with fed.client(timeout=120) as client:
            _run(client, lambda: client.submit_many([spec("warm", execution="task")] * 20), 120)
            out["jobs"] = _run(client, lambda: client.submit_many([spec("one", execution="task")] * jobs), 900)
            out["array"] = _run(client, lambda: [client.submit(spec("arr", array=f"0-{array - 1}"))], 900)
    finally:
        fed.shutdown()
    db = sqlite3.connect(work / "federation.db")
    for run in out.values():
        ids = run.pop("ids")
        rows = db.execute(f"SELECT j.created_at, a.started_at, a.ended_at, j.id, j.state FROM jobs j JOIN attempts a "
                          f"ON a.job_id = j.id WHERE j.id IN ({','.join('?' * len(ids))})", ids).fetchall()
        run.update(_times(run, [(c, s, e) for c, s, e, _, _ in rows]), attempts=len(rows),
                   failed=len({job_id for *_, job_id, state in rows if state != "succeeded"}))
    db.close()
    return out


def _run(client, submit: Callable[[], list], timeout: float) -> dict:
    """Submit, then wait until the tenant has nothing unfinished: when it started, how long the
    submission took, and the names of the jobs it made (for the store's own times)."""
    began = time.time()
    submitted = submit()
    submit_s = time.time() - began
    deadline = time.monotonic() + timeout
    while client.jobs(tenant="short", states=UNFINISHED, limit=1):
        if time.monotonic() > deadline:
            raise SystemExit(f"FAILED: jobs unfinished after {timeout:g}s")
        time.sleep(0.25)   # the figures are the store's own times, not when this loop noticed
    refused = [s for s in submitted if isinstance(s, Exception)]
    if refused:
        raise SystemExit(f"FAILED: {len(refused)} submissions refused: {refused[0]}")
    ids = [j.id for s in submitted for j in getattr(s, "jobs", [s])]
    return {"began": began, "submit_s": submit_s, "count": len(ids), "ids": ids}


def _times(run: dict, rows: list[tuple[float, float, float]]) -> dict:
    ends = [e for _, _, e in rows if e]
    waits = [s - c for c, s, _ in rows if s]
    return {"done_s": max(ends) - run["began"] if ends else float("nan"), "p50": pct(waits, 0.5),
            "p99": pct(waits, 0.99), "rate": run["count"] / max(run["submit_s"], 1e-9)}


def ray_run(work: Path, jobs: int) -> dict:
    from federation.spec.site import LocalRay
    from site_agent.local_ray import LocalRayHead
    head = LocalRayHead(LocalRay(port_base=RAY_PORT, num_cpus=2, temp_dir=work / "ray"), name="bench")
    # Ray's clients read their token from the environment once, when first imported.
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(head.token_path))
    from ray.job_submission import JobStatus, JobSubmissionClient
    try:
        head.start()
        client = JobSubmissionClient(head.dashboard_url)
        submitted: dict[str, float] = {}

        def submit(i: int) -> str:
            # Ray's job table has no time its entrypoint began: the entrypoint says it in its log.
            at = time.time()
            sid = client.submit_job(entrypoint="date +%s.%N", entrypoint_num_cpus=0.1)
            submitted[sid] = at
            return sid

        began = time.time()
        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(submit, range(jobs)))
        submit_s = time.time() - began
        deadline = time.monotonic() + 1800
        while True:
            listed = [j for j in client.list_jobs() if j.submission_id in set(ids)]
            if len(listed) == jobs and all(j.status.is_terminal() for j in listed):
                break
            if time.monotonic() > deadline:
                raise SystemExit("FAILED: Ray's jobs unfinished after 30 minutes")
            time.sleep(1)
        stamps = {sid: STAMP.findall(client.get_job_logs(sid)) for sid in submitted}
        waits = [float(stamps[sid][-1]) - at for sid, at in submitted.items() if stamps[sid]]
    finally:
        head.stop()
    ends = [j.end_time / 1000 for j in listed if j.end_time]   # Ray keeps milliseconds
    return {"count": jobs, "rate": jobs / submit_s, "done_s": max(ends) - began, "p50": pct(waits, 0.5),
            "p99": pct(waits, 0.99), "failed": sum(1 for j in listed if j.status != JobStatus.SUCCEEDED)}


def slurm_runs(work: Path, jobs: int, array: int, slots: int) -> dict[str, dict]:
    from bench import slurm
    why = slurm.available()
    if why:
        print(f"Slurm: not measured: {why}")
        return {}
    out = {}
    with slurm.local_slurm(work / "slurm", slots=slots) as cluster:
        began = time.time()
        submit_s, ids = slurm.run_wrap(cluster, jobs)
        times = slurm.wait_done(cluster, ids, timeout=900)
        out["jobs"] = _slurm_figures(began, submit_s, jobs, times)
        began = time.time()
        submit_s, array_id = slurm.run_array(cluster, array)
        times = slurm.wait_done(cluster, array_id, timeout=900)
        out["array"] = _slurm_figures(began, submit_s, array, times)
    return out


def _slurm_figures(began: float, submit_s: float, count: int, times: dict) -> dict:
    rows = list(times.values())
    return {"count": count, "rate": count / max(submit_s, 1e-9), "done_s": max(e for _, _, e in rows) - began,
            "p50": pct([s - c for c, s, _ in rows], 0.5), "p99": pct([s - c for c, s, _ in rows], 0.99),
            "failed": count - len(rows)}


def report(fed: dict[str, dict], ray: dict | None, slurm: dict[str, dict], jobs: int) -> None:
    print(f"{'path':<40} {'jobs':>6} {'submit/s':>10} {'all done s':>11} {'jobs/s':>8} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'failed':>6}")
    rows = [("federation, task path: jobs", fed.get("jobs")), ("federation, task path: array", fed.get("array")),
            ("Slurm sbatch --wrap", slurm.get("jobs")), ("Slurm sbatch --array", slurm.get("array")),
            ("Ray Jobs API", ray)]
    for name, r in rows:
        if r:
            print(f"{name:<40} {r['count']:>6} {r['rate']:>10.0f} {r['done_s']:>11.1f} "
                  f"{r['count'] / r['done_s']:>8.1f} {r['p50']:>8.0f} {r['p99']:>8.0f} {r['failed']:>6}")
    for kind in ("jobs", "array"):
        if kind in fed and kind in slurm:
            print(f"all done, federation / Slurm ({kind}): x{fed[kind]['done_s'] / slurm[kind]['done_s']:.2f} "
                  "(target <= 1.0)")
    if ray and "jobs" in fed:
        scaled = ray["done_s"] * jobs / ray["count"]
        print(f"all done, federation / Ray Jobs API (scaled to {jobs}): x{fed['jobs']['done_s'] / scaled:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--array", type=int, default=1000)
    parser.add_argument("--ray-jobs", type=int, default=100, help="0: skip Ray's Jobs API")
    parser.add_argument("--no-slurm", action="store_true")
    parser.add_argument("--slurm-slots", type=int, default=20,
                        help="CPUs Slurm's node declares: 1-CPU jobs it runs at once (20: as 0.1-CPU jobs on 2 CPUs)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fedbench-short-"))
    keep = os.environ.get("FEDCTL_KEEP_BENCH") == "1"
    try:
        fed = federation_runs(work / "fed", args.jobs, args.array)
        slurm = {} if args.no_slurm else slurm_runs(work, args.jobs, args.array, args.slurm_slots)
        ray = ray_run(work, args.ray_jobs) if args.ray_jobs else None
        report(fed, ray, slurm, args.jobs)
    finally:
        if keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
