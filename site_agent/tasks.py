"""The agent's side of the task path: the site's runner (`site_agent.runner`), a Ray job of the agent's
own that it starts once and adopts after a restart, and `Executions`, the driver that hands each
attempt to the runner or to Ray's Jobs API as its spec says.

The runner's submission id is kept in the agent's work_dir (`.fedctl-runner/<site>.json`, this
user's alone), so an agent restarted finds the runner its predecessor left and the attempts it
holds, and trusts no other job that calls itself a runner.
"""
from __future__ import annotations

import http.client
import json
import logging
import os
import secrets
import shlex
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from federation.errors import RayError
from federation.jobs import parse_submission_id
from site_agent.private_file import write_private
from site_agent.ray_driver import SITE_KEY, RayDriver, RayJob, RayJobsDriver, RayNode, RayResources, Vanished
from site_agent.runner import READY
from site_agent.tenant_heads import Busy

log = logging.getLogger("site_agent")

FOLDER = ".fedctl-runner"
ENTRYPOINT = f"{shlex.quote(sys.executable)} -m site_agent.runner"
CALL_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 120.0
RAY_JOBS_EVERY_S = 2.0
RUNNER_SILENT_S = 60.0
MAX_HANDED = 200_000
PACKAGES_KEPT_S = 5.0


def runner_path(work_dir: Path, site: str) -> Path:
    return work_dir / FOLDER / f"{site}.json"


