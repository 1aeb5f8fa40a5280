"""Failover: the time from a site's loss to its jobs running at another site, per lease.

    python -m bench.failover [--leases 4,8] [--jobs 4] [--backoff 0]

For each lease a real federation process starts with two sites (real agents, real local Ray
heads); `north` reaches the federation through a TCP relay. Jobs that prefer north start there,
then the relay drops every connection and refuses new ones (the site is partitioned: its agent
and Ray keep running, as a cut network leaves them). Each job writes the time its attempt
started, so the figures are the jobs' own clocks: loss to the last job running on south. The
lease is the baseline: what failover cannot beat, since a silent site may still be running.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from federation.local import LocalFederation, Proxy

SITES = {name: {"location": {"jurisdiction": "DE", "region": name}, "ray": {"local": {"num_cpus": 8}}}
         for name in ("north", "south")}
MARK = ("import os, time; p = os.path.join(os.environ['MARKS'], os.environ['FEDCTL_JOB_ID'] + '-' + "
        "os.environ['FEDCTL_ATTEMPT']); open(p + '.tmp', 'w').write(repr(time.time())); "
        "os.replace(p + '.tmp', p); time.sleep(3600)")


def started(marks: Path, job_id: str, attempt: int) -> float | None:
    path = marks / f"{job_id}-{attempt}"
    return float(path.read_text()) if path.exists() else None


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise SystemExit(f"FAILED: no {what} within {timeout:g}s")


def failover(work: Path, lease: float, jobs: int, backoff: float) -> dict:
    marks = work / "marks"
    marks.mkdir(parents=True)
    fed = LocalFederation(work=work, sites=SITES, port_bases={"north": 31000, "south": 31400},
                          site_timeout_s=lease, scheduler_interval_s=0.2)
    proxy = None
    try:
        fed.start_server()
        fed.start_agent("south")
        proxy = Proxy(fed.address)
        fed.start_agent("north", address=proxy.address)
        fed.wait_connected(120)
        with fed.client(timeout=30) as client:
            spec = {"metadata": {"name": "failover", "tenant": "bench"}, "spec": {
                "entrypoint": f'python -c "{MARK}"', "runtime_env": {"env_vars": {"MARKS": str(marks)}},
                "resources": {"cpus": 1}, "placement": {"prefer": ["north"]}, "retry": {"backoff": backoff}}}
            submitted = [client.submit(spec) for _ in range(jobs)]
            wait(lambda: all(started(marks, j.id, 1) for j in submitted), 120, "job running on north")
            assert all(j.status().site == "north" for j in submitted)
            cut = time.time()
            proxy.partition()
            lost = wait(lambda: all(a.state == "lost" for j in submitted for a in j.status().attempts[:1])
                        and time.time(), lease * 4 + 60, "attempt lost")
            moved = wait(lambda: all(started(marks, j.id, 2) for j in submitted)
                         and [started(marks, j.id, 2) for j in submitted], lease * 4 + 120, "job running on south")
            sites = {j.status().site for j in submitted}
            assert sites == {"south"}, sites
            for j in submitted:
                j.cancel()
        return {"lease": lease, "lost": lost - cut, "first": min(moved) - cut, "last": max(moved) - cut,
                "median": statistics.median(moved) - cut}
    finally:
        if proxy is not None:
            proxy.close()
        fed.shutdown()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--leases", default="4,8", help="site leases (federation spec.site_timeout) to measure, seconds")
    p.add_argument("--jobs", type=int, default=4, help="jobs running on the lost site")
    p.add_argument("--backoff", type=float, default=0.0, help="the jobs' spec.retry.backoff, seconds")
    args = p.parse_args()
    rows = []
    for lease in (float(x) for x in args.leases.split(",")):
        work = Path(tempfile.mkdtemp(prefix="ffail-", dir="/tmp"))
        try:
            rows.append(failover(work, lease, args.jobs, args.backoff))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{args.jobs} jobs on a partitioned site, retry backoff {args.backoff:g}s")
    print(f"{'lease s':>8} {'to lost s':>10} {'first elsewhere s':>18} {'last elsewhere s':>17} {'last/lease':>11}")
    for r in rows:
        print(f"{r['lease']:>8g} {r['lost']:>10.1f} {r['first']:>18.1f} {r['last']:>17.1f} "
              f"{r['last'] / r['lease']:>10.2f}x")


if __name__ == "__main__":
    main()
