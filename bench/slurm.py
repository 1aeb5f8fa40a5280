"""A private one-node Slurm from the OS packages (`apt-get install slurm-wlm munge`), for comparing
short-job throughput with the federation's.

    python -m bench.slurm [--jobs 300] [--array 1000] [--slots N] [--work DIR]

`local_slurm(work)` writes a slurm.conf into `work` (its own ports, state, spool, logs and a
jobcomp/filetxt record of every ended job, so no slurmdbd), starts `slurmctld -D` and `slurmd -D`
as children (and a private `munged` when the system runs none), waits for the node to be idle,
and on exit cancels what is left and stops all it started. Slurm gives a job whole CPUs only, so
jobs here ask for 1 CPU: on 2 cores 2 run at a time, unless `slots` declares more CPUs than exist.
slurmctld 22.05 starts batch jobs from a loop that wakes once a second (a submission or an ended
job only asks it to run), so trivial jobs go through at about one per declared CPU a second.
Times read back are whole seconds: Slurm records no finer.
"""
from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bench import slurm_accounting
from bench.common import pct

PORTS = (16817, 16818)   # slurmctld, slurmd: clear of the 6817/6818 a system Slurm would use
NODE_PORTS = 16830       # slurmd of node i of several on this host: NODE_PORTS + i
SYSTEM_MUNGE = Path("/run/munge/munge.socket.2")
PATH = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"


def available() -> str:
    """'' when Slurm and MUNGE are installed here, else why not."""
    missing = [c for c in ("sbatch", "slurmctld", "slurmd", "munged") if shutil.which(c, path=PATH) is None]
    if missing:
        return f"{', '.join(missing)} not found: apt-get install slurm-wlm munge"
    return "" if os.geteuid() == 0 else "a Slurm of SlurmUser=root needs root"


@dataclass
class Cluster:
    work: Path
    env: dict[str, str]
    cpus: int   # CPUs the node declares: how many 1-CPU jobs run at once

    def run(self, *args: str, failed: str | None = None) -> str:
        """A Slurm client command against this cluster: its stdout, or `failed` if it fails (None: raise)."""
        done = subprocess.run(args, env=self.env, capture_output=True, text=True)
        if not done.returncode:
            return done.stdout
        if failed is None:
            raise RuntimeError(f"{' '.join(args)}: exit {done.returncode}: {done.stderr.strip()}")
        return failed

    def jobcomp(self) -> list[dict[str, str]]:
        """Every ended job's jobcomp/filetxt record: one line of space-separated Key=Value."""
        path = self.work / "jobcomp.txt"
        lines = path.read_text().splitlines() if path.exists() else []
        return [dict(f.split("=", 1) for f in line.split() if "=" in f) for line in lines]


def node_names(nodes: int) -> list[str]:
    """One node is this host's own name; several are node0, node1, ..., each a slurmd on this host."""
    return ["localhost"] if nodes == 1 else [f"node{i}" for i in range(nodes)]


