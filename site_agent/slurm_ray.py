"""Inside a Slurm allocation (`site_agent.slurm`): start a Ray head on the first allocated node and,
on an allocation of several nodes, a Ray worker on each other node (one `srun` step, as Ray's own
Slurm template does), wait until every node has joined, run the job's entrypoint with RAY_ADDRESS
pointing at the head, stop the cluster, and exit with the entrypoint's code. SIGTERM (scancel,
Slurm's time limit) stops the entrypoint's process group first.

    python -m site_agent.slurm_ray --port-base 40000 --slots 16 -- ENTRYPOINT

Several allocations may share a node: each Ray node takes the first of `slots` port ranges (300
ports each, from `port-base`) that is free. Ray's folders are the job user's own, made fresh on
each node's local disk (`--temp`, default $TMPDIR or /tmp: Ray's socket paths must stay short)
and removed at the end; a worker leaves when its head is gone. Alone, the head listens on loopback
only; with workers, on the address Slurm gives the node (its NodeAddr), behind Ray's token, which
reaches the workers in the step's environment, never in a file others could read."""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from federation.errors import RayError
from federation.spec.site import LocalRay
from site_agent.local_ray import PORTS, WORKER_PORTS, LocalRayHead
from site_agent.ray_driver import RayJobsDriver

RANGE = 300
WORKER_FLAGS = ("node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
                "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port")
JOIN_TIMEOUT_S = 120.0


class Stopped(Exception):
    """SIGTERM before the entrypoint started."""


def node_resources() -> tuple[int, int]:
    """CPUs and GPUs Slurm gave this job on this node."""
    cpus = int(os.environ.get("SLURM_CPUS_ON_NODE") or os.environ.get("SLURM_CPUS_PER_TASK") or 1)
    visible = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g]
    return cpus, int(os.environ.get("SLURM_GPUS_ON_NODE") or len(visible))


def node_address() -> str:
    """This node's IP as Slurm reaches it (`scontrol show node`'s NodeAddr), where workers find the head."""
    name = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    try:
        shown = subprocess.run(["scontrol", "show", "node", name], capture_output=True, text=True, timeout=30).stdout
        addr = next((w.split("=", 1)[1] for w in shown.split() if w.startswith("NodeAddr=")), name)
        return socket.gethostbyname(addr)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RayError(f"the address of node {name}: {e}") from None


def start_head(port_base: int, slots: int, folder: Path, job: str, node_ip: str = "127.0.0.1") -> LocalRayHead:
    cpus, gpus = node_resources()
    last: RayError | None = None
    for slot in range(slots):
        base = port_base + slot * RANGE
        head = LocalRayHead(LocalRay(port_base=base, num_cpus=cpus, num_gpus=gpus, temp_dir=folder / str(slot)),
                            name=f"slurm job {job}", node_ip=node_ip)
        try:
            head.start(timeout=120, adopt=False)
            return head
        except RayError as e:   # its ports are another allocation's: the next range
            last = e
    raise RayError(f"no free port range for a Ray head among {slots} from {port_base}: "
                   f"{last.message if last else ''}")


def start_workers(head: LocalRayHead, nodes: int, args: argparse.Namespace, log: Path) -> subprocess.Popen:
    """One Ray worker on each allocated node but this one, as one `srun` step writing to `log`."""
    worker = [sys.executable, "-m", "site_agent.slurm_ray", f"--join={head.gcs_address}",
              f"--port-base={args.port_base}", f"--slots={args.slots}"]
    env = head.environment()
    if head.token_path is not None:   # the head's folder is on this node's disk: the token goes by environment
        env.pop("RAY_AUTH_TOKEN_PATH", None)
        env["RAY_AUTH_TOKEN"] = head.token_path.read_text().strip()
    # --export=ALL: this environment, though the batch job's is NONE
    srun = ["srun", "--export=ALL", f"--nodes={nodes - 1}", f"--ntasks={nodes - 1}", "--ntasks-per-node=1",
            f"--exclude={os.environ.get('SLURMD_NODENAME', '')}", "--kill-on-bad-exit=1", *worker]
    with log.open("ab") as out:
        return subprocess.Popen(srun, env=env, start_new_session=True, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT)


def wait_joined(head: LocalRayHead, nodes: int, workers: subprocess.Popen, log: Path) -> None:
    driver = RayJobsDriver(head.dashboard_url, head.token_path)
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    joined = 0
    while joined < nodes:
        try:
            joined = driver.resources().nodes
        except RayError:
            pass
        if workers.poll() is not None:
            tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
            raise RayError(f"the Ray workers' srun step exited ({workers.returncode}) with {joined} of {nodes} "
                           f"nodes joined: {tail}")
        if time.monotonic() > deadline:
            raise RayError(f"{joined} of {nodes} nodes joined the Ray cluster within {JOIN_TIMEOUT_S:g}s")
        if joined < nodes:
            time.sleep(0.2)


