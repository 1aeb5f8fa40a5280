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

import errno
import json
import logging
import math
import os
import pwd
import re
import shlex
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from federation.errors import ConfigError, RayError
from federation.spec.site import SlurmSpec
from policies.gpus import Inventory
from site_agent import slurm_inventory
from site_agent.isolation import JobUsers, OSUser
from site_agent.private_file import write_private
from site_agent.ray_driver import LOST_AT_SITE, SITE_KEY, RayDriver, RayJob, RayNode, RayResources
from site_agent.slurm_inventory import gres_gpus_by_model

log = logging.getLogger("site_agent.slurm")
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


def parse_jobs(text: str, site: str, ours: Callable[[int], bool]) -> dict[str, dict[str, Any]]:
    """`squeue --json` (every job slurmctld holds, ended ones for its MinJobAge): this site's jobs, by
    Slurm job id. Only jobs of the users the site runs jobs as count (`ours`): another user's job
    named and marked alike is not ours."""
    return {str(job["job_id"]): job for job in json.loads(text).get("jobs", [])
            if job.get("comment") == COMMENT + site and job.get("name") and ours(int(job.get("user_id", -1)))}


def exit_code(status: int) -> str:
    """Slurm's `N:S` from a wait status as squeue --json gives it."""
    return f"{status >> 8}:{status & 0x7F}"


def sbatch_args(sid: str, site: str, *, cpus: float, memory: int, gpus: float, time_limit: float,
                settings: SlurmSpec, folder: Path, nodes: int = 1, user: OSUser | None = None) -> list[str]:
    """sbatch's options for one attempt, given as arguments: nothing a job sets is read from a script.
    Over several nodes, the job's CPUs, memory and GPUs are split evenly, one task on each node;
    with `user`, the job is that user's (root's sbatch --uid)."""
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
    out += [f"--uid={user.uid}", f"--gid={user.gid}"] if user else []
    return out


def batch_script(entrypoint: str, runtime_env: dict[str, Any], settings: SlurmSpec, folder: Path,
                 user: OSUser | None = None) -> str:
    """The batch script of one attempt: its environment, its working folder, then Ray and the
    entrypoint (`site_agent.slurm_ray`); ConfigError when the site cannot run it as asked."""
    unknown = sorted(set(runtime_env) - RUNTIME_ENV)
    if unknown:
        raise ConfigError(f"runtime_env.{unknown[0]}: a Slurm site runs jobs in its own environment "
                          "(working_dir and env_vars only)")
    env = {k: os.environ[k] for k in PLAIN_ENV if k in os.environ}
    if user is not None:   # its folder is its home: the agent's is not its to write
        env.update(HOME=str(folder), USER=user.name, LOGNAME=user.name)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "/usr/bin:/bin")])
    for name, value in runtime_env.get("env_vars", {}).items():
        if not ENV_NAME.match(str(name)):
            raise ConfigError(f"runtime_env.env_vars: {str(name)[:64]!r} is not a variable name a shell can set")
        env[name] = str(value)
    lines = ["#!/bin/bash", *(f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items()))]
    lines.append(f"cd {shlex.quote(str(runtime_env.get('working_dir') or folder))} || exit 1")
    ray = [sys.executable, "-m", "site_agent.slurm_ray", f"--port-base={settings.ray_port_base}",
           f"--slots={settings.ray_slots}", "--", entrypoint]
    lines.append("exec " + " ".join(shlex.quote(w) for w in ray))
    return "\n".join(lines) + "\n"