class Handed:
    """Which runner each attempt was handed to, kept beside the runner's record (`<site>.handed`,
    this user's alone). Ray's Jobs API keeps every job it ran, so a second start under one id is a
    no-op; a runner keeps only its own: an attempt handed to one that is gone may have run, and must
    never start again under its id (`Vanished`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.runner: dict[str, str] = {}   # attempt -> runner, the newest MAX_HANDED
        try:
            if not all(_private(p.stat()) for p in (path.parent, path)):
                raise PermissionError(f"{path} or its folder is not this agent's alone")
            for line in path.read_text().splitlines()[-MAX_HANDED:]:
                runner, _, sid = line.partition(" ")
                self.runner[sid] = runner
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("not reading %s: %s", path, e)
        if len(self.runner) >= MAX_HANDED // 2:   # kept short: written again with only the newest
            write_private(path, "".join(f"{r} {sid}\n" for sid, r in self.runner.items()))

    def hand(self, sid: str, runner: str) -> None:
        if self.runner.get(sid) == runner:
            return
        self.runner[sid] = runner
        if len(self.runner) > MAX_HANDED:
            del self.runner[next(iter(self.runner))]   # the oldest: long ended, and taken in by the federation
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, f"{runner} {sid}\n".encode())
        finally:
            os.close(fd)


class TaskRunner:
    """One site's runner, started on first use; its HTTP calls, one at a time."""

    def __init__(self, jobs: RayJobsDriver, site: str, path: Path) -> None:
        self.jobs, self.site, self.path = jobs, site, path
        self.record: dict[str, str] | None = self._load()
        self.handed = Handed(path.with_suffix(".handed"))
        self.address = self.token = ""
        self.submitted_at = 0.0
        self.failing_since = 0.0   # since when the runner has not answered, Ray saying it runs
        self.conn: http.client.HTTPConnection | None = None
        self.poll: tuple[str, http.client.HTTPConnection] | None = None   # the long poll's own (address, connection)
        self.poll_lock = threading.Lock()
        self.lock = threading.RLock()

    def _load(self) -> dict[str, str] | None:
        """The runner this site's agent started last, believed only when it and its folder are this user's alone:
        a record planted by another would hand every task's command and environment to a server of theirs."""
        try:
            if not all(_private(p.stat()) for p in (self.path.parent, self.path)):
                log.warning("not reading %s: it or its folder is not this agent's alone", self.path)
                return None
            data = json.loads(self.path.read_text())
            return {k: str(data[k]) for k in ("submission_id", "address", "token") if k in data}
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _up(self) -> bool:
        """Whether the runner answers; False while it starts or when there is none (then it holds nothing)."""
        if self.address:
            return True
        if self.record is None:
            return False
        sid = self.record["submission_id"]
        status = self.jobs.status(sid)
        if status in (None, "SUCCEEDED", "FAILED", "STOPPED"):
            log.warning("the task runner %s is %s; its attempts are gone", sid, (status or "gone").lower())
            self.record = None
            self.path.unlink(missing_ok=True)
            return False
        if status == "RUNNING" and "address" in self.record:
            self.address, self.token = self.record["address"], self.record["token"]
        elif status == "RUNNING":
            # Read from its log once, then kept with its id: a line written there later is not believed.
            line = next((ln for ln in self.jobs.logs(sid).decode(errors="replace").splitlines()
                         if ln.startswith(READY)), "")
            self.address, _, self.token = line[len(READY):].strip().partition(" ")
            if self.address:
                self.record = {**self.record, "address": self.address, "token": self.token}
                write_private(self.path, json.dumps(self.record))
        if not self.address and self.submitted_at and time.monotonic() - self.submitted_at > READY_TIMEOUT_S:
            self.jobs.stop(sid)   # stopped, it is found gone next time and another starts
            raise RayError(f"the task runner {sid} did not answer within {READY_TIMEOUT_S:g}s; stopping it")
        return bool(self.address)

    def ensure(self) -> None:
        """Raises Busy until the runner answers, starting one if there is none."""
        with self.lock:
            if self._up():
                return
            if self.record is None:
                self.record = {"submission_id": f"fedctl-runner-{self.site}-{secrets.token_hex(4)}"}
                write_private(self.path, json.dumps(self.record))   # before Ray holds it: never two unknown
                self.jobs.submit(self.record["submission_id"], ENTRYPOINT, {}, cpus=0, memory=0, gpus=0,
                                 metadata={SITE_KEY: self.site, "fedctl_role": "runner"})
                self.submitted_at = time.monotonic()
                log.info("starting the task runner %s", self.record["submission_id"])
        raise Busy("the site's task runner is starting")

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> bytes:
        with self.lock:
            if not self._up():
                raise Busy("the site's task runner is starting")
            assert self.record is not None
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
            for tries in (1, 2):   # a kept connection the runner has closed: once more on a new one
                try:
                    if self.conn is None:
                        host, port = self.address.rsplit(":", 1)
                        self.conn = http.client.HTTPConnection(host, int(port), timeout=CALL_TIMEOUT_S)
                    self.conn.request(method, path, body=payload, headers=headers)
                    response = self.conn.getresponse()
                    data = response.read()
                except (OSError, http.client.HTTPException) as e:
                    address, self.conn, self.address = self.address, None, ""
                    if tries == 2 or not self._up():
                        # Busy: the call is tried again next pass (each is idempotent), never taken for
                        # the attempt's failure: the runner may hold it already.
                        raise Busy(f"the task runner at {address} did not answer: {e}") from None
                    continue
                if response.status != 200:
                    raise RayError(f"the task runner: {path}: {response.status} {data.decode(errors='replace')[:300]}")
                return data
        raise AssertionError("unreachable")

    def changes(self, since: int, wait_s: float) -> int:
        """The runner's version once an attempt has ended after version `since`, or after `wait_s`.
        On a connection of its own, so that the other calls do not wait behind it."""
        with self.lock:
            if not self._up():
                raise Busy("the site's task runner is starting")
            address, token = self.address, self.token
        with self.poll_lock:   # a session's watcher may still be in its last poll when the next one's starts
            return self._poll(address, token, since, wait_s)

    def _poll(self, address: str, token: str, since: int, wait_s: float) -> int:
        if self.poll is None or self.poll[0] != address:
            host, port = address.rsplit(":", 1)
            self.poll = (address, http.client.HTTPConnection(host, int(port), timeout=wait_s + CALL_TIMEOUT_S))
        try:
            self.poll[1].request("GET", "/changes?" + urlencode({"since": since, "wait": wait_s}),
                                 headers={"Authorization": f"Bearer {token}"})
            response = self.poll[1].getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as e:
            self.poll = None
            raise RayError(f"the task runner at {address}: {e}") from None
        if response.status != 200:
            raise RayError(f"the task runner: /changes: {response.status}")
        return int(data)

    def _give_up(self, error: RayError) -> None:
        """A runner Ray says runs but that has not answered for RUNNER_SILENT_S holds up every report
        of this site: stop it. Its tasks go with it (their watchers stop their jobs), and the next
        listing finds it gone, so the federation retries its attempts elsewhere or here."""
        now = time.monotonic()
        self.failing_since = self.failing_since or now
        if now - self.failing_since > RUNNER_SILENT_S and self.record is not None:
            log.error("the task runner %s has not answered for %.0fs (%s); stopping it",
                      self.record["submission_id"], now - self.failing_since, error.message)
            self.jobs.stop(self.record["submission_id"])
            self.failing_since = 0.0

    def attempts(self) -> dict[str, RayJob]:
        with self.lock:
            if not self._up():
                return {}   # none, or one just submitted: it holds no attempt yet
            try:
                listed = json.loads(self.call("GET", "/attempts"))
                self.failing_since = 0.0
            except RayError as e:
                if self.record is None:
                    return {}   # the runner is gone, and its attempts with it
                self._give_up(e)
                raise
        return {sid: RayJob(sid, r["status"], r["message"], r["site"], r["tenant"], r["guarded"], r["log_size"])
                for sid, r in listed.items()}


def _private(st: os.stat_result) -> bool:
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