def _conf(work: Path, cpus: int, overrides: bool, munge_socket: Path | None, min_job_age: int = 2,
          nodes: int = 1, gpus: int = 0) -> str:
    mem_mib = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 * 9 // 10 // nodes
    names = node_names(nodes)
    lines = [
        "ClusterName=bench", "SlurmctldHost=localhost", "SlurmUser=root", "SlurmdUser=root",
        f"SlurmctldPort={PORTS[0]}", f"SlurmdPort={PORTS[1]}",
        f"StateSaveLocation={work}/state", f"SlurmdSpoolDir={work}/spool/%n",
        f"SlurmctldPidFile={work}/slurmctld.pid", f"SlurmdPidFile={work}/slurmd-%n.pid",
        f"SlurmctldLogFile={work}/slurmctld.log", f"SlurmdLogFile={work}/slurmd-%n.log",
        "AuthType=auth/munge", "CredType=cred/munge", "MpiDefault=none", "ReturnToService=2", "MailProg=/bin/true",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
        # throughput: schedule often and deep, drop ended jobs from memory soon (jobcomp keeps them)
        "SchedulerParameters=default_queue_depth=10000,sched_min_interval=0,batch_sched_delay=0",
        f"MinJobAge={min_job_age}", "MaxJobCount=200000", "MaxArraySize=100001",
        "JobCompType=jobcomp/filetxt", f"JobCompLoc={work}/jobcomp.txt",
        *(f"NodeName={name} NodeHostname=localhost Port={PORTS[1] if nodes == 1 else NODE_PORTS + i} CPUs={cpus} "
          f"RealMemory={mem_mib}{f' Gres=gpu:{gpus}' if gpus else ''} State=UNKNOWN" for i, name in enumerate(names)),
        f"PartitionName=bench Nodes={','.join(names)} Default=YES State=UP MaxTime=INFINITE",
    ]
    if gpus:
        lines.append("GresTypes=gpu")
    if munge_socket:
        lines.append(f"AuthInfo=socket={munge_socket}")
    if overrides:   # more CPUs declared than exist: without this slurmd's registration drains the node
        lines.append("SlurmdParameters=config_overrides")
    return "\n".join(lines) + "\n"


@contextmanager
def _munge(work: Path) -> Iterator[Path | None]:
    """The socket of a private munged, or None where the system's answers."""
    if SYSTEM_MUNGE.exists() and subprocess.run(["munge", "-n"], capture_output=True).returncode == 0:
        yield None
        return
    key = work / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    key.chmod(0o600)   # munged refuses a key others can read; it is ours (root) as munged runs as us
    # munged wants its socket's directory searchable by all and a short path (sockaddr_un): not in `work`
    sockdir = Path(tempfile.mkdtemp(prefix="bench-munge-"))
    sockdir.chmod(0o755)
    socket = sockdir / "munge.sock"
    with (work / "munged.log").open("w") as log:
        proc = subprocess.Popen([shutil.which("munged", path=PATH) or "munged", "-F", f"--socket={socket}",
                                 f"--key-file={key}", f"--pid-file={work}/munged.pid",
                                 f"--seed-file={work}/munged.seed"], stderr=log, start_new_session=True)
    try:
        _until(lambda: socket.exists() or proc.poll() is not None, 10, "munged", [work / "munged.log"])
        if proc.poll() is not None:
            raise RuntimeError(f"munged exited:\n{_tails([work / 'munged.log'])}")
        yield socket
    finally:
        _stop(proc)
        shutil.rmtree(sockdir, ignore_errors=True)