class SlurmDriver(RayDriver):
    """Each attempt is claimed before it is submitted: `<sid>.jobid` in the agent's folder, made
    exclusively, then holding the Slurm job id (and the OS user it runs as). A claimed attempt is
    never submitted again, by this agent or one after it; one that Slurm no longer lists (ended
    longer ago than its MinJobAge) is read from `sacct`, else reported lost.

    With `slurm.users`, each tenant's jobs are its OS user's, in a folder of that user's alone
    (`users/<user>/`: its output, its working folder, its home), and the agent reads a log only as a file
    of that user's, never through a link."""

    binds_gpus = False

    def __init__(self, site: str, settings: SlurmSpec, folder: Path) -> None:
        self.site, self.settings, self.folder = site, settings, folder
        self.env = {**os.environ, **({"SLURM_CONF": str(settings.conf)} if settings.conf else {})}
        self.env["PATH"] = os.pathsep.join([self.env.get("PATH", ""), "/usr/sbin", "/sbin"])
        self.stopping: set[str] = set()
        self.gone: dict[str, RayJob] = {}   # claimed attempts Slurm no longer lists, as they ended
        self.users = JobUsers(None, settings.users, "spec.slurm.users")
        if settings.users and os.geteuid() != 0:
            raise ConfigError("spec.slurm.users: submitting as each tenant's user (sbatch --uid) needs the agent "
                              "to run as root")
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if settings.users:
            folder.chmod(0o711)   # each user may pass through to its own folder, not list the agent's
            (folder / "users").mkdir(exist_ok=True, mode=0o711)

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
            return parse_jobs(self._run("squeue", "--json"), self.site,
                              lambda uid: uid == os.geteuid() or self.users.owns(uid))
        except (ValueError, KeyError, TypeError) as e:
            raise RayError(f"squeue --json: unreadable: {e}") from None

    def _claim(self, sid: str) -> Path:
        return self.folder / f"{sid}.jobid"

    def _claims(self) -> dict[str, str]:
        """Claimed attempts and their Slurm job ids ('' while sbatch has not answered)."""
        return {sid: job_id for sid, (job_id, _) in self._claimed().items()}

    def _claimed(self) -> dict[str, tuple[str, str]]:
        """Claimed attempts, their Slurm job ids and the OS users they run as ('' for the agent's)."""
        out = {}
        for p in self.folder.glob("*.jobid"):
            job_id, _, user = p.read_text().strip().partition(" ")
            out[p.name.removesuffix(".jobid")] = (job_id, user)
        return out

    def _home(self, user: OSUser | None) -> Path:
        """Where a job of `user` writes: the agent's folder, or a folder of that user's alone."""
        if user is None:
            return self.folder
        home = self.folder / "users" / user.name
        home.mkdir(exist_ok=True, mode=0o700)   # in a folder of root's: no one else can have put a link here
        os.chown(home, user.uid, user.gid, follow_symlinks=False)
        return home

    def submit(self, submission_id: str, entrypoint: str, runtime_env: dict[str, Any], *, cpus: float,
               memory: int, gpus: float, metadata: dict[str, str], task: bool = False,
               label_selector: dict[str, str] | None = None) -> bool:
        user = self.users.of(metadata.get("tenant", "")) if self.settings.users else None
        home = self._home(user)
        args = sbatch_args(submission_id, metadata[SITE_KEY], cpus=cpus, memory=memory, gpus=gpus,
                           time_limit=float(metadata.get("time_limit") or 0), settings=self.settings,
                           folder=home, nodes=int(metadata.get("nodes") or 1), user=user)
        script = batch_script(entrypoint, runtime_env, self.settings, home, user)
        try:
            fd = os.open(self._claim(submission_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False   # claimed already: adopted, never submitted twice
        path = self.folder / f"{submission_id}.sbatch"
        write_private(path, script)   # its environment may hold the job's secrets
        try:
            job_id = self._run("sbatch", "--parsable", *args, str(path)).strip().split(";")[0]
        except RayError:
            os.close(fd)
            self._claim(submission_id).unlink(missing_ok=True)   # never submitted: free to try again
            raise
        os.write(fd, f"{job_id} {user.name if user else ''}".strip().encode())
        os.close(fd)
        return True

    def jobs(self) -> dict[str, RayJob]:
        held, claims, out = self._held(), self._claimed(), {}
        for job_id, job in sorted(held.items(), key=lambda kv: int(kv[0])):
            # An agent whose folder was lost sent it: adopted. Only a job of the agent's own user, never
            # one a tenant's user could have submitted named as an attempt to come.
            if job["name"] not in claims and SUBMISSION.match(job["name"]) and job.get("user_id") == os.geteuid():
                self._claim(job["name"]).write_text(job_id)
                claims[job["name"]] = (job_id, "")
        for sid, (job_id, user) in claims.items():
            found = held.get(job_id)
            if found is not None:
                code = exit_code(int(found.get("exit_code") or 0))
                status, message = attempt_state(found.get("job_state", ""), code, job_id, sid in self.stopping)
                out[sid] = RayJob(sid, status, message, self.site, None, False, self._log_size(sid, user))
            elif job_id:
                out[sid] = self.gone.get(sid) or self._ended(sid, job_id, user)
        return out

    def _ended(self, sid: str, job_id: str, user: str) -> RayJob:
        """A claimed attempt Slurm no longer lists: how it ended, by sacct where Slurm keeps accounts."""
        try:
            fields = self._run("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State,ExitCode").split("|")
            state, code = fields[0].split()[0], fields[1].strip()
        except (RayError, IndexError):
            state, code = "", ""
        status, message = (attempt_state(state, code, job_id, sid in self.stopping) if state else
                           ("FAILED", f"{LOST_AT_SITE}Slurm no longer knows job {job_id}, and keeps no account of it"))
        job = RayJob(sid, status, message, self.site, None, False, self._log_size(sid, user))
        if job.terminal:   # one squeue stopped listing as ours (its comment changed) is asked again
            self.gone[sid] = job
        return job

    def status(self, submission_id: str) -> str | None:
        job = self.jobs().get(submission_id)
        return job.status if job else None

    def stop(self, submission_id: str) -> None:
        self.stopping.add(submission_id)
        job_id = self._claims().get(submission_id)
        if job_id:
            self._run("scancel", job_id)

    def logs(self, submission_id: str, offset: int = 0) -> bytes:
        fd = self._open_log(submission_id)
        if fd is None:
            return b""
        with os.fdopen(fd, "rb") as f:
            f.seek(offset)
            return f.read()

    def _log_size(self, sid: str, user: str | None = None) -> int | None:
        fd = self._open_log(sid, user)
        if fd is None:
            return 0
        try:
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def _open_log(self, sid: str, name: str | None = None) -> int | None:
        """The attempt's output file, open for reading; None while there is none, or when it is not
        a plain file of the user the attempt runs as (`name`, '' for the agent's; None: read from its
        claim). A job may replace its output with a link to what only the agent may read."""
        if name is None:
            try:
                name = self._claim(sid).read_text().strip().partition(" ")[2]
            except FileNotFoundError:
                name = ""
        path = self.folder / "users" / name / f"{sid}.out" if name else self.folder / f"{sid}.out"
        try:
            owner = pwd.getpwnam(name).pw_uid if name else os.geteuid()
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except KeyError:
            return None
        except OSError as e:
            if e.errno == errno.ELOOP:
                log.warning("the log of %s is a link: not read", sid)
            return None
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode) and info.st_uid == owner:
            return fd
        os.close(fd)
        log.warning("the log of %s is not a plain file of %s: not read", sid, name or "the agent's user")
        return None

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