class Executions(RayDriver):
    """The site's Ray cluster with both paths: Ray jobs, and tasks of the site's runner."""

    runs_tasks = True

    def __init__(self, jobs: RayJobsDriver, runner: TaskRunner) -> None:
        self.ray_jobs, self.runner = jobs, runner
        self.tasks: dict[str, str] = {}   # the runner's attempts and their states, as last seen
        self.listed: tuple[float, dict[str, RayJob]] | None = None   # Ray's job list, and when it was read
        self.busy = False   # a federation job may be running on the Ray-job path
        self.packages: dict[str, tuple[float, dict[str, Any]]] = {}   # local files -> (when, uploaded URIs)
        self.lock = threading.Lock()

    def _task(self, submission_id: str) -> bool:
        with self.lock:
            return submission_id in self.tasks

    def submit(self, submission_id: str, entrypoint: str, runtime_env: dict[str, Any], *, cpus: float,
               memory: int, gpus: float, metadata: dict[str, str], task: bool = False,
               label_selector: dict[str, str] | None = None) -> bool:
        if not task:
            self.busy = True
            return self.ray_jobs.submit(submission_id, entrypoint, runtime_env, cpus=cpus, memory=memory, gpus=gpus,
                                        metadata=metadata, label_selector=label_selector)
        self.runner.ensure()
        assert self.runner.record is not None
        current, earlier = self.runner.record["submission_id"], self.runner.handed.runner.get(submission_id)
        if earlier not in (None, current):
            raise Vanished(f"handed to the task runner {earlier}, which is gone: it may have run, so it is not "
                           "started again under its id")
        self.runner.handed.hand(submission_id, current)
        env = self._packaged(runtime_env)
        body = {"sid": submission_id, "command": entrypoint, "env": env.pop("env_vars", {}), "runtime_env": env,
                "cpus": cpus, "memory": memory, "gpus": gpus, "labels": label_selector or {},
                "site": metadata.get(SITE_KEY),
                "tenant": metadata.get("tenant"), "guarded": "FEDCTL_LEASE_FILE" in runtime_env.get("env_vars", {})}
        started = bool(json.loads(self.runner.call("POST", "/start", body))["started"])
        with self.lock:
            self.tasks.setdefault(submission_id, "PENDING")
        return started

    def jobs(self) -> dict[str, RayJob]:
        tasks = self.runner.attempts()
        listed = self._ray_jobs()
        with self.lock:
            self.tasks = {sid: job.status for sid, job in tasks.items()}
        return listed | tasks

    def _packaged(self, runtime_env: dict[str, Any]) -> dict[str, Any]:
        """Uploaded once for a burst of attempts alike (an array's elements): Ray hashes every file."""
        files: dict[str, Any] = {k: runtime_env[k] for k in ("working_dir", "py_modules") if k in runtime_env}
        if not files:
            return dict(runtime_env)
        key, now = json.dumps(files, sort_keys=True), time.monotonic()
        cached = self.packages.get(key)
        if cached is None or now - cached[0] > PACKAGES_KEPT_S:
            self.packages = {k: v for k, v in self.packages.items() if now - v[0] <= PACKAGES_KEPT_S}
            cached = self.packages[key] = (now, self.ray_jobs.packaged(files))
        return {**runtime_env, **cached[1]}

    def _ray_jobs(self) -> dict[str, RayJob]:
        """Ray's own job list, which grows with its history and costs the dashboard a query: each pass
        while a federation job may run there, else every RAY_JOBS_EVERY_S."""
        now = time.monotonic()
        if self.listed is None or self.busy or now - self.listed[0] > RAY_JOBS_EVERY_S:
            listed = self.ray_jobs.jobs()
            self.listed = (now, listed)
            self.busy = any(not job.terminal and parse_submission_id(sid) for sid, job in listed.items())
        return self.listed[1]

    def status(self, submission_id: str) -> str | None:
        return self.statuses([submission_id])[submission_id]

    def statuses(self, submission_ids: list[str]) -> dict[str, str | None]:
        """Tasks as last listed: the runner's long poll (`changes`) wakes a pass when one starts."""
        with self.lock:
            tasks = {sid: self.tasks.get(sid, "PENDING") for sid in submission_ids if sid in self.tasks}
        return tasks | {sid: self.ray_jobs.status(sid) for sid in submission_ids if sid not in tasks}

    def stop(self, submission_id: str) -> None:
        if self._task(submission_id):
            self.runner.call("POST", "/stop", {"sid": submission_id})
        else:
            self.ray_jobs.stop(submission_id)

    def logs(self, submission_id: str, offset: int = 0) -> bytes:
        if not self._task(submission_id):
            return self.ray_jobs.logs(submission_id, offset)
        return self.runner.call("GET", "/logs?" + urlencode({"sid": submission_id, "offset": offset}))

    def forget(self, submission_ids: list[str]) -> None:
        ended = [sid for sid in submission_ids if self._task(sid)]
        if ended:
            self.runner.call("POST", "/forget", {"sids": ended})
            with self.lock:
                for sid in ended:
                    self.tasks.pop(sid, None)

    def changes(self, since: int, wait_s: float) -> int:
        return self.runner.changes(since, wait_s)

    def resources(self) -> RayResources:
        return self.ray_jobs.resources()

    def nodes(self) -> list[RayNode]:
        return self.ray_jobs.nodes()