@contextmanager
def local_slurm(work: Path, cpus: int | None = None, slots: int | None = None,
                timeout: float = 60, min_job_age: int = 2, accounting: bool = False, nodes: int = 1,
                gpus: int = 0) -> Iterator[Cluster]:
    """A Slurm in `work` (its state wiped first) of `nodes` nodes (a slurmd each, all on this host)
    of `cpus` CPUs each (default: this machine's) and `gpus` GPUs each (GRES of null devices: Slurm
    counts and hands them out, there is nothing behind them).

    `slots`: declare that many CPUs instead, with `SlurmdParameters=config_overrides` so slurmd
    does not drain a node that claims more than it has: `slots` 1-CPU jobs then run at once, the
    way the federation runs 0.1-CPU jobs 20 at a time on 2 cores. Slurm cannot allocate less than
    a CPU; the jobs share the real cores. (`OverSubscribe=FORCE:k` on the partition also works: k
    jobs on each real CPU, so only multiples of the CPUs; this keeps the count exact.)
    `min_job_age`: seconds an ended job stays listed (`squeue`, `scontrol`; a Slurm site's agent reads
    how its jobs ended there). `accounting`: with MariaDB and slurmdbd (`bench.slurm_accounting`),
    so `sacct` answers.
    """
    if reason := available():
        raise RuntimeError(reason)
    work = work.resolve()
    names = node_names(nodes)
    _fresh(work, names, gpus)
    real = len(os.sched_getaffinity(0))
    declared = slots or cpus or real
    with _munge(work) as socket:
        conf = work / "slurm.conf"
        extra = slurm_accounting.conf_lines(socket) if accounting else []
        conf.write_text(_conf(work, declared, declared > real, socket, min_job_age, nodes, gpus)
                        + "\n".join(extra) + "\n")
        env = {**os.environ, "SLURM_CONF": str(conf), "PATH": PATH}
        cluster = Cluster(work, env, declared)
        logs = [work / "slurmctld.log", *(work / f"slurmd-{n}.log" for n in names), work / "slurmdbd.log",
                work / "mariadb.log"]
        procs: list[subprocess.Popen] = []

        def start(argv: list[str]) -> None:
            procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                          start_new_session=True))
        try:
            if accounting:
                slurm_accounting.start_accounting(work, socket, env, start,
                                                  lambda ready, t, what: _until(ready, t, what, logs))
            for argv in (["slurmctld", "-D"], *(["slurmd", "-D", "-N", n] for n in names)):
                start(argv)
            idle = lambda: cluster.run("sinfo", "-h", "-N", "-o", "%t", failed="").split() == ["idle"] * nodes
            _until(lambda: idle() or any(p.poll() is not None for p in procs), timeout, "node idle", logs)
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"a Slurm daemon exited:\n{_tails(logs)}")
            yield cluster
        finally:
            if any(p.args[0] == "slurmctld" and p.poll() is None for p in procs):
                with suppress(RuntimeError, TimeoutError):
                    cluster.run("scancel", f"--user={os.getuid()}")
                    _until(lambda: not cluster.run("squeue", "-h").strip(), 30, "jobs cancelled", logs)
            for p in reversed(procs):
                _stop(p)


def _fresh(work: Path, names: list[str], gpus: int) -> None:
    """A clean start each time: no state, spool, devices or logs of an earlier cluster. Jobs of
    other users pass through to their scripts in the spool, as on a real cluster."""
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o711)
    logs = ("slurmctld.log", *(f"slurmd-{n}.log" for n in names))
    for name in ("state", "spool", "dev", "gres.conf", "jobcomp.txt", *logs):
        if (work / name).is_dir():
            shutil.rmtree(work / name)
        (work / name).unlink(missing_ok=True)
    for sub in ("state", *(f"spool/{n}" for n in names)):
        (work / sub).mkdir(parents=True, mode=0o755)
    _gres(work, names, gpus)


def _gres(work: Path, names: list[str], gpus: int) -> None:
    """gres.conf: `gpus` GPUs on each node, as character devices Slurm accepts (null's numbers)."""
    if not gpus:
        return
    (work / "dev").mkdir()
    for k in range(gpus):
        os.mknod(work / "dev" / f"gpu{k}", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    files = f"{work}/dev/gpu[0-{gpus - 1}]" if gpus > 1 else f"{work}/dev/gpu0"
    (work / "gres.conf").write_text("".join(f"NodeName={n} Name=gpu File={files}\n" for n in names))


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _until(ready: Callable[[], object], timeout: float, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"Slurm: no {what} after {timeout:.0f} s\n{_tails(logs)}")
        time.sleep(0.1)


def _tails(logs: list[Path], lines: int = 15) -> str:
    return "\n".join(f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-lines:])
                     for p in logs if p.exists())


def run_wrap(cluster: Cluster, n: int, command: str = "true", cpus_per_task: int = 1) -> tuple[float, list[str]]:
    """n `sbatch --wrap` submissions, one after another, as a user would: (seconds they took, job ids)."""
    args = ["sbatch", "--parsable", "-o", "/dev/null", f"--cpus-per-task={cpus_per_task}", f"--wrap={command}"]
    start = time.perf_counter()
    ids = [cluster.run(*args).strip().split(";")[0] for _ in range(n)]
    return time.perf_counter() - start, ids


