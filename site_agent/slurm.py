"""A site whose local scheduler is Slurm (`spec.backend: slurm`), behind the same driver interface as
a Ray cluster: each attempt is a Slurm batch job, named by its submission id and marked with the
site in its comment, that starts a Ray cluster on its allocation (`site_agent.slurm_ray`), runs the
job's entrypoint through it and tears it down. Slurm keeps deciding which node and when (its fair
share, partitions, limits); the federation decides which site.

Submitting is idempotent across agent restarts: a job of that name that Slurm holds is adopted,
never submitted again. `scontrol` lists what Slurm holds (ended jobs for its MinJobAge);
`scancel` stops a job (SIGTERM, then SIGKILL after Slurm's KillWait); its output file is its log.
A job Slurm itself cancelled, preempted or lost with its node is reported lost, and its retry
policy runs it again; one past its Slurm time limit failed."""
from __future__ import annotations

import math
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from federation.errors import ConfigError, RayError
from federation.spec.site import SlurmSpec
from site_agent.ray_driver import LOST_AT_SITE, SITE_KEY, RayDriver, RayJob, RayNode, RayResources

COMMENT = "federation_site="
# Slurm's job states by what they mean for an attempt (`squeue --help`, JOB STATE CODES).
WAITING = frozenset({"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD",
                     "RESIZING"})
RUNNING = frozenset({"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "SUSPENDED", "STOPPED"})
TAKEN = frozenset({"NODE_FAIL", "PREEMPTED", "BOOT_FAIL"})   # by the site, not by the job
PLAIN_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
RUNTIME_ENV = frozenset({"working_dir", "env_vars"})


def attempt_state(state: str, exit_code: str, job_id: str, stopping: bool) -> tuple[str, str]:
    """(Ray's status name, message) for a Slurm job in `state` that ended with `exit_code` (`N:S`)."""
    if state in WAITING:
        return "PENDING", ""
    if state in RUNNING:
        return "RUNNING", ""
    if state == "COMPLETED":
        return "SUCCEEDED", ""
    code = exit_code.partition(":")[0]
    if state == "CANCELLED":
        return ("STOPPED", "") if stopping else (
            "FAILED", f"{LOST_AT_SITE}Slurm job {job_id} was cancelled there (scancel, or its administrators)")
    if state in TAKEN:
        return "FAILED", f"{LOST_AT_SITE}Slurm job {job_id} ended {state} (its node or a higher-priority job took it)"
    if state in ("TIMEOUT", "DEADLINE"):
        return "FAILED", f"Slurm job {job_id} reached its Slurm time limit ({state})"
    if state == "OUT_OF_MEMORY":
        return "FAILED", f"Slurm job {job_id} ran out of memory (OUT_OF_MEMORY)"
    return "FAILED", f"Job entrypoint command failed with exit code {code or '?'} (Slurm job {job_id} {state})"


def parse_jobs(text: str, site: str, uid: int) -> dict[str, dict[str, str]]:
    """`scontrol -o show job` output: this site's jobs, by name (the submission id). Only jobs of the
    agent's own user count: another user's job named and marked alike is not ours to adopt."""
    out: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        fields = _fields(line)
        if (fields.get("Comment") == COMMENT + site and fields.get("JobName")
                and fields.get("UserId", "").endswith(f"({uid})")):
            name = fields["JobName"]
            if name not in out or int(fields.get("JobId", 0)) > int(out[name].get("JobId", 0)):
                out[name] = fields   # a name resubmitted by hand: the newest counts
    return out


def _fields(line: str) -> dict[str, str]:
    """`Key=Value Key=Value` as scontrol prints one job a line; values may hold spaces only in
    fields we do not read, so a word without `=` belongs to the value before it."""
    out: dict[str, str] = {}
    key = ""
    for word in line.split():
        k, eq, v = word.partition("=")
        if eq and k and k[0].isupper():
            key, out[k] = k, v
        elif key:
            out[key] += " " + word
    return out


def gres_gpus(gres: str) -> int:
    """GPUs in a node's GRES, e.g. `gpu:a100:4(S:0-1),nvme:1` -> 4."""
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def batch_script(sid: str, site: str, entrypoint: str, runtime_env: dict[str, Any], *, cpus: float, memory: int,
                 gpus: float, time_limit: float, settings: SlurmSpec, folder: Path) -> str:
    """The batch script of one attempt; ConfigError when the site cannot run it as asked."""
    unknown = sorted(set(runtime_env) - RUNTIME_ENV)
    if unknown:
        raise ConfigError(f"runtime_env.{unknown[0]}: a Slurm site runs jobs in its own environment "
                          "(working_dir and env_vars only)")
    if gpus and gpus != int(gpus):
        raise ConfigError(f"resources.gpus: {gpus:g}; Slurm gives whole GPUs")
    limit = time_limit or settings.time_limit
    head = [f"--job-name={sid}", f"--comment={COMMENT}{site}", f"--output={folder / sid}.out", "--nodes=1",
            "--ntasks=1", f"--cpus-per-task={max(1, math.ceil(cpus))}", "--export=NONE",
            f"--chdir={runtime_env.get('working_dir') or folder}"]
    head += [f"--mem={max(1, math.ceil(memory / 2**20))}M"] if memory else []
    head += [f"--gres=gpu:{int(gpus)}"] if gpus else []
    head += [f"--time={max(1, math.ceil(limit / 60))}"] if limit else []
    head += [f"--partition={','.join(settings.partitions)}"] if settings.partitions else []
    head += [f"--account={settings.account}"] if settings.account else []
    head += [f"--qos={settings.qos}"] if settings.qos else []
    env = {k: os.environ[k] for k in PLAIN_ENV if k in os.environ}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "/usr/bin:/bin")])
    env |= {k: str(v) for k, v in runtime_env.get("env_vars", {}).items()}
    lines = ["#!/bin/bash", *(f"#SBATCH {shlex.quote(h)}" for h in head)]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())]
    ray = [sys.executable, "-m", "site_agent.slurm_ray", f"--port-base={settings.ray_port_base}",
           f"--slots={settings.ray_slots}", f"--temp={folder / 'ray'}", "--", entrypoint]
    lines.append("exec " + " ".join(shlex.quote(w) for w in ray))
    return "\n".join(lines) + "\n"


