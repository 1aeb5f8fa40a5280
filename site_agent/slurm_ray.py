"""Inside a Slurm allocation (`site_agent.slurm`): start a Ray head on the allocated node, run the
job's entrypoint with RAY_ADDRESS pointing at it, stop the head, and exit with the entrypoint's
code. SIGTERM (scancel, Slurm's time limit) stops the entrypoint's process group first.

    python -m site_agent.slurm_ray --port-base 40000 --slots 16 --temp /tmp -- ENTRYPOINT

Several allocations may share a node: the head takes the first of `slots` port ranges (300 ports
each, from `port-base`) that is free, and a folder named after the Slurm job."""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from federation.errors import RayError
from federation.spec.site import LocalRay
from site_agent.local_ray import PORTS, LocalRayHead

RANGE = 300


def start_head(port_base: int, slots: int, temp: Path, job: str) -> LocalRayHead:
    cpus = int(os.environ.get("SLURM_CPUS_ON_NODE") or os.environ.get("SLURM_CPUS_PER_TASK") or 1)
    gpus = len([g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g])
    last: RayError | None = None
    for slot in range(slots):
        base = port_base + slot * RANGE
        head = LocalRayHead(LocalRay(port_base=base, num_cpus=cpus, num_gpus=gpus, temp_dir=temp / f"fr{job}-{slot}"),
                            name=f"slurm job {job}")
        try:
            head.start(timeout=120, adopt=False)
            return head
        except RayError as e:   # its ports are another allocation's: the next range
            last = e
    raise RayError(f"no free port range for a Ray head among {slots} from {port_base}: "
                   f"{last.message if last else ''}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port-base", type=int, default=40000)
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--temp", type=Path, default=Path("/tmp"))
    parser.add_argument("entrypoint", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    entrypoint = " ".join(args.entrypoint[1:] if args.entrypoint[:1] == ["--"] else args.entrypoint)
    job = os.environ.get("SLURM_JOB_ID", str(os.getpid()))
    args.temp.mkdir(parents=True, exist_ok=True)
    try:
        head = start_head(args.port_base, args.slots, args.temp, job)
    except RayError as e:
        print(f"fedctl: {e.message}", file=sys.stderr, flush=True)
        return 1
    proc: subprocess.Popen | None = None

    def stop(signum: int, _frame: object) -> None:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        env = {**head.environment(), **{k: v for k, v in os.environ.items() if k not in ("PATH",)},
               "RAY_ADDRESS": f"127.0.0.1:{head.settings.port_base + PORTS['port']}"}
        proc = subprocess.Popen(["/bin/bash", "-c", entrypoint], env=env, start_new_session=True)
        code = proc.wait()
    finally:
        head.stop()
        shutil.rmtree(head.temp_dir, ignore_errors=True)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