def run_array(cluster: Cluster, n: int, command: str = "true", cpus_per_task: int = 1) -> tuple[float, list[str]]:
    """One `sbatch --array=0-(n-1) --wrap`: (seconds it took, the tasks' ids, `<array id>_<index>`)."""
    start = time.perf_counter()
    array = cluster.run("sbatch", "--parsable", "-o", "/dev/null", f"--array=0-{n - 1}",
                        f"--cpus-per-task={cpus_per_task}", f"--wrap={command}").strip().split(";")[0]
    return time.perf_counter() - start, [f"{array}_{i}" for i in range(n)]


def wait_done(cluster: Cluster, ids: list[str], timeout: float = 600) -> dict[str, tuple[float, float, float]]:
    """Wait until the jobs `ids` (as run_wrap and run_array return them) have all ended; each one's
    (submit, start, end) in epoch seconds from the jobcomp record, whole seconds as Slurm keeps them."""
    want, deadline = set(ids), time.monotonic() + timeout
    logs = [cluster.work / "slurmctld.log"]
    # array tasks show as <array id>_<index> with -r; "?": squeue failed (a busy slurmctld), ask again
    while set(cluster.run("squeue", "-h", "-r", "-o", "%i", failed="?").split()) & (want | {"?"}):
        if time.monotonic() > deadline:
            raise TimeoutError(f"Slurm: jobs still queued after {timeout:.0f} s\n{_tails(logs)}")
        time.sleep(0.2)
    times: dict[str, tuple[float, float, float]] = {}

    def recorded() -> bool:   # jobcomp is written as a job ends; the last few may trail squeue
        for r in cluster.jobcomp():
            key = f"{r['ArrayJobId']}_{r['ArrayTaskId']}" if "ArrayJobId" in r else r["JobId"]
            if key in want:
                times[key] = (_epoch(r["SubmitTime"]), _epoch(r["StartTime"]), _epoch(r["EndTime"]))
        return len(times) == len(want)

    _until(recorded, max(5.0, deadline - time.monotonic()), "jobcomp record of every job", logs)
    return times


def _epoch(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S").timestamp()   # slurmctld writes local time


def _report(name: str, n: int, submit_s: float, done_s: float, times: dict[str, tuple[float, float, float]]) -> None:
    waits = [start - submit for submit, start, _ in times.values()]
    print(f"{name:>14}: {n} jobs, submitted in {submit_s:.2f} s ({n / submit_s:.0f}/s), all done in {done_s:.1f} s "
          f"({n / done_s:.1f} jobs/s); submit→start p50 {pct(waits, 0.5) / 1000:.0f} s, "
          f"p99 {pct(waits, 0.99) / 1000:.0f} s (whole seconds)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=300, help="sbatch --wrap submissions, one at a time (0: none)")
    parser.add_argument("--array", type=int, default=1000, help="elements of one job array (0: none)")
    parser.add_argument("--slots", type=int, help="declare this many CPUs: as many 1-CPU jobs run at once")
    parser.add_argument("--work", type=Path, help="the cluster's directory (default: a temporary one)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # so `timeout` still stops the daemons
    if reason := available():
        raise SystemExit(reason)
    with tempfile.TemporaryDirectory(prefix="bench-slurm-") as tmp, \
            local_slurm(args.work or Path(tmp), slots=args.slots) as cluster:
        print(f"Slurm {cluster.run('sinfo', '-V').split()[-1]}, one node of {cluster.cpus} CPUs, 1-CPU jobs")
        for name, n, submit in (("sbatch --wrap", args.jobs, run_wrap), ("array", args.array, run_array)):
            if n:
                start = time.perf_counter()
                submit_s, ids = submit(cluster, n)
                times = wait_done(cluster, ids, timeout=60 + 3 * n / cluster.cpus)   # ~1 job a CPU a second
                _report(name, n, submit_s, time.perf_counter() - start, times)


if __name__ == "__main__":
    main()
