"""One scheduling cycle of the control plane at depth: N pending jobs at S sites, over a real
SQLite store, from reading the queue to writing every decision and explanation.

    python -m bench.cycle [--sites 200] [--jobs 20000]

Each job asks for a whole CPU of sites with 8, so most of the queue waits and is explained. The
baseline, in the same run on a store of its own, is the same cycle with every site named in every
explanation (what the cycle wrote before explanations were bounded). Printed: each cycle's
seconds (the first writes every explanation; the second finds them unchanged), and the ratio.
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import yaml

from federation.control import ControlPlane, cycle
from federation.jobs import Job, new_job_id
from federation.local import CONFIGS
from federation.sites import Capacity, SiteRecord
from federation.spec import job_from_dict, load_policy
from federation.store import NewSubmission, SQLiteStore


def run(work: Path, sites: int, jobs: int) -> tuple[float, float, int]:
    data = yaml.safe_load((CONFIGS / "policy.yaml").read_text())
    data["spec"].setdefault("limits", {})["pending_per_tenant"] = 10_000_000
    (work / "policy.yaml").write_text(yaml.safe_dump(data))
    store = SQLiteStore(work / "fed.db")
    plane = ControlPlane(store, load_policy(work / "policy.yaml"))
    now = time.time()
    for i in range(sites):
        store.upsert_site(SiteRecord(f"s{i}", "DE", f"r{i}", capacity=Capacity(cpus=8, memory=32 << 30),
                                     registered_at=now, last_heartbeat=now + 3600))
    spec = job_from_dict({"metadata": {"name": "load", "tenant": "load"},
                          "spec": {"entrypoint": "true", "resources": {"cpus": 1}}})
    for k in range(0, jobs, 1000):
        store.add_many([NewSubmission([Job(id=new_job_id(), spec=spec, created_at=now, updated_at=now,
                                           queue="default")], None) for _ in range(min(1000, jobs - k))])
    seconds, placed = [], 0
    for _ in range(2):
        t = time.perf_counter()
        placed += len(plane.cycle.run_once().decisions)
        seconds.append(time.perf_counter() - t)
    store.close()
    return seconds[0], seconds[1], placed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sites", type=int, default=200)
    p.add_argument("--jobs", type=int, default=20_000)
    args = p.parse_args()
    logging.disable(logging.WARNING)
    bounded = cycle.MAX_VERDICTS
    with tempfile.TemporaryDirectory(prefix="fcycle-") as tmp:
        (Path(tmp) / "a").mkdir()
        (Path(tmp) / "b").mkdir()
        ours = run(Path(tmp) / "a", args.sites, args.jobs)
        cycle.MAX_VERDICTS = args.sites + 1   # the baseline: every site in every explanation
        try:
            every = run(Path(tmp) / "b", args.sites, args.jobs)
        finally:
            cycle.MAX_VERDICTS = bounded
    print(f"{args.jobs} pending jobs at {args.sites} sites; {ours[2]} placed")
    print(f"{'explanations':<28} {'first cycle s':>14} {'second cycle s':>15}")
    print(f"{f'at most {bounded} sites named':<28} {ours[0]:>14.2f} {ours[1]:>15.2f}")
    print(f"{'every site named (baseline)':<28} {every[0]:>14.2f} {every[1]:>15.2f}")
    print(f"bounded/baseline: first cycle x{ours[0] / every[0]:.3f}, second x{ours[1] / every[1]:.3f}")


if __name__ == "__main__":
    main()
