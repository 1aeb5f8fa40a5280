"""The latency a Slurm-backed site adds: submit-to-start of the same trivial script through the
federation to a Slurm site, against `sbatch` of it directly, in the same run on one private Slurm
(`bench/slurm.py`), with the cost of starting Ray inside the allocation shown on its own.

    python -m bench.slurm_site [--runs 5]

Four paths, alternated so all see the same machine: `sbatch` (the script directly), `sbatch+ray`
(the script under `site_agent.slurm_ray`, as a Slurm site's job runs it: a Ray head on the
allocation first), `federation` (the SDK submits a job whose data is at the Slurm site; the
federation places it, the agent writes and submits the batch script), and `sbatch+ray` over two
nodes (the head, then a Ray worker on the other node, joined before the script starts). "Start" is when the script
itself begins, by its own clock, so it needs no polling; submit is when the submitter began.
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench import slurm
from federation.local import CONFIGS, LocalFederation

STAMP = "python -c \"import time; print('started', repr(time.time()))\""


def started_at(text: str) -> float:
    return float(next(line.split()[1] for line in text.splitlines() if line.startswith("started ")))


def direct(cluster: slurm.Cluster, work: Path, i: int, with_ray: bool, nodes: int = 1) -> float:
    out = work / f"direct-{i}-{int(with_ray)}-{nodes}.out"
    command = (f"{sys.executable} -m site_agent.slurm_ray --port-base=35000 --slots=4 -- "
               f"{shlex.quote(STAMP)}" if with_ray else STAMP)
    script = work / f"direct-{i}.sbatch"
    script.write_text(f"#!/bin/bash\n#SBATCH --output={out}\n#SBATCH --cpus-per-task=1\n#SBATCH --nodes={nodes}\n"
                      f"#SBATCH --ntasks-per-node=1\nexport PATH="
                      f"{Path(sys.executable).parent}:$PATH\n{command}\n")
    t = time.time()
    job = cluster.run("sbatch", "--parsable", str(script)).strip()
    slurm._until(lambda: "started " in (out.read_text() if out.exists() else ""), 180, f"job {job} started", [])
    return started_at(out.read_text()) - t


def federated(client, i: int) -> float:
    t = time.time()
    job = client.submit({"apiVersion": "federation/v1", "kind": "Job",
                         "metadata": {"name": f"stamp-{i}", "tenant": "bench"},
                         "spec": {"entrypoint": STAMP, "datasets": ["cohort-hpc"], "resources": {"cpus": 1}}})
    final = job.wait(timeout=240)
    if final.state != "succeeded":
        raise RuntimeError(f"{job.id}: {final.message}")
    return started_at(client.logs(job.id)) - t


def federation_on(cluster: slurm.Cluster, work: Path) -> LocalFederation:
    (work / "hpc").mkdir()
    policy = yaml.safe_load((CONFIGS / "policy.yaml").read_text())
    policy["spec"]["classifications"]["hpc-internal"] = {
        "allowed_jurisdictions": ["DE"], "allow_staging": False, "may_cross_border": ["results", "logs"]}
    policy["spec"]["datasets"]["cohort-hpc"] = {"classification": "hpc-internal", "sites": ["hpc"]}
    (work / "policy.yaml").write_text(yaml.safe_dump(policy))
    site = {"location": {"jurisdiction": "DE", "region": "eu-hpc"}, "backend": "slurm",
            "slurm": {"conf": str(cluster.work / "slurm.conf"), "ray_port_base": 34000, "ray_slots": 4},
            "datasets": [{"name": "cohort-hpc", "path": str(work)}], "work_dir": str(work / "hpc")}
    return LocalFederation(work=work / "fed", sites={"hpc": site}, port_bases={}, policy=work / "policy.yaml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if reason := slurm.available():
        raise SystemExit(reason)
    work = Path(tempfile.mkdtemp(prefix="bslurm-", dir="/tmp"))
    (work / "fed").mkdir()
    times: dict[str, list[float]] = {"sbatch": [], "sbatch+ray": [], "federation": [], "sbatch+ray, 2 nodes": []}
    try:
        with slurm.local_slurm(work / "slurm", slots=4, min_job_age=600, nodes=2) as cluster:
            fed = federation_on(cluster, work)
            try:
                fed.start_server()
                fed.start_agents()
                with fed.client() as client:
                    federated(client, -1)   # warm: the agent's first pass, the store's first write
                    for i in range(args.runs):
                        times["sbatch"].append(direct(cluster, work, i, with_ray=False))
                        times["sbatch+ray"].append(direct(cluster, work, i, with_ray=True))
                        times["federation"].append(federated(client, i))
                        times["sbatch+ray, 2 nodes"].append(direct(cluster, work, i, with_ray=True, nodes=2))
            finally:
                fed.shutdown()
            version = cluster.run("sinfo", "-V").split()[-1]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(times, version)


def report(times: dict[str, list[float]], version: str) -> None:
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"Slurm {version}, two nodes (two slurmd on this host); submit-to-start of a trivial script, "
          f"{len(times['sbatch'])} runs each, median (min-max) seconds")
    for name, values in times.items():
        print(f"  {name:>19}: {med[name]:6.2f}  ({min(values):.2f}-{max(values):.2f})")
    print(f"  Ray started inside the allocation: +{med['sbatch+ray'] - med['sbatch']:.2f} s; over two nodes (a head, "
          f"then an srun step of workers that join it): +{med['sbatch+ray, 2 nodes'] - med['sbatch']:.2f} s")
    print(f"  the federation's own part (placement, agent, sbatch): +{med['federation'] - med['sbatch+ray']:.2f} s")
    print(f"  ratio federation/sbatch: x{med['federation'] / med['sbatch']:.2f}; "
          f"federation/(sbatch+ray): x{med['federation'] / med['sbatch+ray']:.2f}")


if __name__ == "__main__":
    main()