def port_free(ip: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((ip, port))
            return True
        except OSError:
            return False


def answers(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        return True
    except OSError:
        return False


def join(address: str, port_base: int, slots: int, temp: Path) -> int:
    """A Ray worker on this node, joined to the head at `address` until the head is gone or the step
    is stopped; its folder removed after."""
    ip, (cpus, gpus) = node_address(), node_resources()
    rank = int(os.environ.get("SLURM_NODEID") or 0)
    bases = [port_base + (rank + k) % slots * RANGE for k in range(slots)]
    base = next((b for b in bases if all(port_free(ip, b + PORTS[flag]) for flag in WORKER_FLAGS)), None)
    if base is None:
        print(f"fedctl: no free port range for a Ray worker among {slots} from {port_base}", file=sys.stderr)
        return 1
    folder = Path(tempfile.mkdtemp(prefix=f"fr{os.environ.get('SLURM_JOB_ID', '')}-", dir=temp))
    ray = Path(sys.executable).with_name("ray")
    command = [str(ray) if ray.exists() else "ray", "start", f"--address={address}", "--block",
               "--disable-usage-stats", f"--node-ip-address={ip}", f"--temp-dir={folder}", f"--num-cpus={cpus}",
               f"--num-gpus={gpus}", f"--object-store-memory={LocalRay().object_store_memory}",
               f"--min-worker-port={base + WORKER_PORTS[0]}", f"--max-worker-port={base + WORKER_PORTS[1]}"]
    command += [f"--{flag}={base + PORTS[flag]}" for flag in WORKER_FLAGS]
    node = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)
    signal.signal(signal.SIGTERM, lambda _s, _f: os.killpg(node.pid, signal.SIGTERM))
    try:
        while node.poll() is None and answers(address):
            try:
                node.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        return 0
    finally:
        stop_group(node)
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port-base", type=int, default=40000)
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--temp", type=Path, default=Path(os.environ.get("TMPDIR") or "/tmp"))
    parser.add_argument("--join", default="", help=argparse.SUPPRESS)   # a worker of this address's head
    parser.add_argument("entrypoint", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.join:
        return join(args.join, args.port_base, args.slots, args.temp)
    entrypoint = " ".join(args.entrypoint[1:] if args.entrypoint[:1] == ["--"] else args.entrypoint)
    job = os.environ.get("SLURM_JOB_ID", str(os.getpid()))
    nodes = int(os.environ.get("SLURM_JOB_NUM_NODES") or 1)
    folder = Path(tempfile.mkdtemp(prefix=f"fr{job}-", dir=args.temp))   # this user's alone, made fresh
    workers: subprocess.Popen | None = None
    proc: subprocess.Popen | None = None

    def stop(signum: int, _frame: object) -> None:
        if proc is None:
            raise Stopped()
        if proc.poll() is None:
            os.killpg(proc.pid, signum)

    signal.signal(signal.SIGTERM, stop)
    head: LocalRayHead | None = None
    try:
        head = start_head(args.port_base, args.slots, folder, job, node_address() if nodes > 1 else "127.0.0.1")
        if nodes > 1:
            workers = start_workers(head, nodes, args, folder / "workers.log")
            wait_joined(head, nodes, workers, folder / "workers.log")
        env = {**head.environment(), **{k: v for k, v in os.environ.items() if k not in ("PATH",)},
               "RAY_ADDRESS": head.gcs_address}
        proc = subprocess.Popen(["/bin/bash", "-c", entrypoint], env=env, start_new_session=True)
        code = proc.wait()
    except RayError as e:
        print(f"fedctl: {e.message}", file=sys.stderr, flush=True)
        code = 1
    except Stopped:
        code = 128 + signal.SIGTERM
    finally:
        if head is not None:
            head.stop()   # the workers see it gone and leave
        if workers is not None:
            stop_group(workers, first=None)
        shutil.rmtree(folder, ignore_errors=True)
    return code if code >= 0 else 128 - code


def stop_group(proc: subprocess.Popen, grace: float = 15.0,
               first: signal.Signals | None = signal.SIGTERM) -> None:
    """`first` (None: nothing, only the wait) to `proc`'s process group, then SIGKILL to what is left
    after `grace`."""
    for sig in (first, signal.SIGKILL):
        if proc.poll() is not None:
            return
        try:
            if sig is not None:
                os.killpg(proc.pid, sig)
            proc.wait(timeout=grace)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass


if __name__ == "__main__":
    sys.exit(main())