class SlurmDriver(RayDriver):
    binds_gpus = False

    def __init__(self, site: str, settings: SlurmSpec, folder: Path) -> None:
        self.site, self.settings, self.folder = site, settings, folder
        self.env = {**os.environ, **({"SLURM_CONF": str(settings.conf)} if settings.conf else {})}
        self.env["PATH"] = os.pathsep.join([self.env.get("PATH", ""), "/usr/sbin", "/sbin"])
        self.stopping: set[str] = set()
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _run(self, *args: str) -> str:
        try:
            done = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise RayError(f"{args[0]}: {e}") from None
        if done.returncode:
            raise RayError(f"{' '.join(args[:2])}: exit {done.returncode}: {done.stderr.strip()[:300]}")
        return done.stdout

    def _held(self) -> dict[str, dict[str, str]]:
        return parse_jobs(self._run("scontrol", "-o", "show", "job"), self.site, os.geteuid())

    def submit(self, submission_id: str, entrypoint: str, runtime_env: dict[str, Any], *, cpus: float,
               memory: int, gpus: float, metadata: dict[str, str], task: bool = False,
               label_selector: dict[str, str] | None = None) -> bool:
        if submission_id in self._held():
            return False   # Slurm holds it already: adopted, never submitted twice
        script = batch_script(submission_id, metadata[SITE_KEY], entrypoint, runtime_env, cpus=cpus, memory=memory,
                              gpus=gpus, time_limit=float(metadata.get("time_limit") or 0), settings=self.settings,
                              folder=self.folder)
        path = self.folder / f"{submission_id}.sbatch"
        path.write_text(script)
        self._run("sbatch", "--parsable", str(path))
        return True

    def jobs(self) -> dict[str, RayJob]:
        out = {}
        for sid, f in self._held().items():
            status, message = attempt_state(f.get("JobState", ""), f.get("ExitCode", ""), f.get("JobId", "?"),
                                            sid in self.stopping)
            out[sid] = RayJob(sid, status, message, self.site, None, False, self._log_size(sid))
        return out

    def status(self, submission_id: str) -> str | None:
        job = self.jobs().get(submission_id)
        return job.status if job else None

    def stop(self, submission_id: str) -> None:
        self.stopping.add(submission_id)
        self._run("scancel", f"--name={submission_id}", f"--user={os.geteuid()}")

    def logs(self, submission_id: str, offset: int = 0) -> bytes:
        try:
            with (self.folder / f"{submission_id}.out").open("rb") as f:
                f.seek(offset)
                return f.read()
        except FileNotFoundError:
            return b""

    def _log_size(self, sid: str) -> int | None:
        try:
            return (self.folder / f"{sid}.out").stat().st_size
        except FileNotFoundError:
            return 0

    def forget(self, submission_ids: list[str]) -> None:
        self.stopping -= set(submission_ids)

    def _nodes(self) -> list[tuple[str, int, int, int]]:
        """(node, CPUs, memory MiB, GPUs) of each node of the site's partitions that is up."""
        args = ["sinfo", "-h", "-N", "-o", "%N|%c|%m|%G|%t"]
        args += [f"--partition={','.join(self.settings.partitions)}"] if self.settings.partitions else []
        seen = {}
        for line in self._run(*args).splitlines():
            name, cpus, mem, gres, state = (line.split("|") + [""] * 5)[:5]
            if not state.startswith(("down", "drain", "fail")) and name not in seen:
                seen[name] = (name, int(cpus or 0), int(mem.rstrip("+") or 0), gres_gpus(gres))
        return list(seen.values())

    def resources(self) -> RayResources:
        nodes = self._nodes()
        return RayResources(cpus=float(sum(n[1] for n in nodes)), memory=sum(n[2] for n in nodes) * 2**20,
                            gpus=float(sum(n[3] for n in nodes)), nodes=len(nodes))

    def nodes(self) -> list[RayNode]:
        return [RayNode({}, float(n[3])) for n in self._nodes()]
