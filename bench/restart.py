"""Federation restart: how many running jobs an outage of the federation stops, with the lease at
its default (30 s).

    python -m bench.restart [--down 60] [--jobs 2] [--lease 30]

A real federation process, two sites (real agents, real local Ray heads), `--jobs` jobs running at
each. The federation is killed with -9, kept down for `--down` seconds, and started again on the
same store. Each job writes when each attempt starts; the figure is how many were stopped and ran
again. Measured twice in one run: with a witness beside the federation (`spec.replication.role:
witness`, what lets the sites tell an outage of the federation from their own partition), and
without one, the baseline: the sites cannot tell, and fence (stop) their work at two thirds of
the lease.
"""
from __future__ import annotations

import argparse
import shutil
import signal
import tempfile
import time
from pathlib import Path

from bench.failover import MARK, started, wait
from federation.local import LocalFederation

SITES = {name: {"location": {"jurisdiction": "DE", "region": name}, "ray": {"local": {"num_cpus": 4}}}
         for name in ("north", "south")}


def outage(work: Path, *, witness: bool, lease: float, down: float, jobs: int) -> dict:
    marks = work / "marks"
    marks.mkdir(parents=True)
    fed = LocalFederation(work=work, sites=SITES, port_bases={"north": 22000, "south": 22400},
                          site_timeout_s=lease, scheduler_interval_s=0.2, witness=witness)
    try:
        fed.start_server()
        if witness:
            fed.start_witness()
        fed.start_agents()
        with fed.client(timeout=120) as client:
            submitted = [client.submit({
                "metadata": {"name": f"outage-{site}-{i}", "tenant": "bench"},
                "spec": {"entrypoint": f'python -c "{MARK}"', "runtime_env": {"env_vars": {"MARKS": str(marks)}},
                         "resources": {"cpus": 1}, "placement": {"sites": [site]}}})
                for site in SITES for i in range(jobs)]
            wait(lambda: all(started(marks, j.id, 1) for j in submitted), 120, "every job running")
            fed.stop_server(signal.SIGKILL)
            time.sleep(down)   # the outage being measured
            fed.start_server(timeout=120)
            fed.wait_connected(lease * 3)
            time.sleep(lease)  # a stopped job would be re-placed within a lease: give it the time
            stopped = sum(1 for j in submitted if len(j.status().attempts) > 1 or started(marks, j.id, 2))
            for j in submitted:
                j.cancel()
        return {"witness": witness, "running": len(submitted), "stopped": stopped}
    finally:
        fed.shutdown()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--down", type=float, default=60.0, help="how long the federation stays down, seconds")
    p.add_argument("--jobs", type=int, default=2, help="jobs running at each of the two sites")
    p.add_argument("--lease", type=float, default=30.0, help="the sites' lease (spec.site_timeout_s)")
    args = p.parse_args()
    rows = []
    for witness in (True, False):
        work = Path(tempfile.mkdtemp(prefix="frestart-", dir="/tmp"))
        try:
            rows.append(outage(work, witness=witness, lease=args.lease, down=args.down, jobs=args.jobs))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print(f"federation killed (-9) and down {args.down:g}s, lease {args.lease:g}s, {2 * args.jobs} jobs running")
    print(f"{'':<18} {'running':>8} {'stopped':>8}")
    for r in rows:
        print(f"{'with a witness' if r['witness'] else 'without (baseline)':<18} {r['running']:>8} {r['stopped']:>8}")
    ours, base = rows
    print(f"stopped with a witness: {ours['stopped']} (target 0); without: {base['stopped']} of {base['running']}")


if __name__ == "__main__":
    main()
