"""A site whose local scheduler is Slurm (`spec.backend: slurm`), behind the same driver interface as
a Ray cluster: each attempt is a Slurm batch job, named by its submission id and marked with the
site in its comment, that starts a Ray cluster on its allocation (`site_agent.slurm_ray`), runs the
job's entrypoint through it and tears it down. Slurm keeps deciding which node and when (its fair
share, partitions, limits); the federation decides which site.

Submitting is idempotent across agent restarts: each attempt is claimed in the agent's folder
before `sbatch` and followed by its Slurm job id (`SlurmDriver`). `squeue --json` lists what Slurm
holds (ended jobs for its MinJobAge); `scancel` stops a job (SIGTERM, then SIGKILL after Slurm's
KillWait); its output file is its log.
A job Slurm itself cancelled, preempted or lost with its node is reported lost, and its retry
policy runs it again; one past its Slurm time limit failed."""
from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from federation.errors import ConfigError, RayError
from federation.spec.site import SlurmSpec
from policies.gpus import Inventory
from site_agent import slurm_inventory
from site_agent.ray_driver import LOST_AT_SITE, SITE_KEY, RayDriver, RayJob, RayNode, RayResources
from site_agent.slurm_inventory import gres_gpus_by_model

COMMENT = "federation_site="
# Slurm's job states by what they mean for an attempt (`squeue --help`, JOB STATE CODES).
WAITING = frozenset({"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD",
                     "RESIZING"})
RUNNING = frozenset({"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "SUSPENDED", "STOPPED"})
TAKEN = frozenset({"NODE_FAIL", "PREEMPTED", "BOOT_FAIL"})   # by the site, not by the job
PLAIN_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
RUNTIME_ENV = frozenset({"working_dir", "env_vars"})
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SUBMISSION = re.compile(r"^fed-[A-Za-z0-9-]{1,120}$")   # an attempt's name: safe as a file name


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


def parse_jobs(text: str, site: str, uid: int) -> dict[str, dict[str, Any]]:
    """`squeue --json` (every job slurmctld holds, ended ones for its MinJobAge): this site's jobs, by
    Slurm job id. Only jobs of the agent's own user count: another user's job named and marked alike
    is not ours."""
    return {str(job["job_id"]): job for job in json.loads(text).get("jobs", [])
            if job.get("comment") == COMMENT + site and job.get("name") and job.get("user_id") == uid}


def exit_code(status: int) -> str:
    """Slurm's `N:S` from a wait status as squeue --json gives it."""
    return f"{status >> 8}:{status & 0x7F}"


def sbatch_args(sid: str, site: str, *, cpus: float, memory: int, gpus: float, time_limit: float,
                settings: SlurmSpec, folder: Path, nodes: int = 1) -> list[str]:
    """sbatch's options for one attempt, given as arguments: nothing a job sets is read from a script.
    Over several nodes, the job's CPUs, memory and GPUs are split evenly, one task on each node."""
    if gpus and gpus != int(gpus):
        raise ConfigError(f"resources.gpus: {gpus:g}; Slurm gives whole GPUs")
    if gpus and int(gpus) % nodes:
        raise ConfigError(f"resources.gpus: {gpus:g} do not split evenly over {nodes} nodes")
    limit = time_limit or settings.time_limit
    out = [f"--job-name={sid}", f"--comment={COMMENT}{site}", f"--output={folder / sid}.out", f"--nodes={nodes}",
           f"--ntasks={nodes}", "--ntasks-per-node=1", f"--cpus-per-task={max(1, math.ceil(cpus / nodes))}",
           "--export=NONE", "--no-requeue", f"--chdir={folder}"]
    out += [f"--mem={max(1, math.ceil(memory / nodes / 2**20))}M"] if memory else []
    out += [f"--gres=gpu:{int(gpus) // nodes}"] if gpus else []
    out += [f"--time={max(1, math.ceil(limit / 60))}"] if limit else []
    out += [f"--partition={','.join(settings.partitions)}"] if settings.partitions else []
    out += [f"--account={settings.account}"] if settings.account else []
    out += [f"--qos={settings.qos}"] if settings.qos else []
    return out


def batch_script(entrypoint: str, runtime_env: dict[str, Any], settings: SlurmSpec, folder: Path) -> str:
    """The batch script of one attempt: its environment, its working folder, then Ray and the
    entrypoint (`site_agent.slurm_ray`); ConfigError when the site cannot run it as asked."""
    unknown = sorted(set(runtime_env) - RUNTIME_ENV)
    if unknown:
        raise ConfigError(f"runtime_env.{unknown[0]}: a Slurm site runs jobs in its own environment "
                          "(working_dir and env_vars only)")
    env = {k: os.environ[k] for k in PLAIN_ENV if k in os.environ}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "/usr/bin:/bin")])
    for name, value in runtime_env.get("env_vars", {}).items():
        if not ENV_NAME.match(str(name)):
            raise ConfigError(f"runtime_env.env_vars: {str(name)[:64]!r} is not a variable name a shell can set")
        env[name] = str(value)
    lines = ["#!/bin/bash", *(f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items()))]
    lines.append(f"cd {shlex.quote(str(runtime_env.get('working_dir') or folder))} || exit 1")
    ray = [sys.executable, "-m", "site_agent.slurm_ray", f"--port-base={settings.ray_port_base}",
           f"--slots={settings.ray_slots}", f"--temp={folder / 'ray'}", "--", entrypoint]
    lines.append("exec " + " ".join(shlex.quote(w) for w in ray))
    return "\n".join(lines) + "\n"


class SlurmDriver(RayDriver):
    """Each attempt is claimed before it is submitted: `<sid>.jobid` in the agent's folder, made
    exclusively, then holding the Slurm job id. A claimed attempt is never submitted again, by this
    agent or one after it; one that Slurm no longer lists (ended longer ago than its MinJobAge) is
    read from `sacct`, else reported lost."""

    binds_gpus = False

    def __init__(self, site: str, settings: SlurmSpec, folder: Path) -> None:
        self.site, self.settings, self.folder = site, settings, folder
        self.env = {**os.environ, **({"SLURM_CONF": str(settings.conf)} if settings.conf else {})}
        self.env["PATH"] = os.pathsep.join([self.env.get("PATH", ""), "/usr/sbin", "/sbin"])
        self.stopping: set[str] = set()
        self.gone: dict[str, RayJob] = {}   # claimed attempts Slurm no longer lists, as they ended
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _run(self, *args: str) -> str:
        try:
            done = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise RayError(f"{args[0]}: {e}") from None
        if done.returncode:
            raise RayError(f"{' '.join(args[:2])}: exit {done.returncode}: {done.stderr.strip()[:300]}")
        return done.stdout

    def _held(self) -> dict[str, dict[str, Any]]:
        try:
            return parse_jobs(self._run("squeue", "--json"), self.site, os.geteuid())
        except (ValueError, KeyError, TypeError) as e:
            raise RayError(f"squeue --json: unreadable: {e}") from None

    def _claim(self, sid: str) -> Path:
        return self.folder / f"{sid}.jobid"

    def _claims(self) -> dict[str, str]:
        """Claimed attempts and their Slurm job ids ('' while sbatch has not answered)."""
        return {p.name.removesuffix(".jobid"): p.read_text().strip() for p in self.folder.glob("*.jobid")}

    def submit(self, submission_id: str, entrypoint: str, runtime_env: dict[str, Any], *, cpus: float,
               memory: int, gpus: float, metadata: dict[str, str], task: bool = False,
               label_selector: dict[str, str] | None = None) -> bool:
        args = sbatch_args(submission_id, metadata[SITE_KEY], cpus=cpus, memory=memory, gpus=gpus,
                           time_limit=float(metadata.get("time_limit") or 0), settings=self.settings,
                           folder=self.folder, nodes=int(metadata.get("nodes") or 1))
        script = batch_script(entrypoint, runtime_env, self.settings, self.folder)
        try:
            fd = os.open(self._claim(submission_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False   # claimed already: adopted, never submitted twice
        path = self.folder / f"{submission_id}.sbatch"
        path.write_text(script)
        try:
            job_id = self._run("sbatch", "--parsable", *args, str(path)).strip().split(";")[0]
        except RayError:
            os.close(fd)
            self._claim(submission_id).unlink(missing_ok=True)   # never submitted: free to try again
            raise
        os.write(fd, job_id.encode())
        os.close(fd)
        return True

    def jobs(self) -> dict[str, RayJob]:
        held, claims, out = self._held(), self._claims(), {}
        for job_id, job in sorted(held.items(), key=lambda kv: int(kv[0])):
            if job["name"] not in claims and SUBMISSION.match(job["name"]):
                self._claim(job["name"]).write_text(job_id)   # an agent whose folder was lost sent it: adopted
                claims[job["name"]] = job_id
        for sid, job_id in claims.items():
            found = held.get(job_id)
            if found is not None:
                code = exit_code(int(found.get("exit_code") or 0))
                status, message = attempt_state(found.get("job_state", ""), code, job_id, sid in self.stopping)
                out[sid] = RayJob(sid, status, message, self.site, None, False, self._log_size(sid))
            elif job_id:
                out[sid] = self.gone.get(sid) or self._ended(sid, job_id)
        return out

    def _ended(self, sid: str, job_id: str) -> RayJob:
        """A claimed attempt Slurm no longer lists: how it ended, by sacct where Slurm keeps accounts."""
        try:
            fields = self._run("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State,ExitCode").split("|")
            state, code = fields[0].split()[0], fields[1].strip()
        except (RayError, IndexError):
            state, code = "", ""
        status, message = (attempt_state(state, code, job_id, sid in self.stopping) if state else
                           ("FAILED", f"{LOST_AT_SITE}Slurm no longer knows job {job_id}, and keeps no account of it"))
        self.gone[sid] = RayJob(sid, status, message, self.site, None, False, self._log_size(sid))
        return self.gone[sid]

    def status(self, submission_id: str) -> str | None:
        job = self.jobs().get(submission_id)
        return job.status if job else None

    def stop(self, submission_id: str) -> None:
        self.stopping.add(submission_id)
        job_id = self._claims().get(submission_id)
        if job_id:
            self._run("scancel", job_id)

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
        """Ended attempts the federation has taken in: their claims go (their logs stay)."""
        for sid in submission_ids:
            self._claim(sid).unlink(missing_ok=True)
            self.gone.pop(sid, None)
        self.stopping -= set(submission_ids)

    def _nodes(self) -> list[tuple[str, int, int, int]]:
        """(node, CPUs, memory MiB, GPUs) of each node of the site's partitions that is up."""
        seen = {}
        for line in self._sinfo("%N|%c|%m|%G|%t").splitlines():
            name, cpus, mem, gres, state = (line.split("|") + [""] * 5)[:5]
            if not state.startswith(("down", "drain", "fail")) and name not in seen:
                seen[name] = (name, int(cpus or 0), int(mem.rstrip("+") or 0), sum(gres_gpus_by_model(gres).values()))
        return list(seen.values())

    def inventory(self) -> Inventory:
        """GPU nodes by Slurm's GRES, in racks and blocks by its topology where configured."""
        try:
            topology = self._run("scontrol", "show", "topology")
        except RayError:
            topology = ""   # no topology plugin
        return slurm_inventory.inventory(self._sinfo("%N|%G|%t"), topology)

    def _sinfo(self, fields: str) -> str:
        """One line per node (and partition) of the site's partitions."""
        partitions = [f"--partition={','.join(self.settings.partitions)}"] if self.settings.partitions else []
        return self._run("sinfo", "-h", "-N", "-o", fields, *partitions)

    def resources(self) -> RayResources:
        nodes = self._nodes()
        return RayResources(cpus=float(sum(n[1] for n in nodes)), memory=sum(n[2] for n in nodes) * 2**20,
                            gpus=float(sum(n[3] for n in nodes)), nodes=len(nodes))

    def nodes(self) -> list[RayNode]:
        return [RayNode({}, float(n[3])) for n in self._nodes()]
