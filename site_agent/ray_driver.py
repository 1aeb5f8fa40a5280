"""Ray behind an interface. `ray` is imported only when a real driver is built."""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federation.errors import RayError
from policies.gpus import Inventory
from site_agent import guard

SITE_KEY = "federation_site"   # job metadata naming the site that submitted it
# A FAILED job's message from its driver (never from its output) when the site's own scheduler took
# it away (Slurm's scancel, preemption, a node failure): the attempt is lost, and retried by policy.
LOST_AT_SITE = "lost at the site: "


class Vanished(RayError):
    """The attempt was handed to a runner that is gone: it may have run, and never starts again under its id."""


@dataclass(frozen=True)
class RayJob:
    submission_id: str
    status: str          # Ray's JobStatus name: PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED
    message: str = ""
    site: str | None = None   # from the job's metadata; None for jobs submitted otherwise
    tenant: str | None = None  # likewise
    guarded: bool = False      # run behind its guard (site_agent.guard) with the agent's lease
    log_size: int | None = None   # bytes of output so far, where known without reading them (the task path)

    @property
    def terminal(self) -> bool:
        return self.status in ("SUCCEEDED", "FAILED", "STOPPED")


@dataclass(frozen=True)
class RayResources:
    cpus: float
    memory: int
    gpus: float
    nodes: int


@dataclass(frozen=True)
class RayNode:
    labels: dict[str, str]
    gpus: float


class RayDriver(ABC):
    runs_tasks = False   # whether it has the task path (site_agent.tasks) besides Ray jobs
    binds_gpus = True    # whether it honours the federation's GPU binding (a Slurm site's Slurm binds its own)

    @abstractmethod
    def submit(self, submission_id: str, entrypoint: str, runtime_env: dict[str, Any], *, cpus: float,
               memory: int, gpus: float, metadata: dict[str, str], task: bool = False,
               label_selector: dict[str, str] | None = None) -> bool:
        """Start a job (with `task`, as a task of the site's runner), on nodes whose labels match
        `label_selector`: True; a second call with the same id is a no-op: False."""

    @abstractmethod
    def jobs(self) -> dict[str, RayJob]:
        """Every job the cluster knows, by submission id. Raises RayError when unreachable."""

    @abstractmethod
    def status(self, submission_id: str) -> str | None:
        """One job's status name, or None if the cluster does not know it."""

    def statuses(self, submission_ids: list[str]) -> dict[str, str | None]:
        return {sid: self.status(sid) for sid in submission_ids}

    @abstractmethod
    def stop(self, submission_id: str) -> None: ...

    @abstractmethod
    def logs(self, submission_id: str, offset: int = 0) -> bytes:
        """The job's output from byte `offset` on."""

    def changes(self, since: int, wait_s: float) -> int:
        """With `runs_tasks`: a version that moves past `since` once a task starts or ends, waiting up to `wait_s`."""
        raise NotImplementedError

    def forget(self, submission_ids: list[str]) -> None:
        """Ended jobs the agent has reported and needs no more; Ray's Jobs API keeps them anyway."""
        return None

    @abstractmethod
    def resources(self) -> RayResources: ...

    def inventory(self) -> Inventory | None:
        """GPU nodes as the cluster's own scheduler knows them; None: ask NVML (a Ray cluster)."""
        return None

    @abstractmethod
    def nodes(self) -> list[RayNode]:
        """Alive nodes with their labels and GPU totals. Raises RayError when unreachable."""


class RayJobsDriver(RayDriver):
    """Talks to a Ray cluster's Jobs API (the dashboard's HTTP endpoint)."""

    def __init__(self, address: str, token_path: Path | None = None) -> None:
        self.address = address if "://" in address else f"http://{address}"
        self._client: Any = None   # ray.job_submission.JobSubmissionClient, made on first use
        # This cluster's own token (else Ray's, from the environment): one agent may talk to several.
        self.token_path = token_path

    def _headers(self) -> dict[str, str] | None:
        if self.token_path is None:
            return None
        return {"Authorization": f"Bearer {self.token_path.read_text().strip()}"}

    @property
    def client(self):
        if self._client is None:
            from ray.job_submission import JobSubmissionClient
            try:
                self._client = JobSubmissionClient(self.address, headers=self._headers())
            except Exception as e:
                raise RayError(f"Ray Jobs API at {self.address} is unreachable: {_first_line(e)}") from None
        return self._client

    def submit(self, submission_id: str, entrypoint: str, runtime_env: dict[str, Any], *, cpus: float,
               memory: int, gpus: float, metadata: dict[str, str], task: bool = False,
               label_selector: dict[str, str] | None = None) -> bool:
        assert not task, "the task path is site_agent.tasks.Executions'"
        try:
            self.client.submit_job(
                entrypoint=entrypoint, submission_id=submission_id, runtime_env=runtime_env or None,
                metadata=metadata, entrypoint_num_cpus=cpus or None, entrypoint_num_gpus=gpus or None,
                entrypoint_memory=int(memory) or None, entrypoint_label_selector=label_selector or None)
            return True
        except Exception as e:
            if "already exists" in str(e):
                return False
            raise RayError(f"submitting {submission_id}: {_first_line(e)}") from None

    def packaged(self, runtime_env: dict[str, Any]) -> dict[str, Any]:
        """The runtime_env with its local working_dir and py_modules uploaded to the cluster, as for a
        Ray job; a task (the task path) may name only such uploaded packages."""
        env = dict(runtime_env)
        try:
            self.client._upload_working_dir_if_needed(env)
            self.client._upload_py_modules_if_needed(env)
        except Exception as e:
            raise RayError(f"uploading the runtime_env's files: {_first_line(e)}") from None
        return env

    def jobs(self) -> dict[str, RayJob]:
        try:
            details = self.client.list_jobs()
        except RayError:
            raise
        except Exception as e:
            raise RayError(f"listing jobs at {self.address}: {_first_line(e)}") from None
        return {d.submission_id: RayJob(d.submission_id, d.status.value, d.message or "",
                                        (d.metadata or {}).get(SITE_KEY), (d.metadata or {}).get("tenant"),
                                        d.entrypoint == guard.ENTRYPOINT)
                for d in details if d.submission_id}

    def status(self, submission_id: str) -> str | None:
        try:
            return self.client.get_job_status(submission_id).value
        except RuntimeError as e:
            if "does not exist" in str(e):
                return None
            raise RayError(f"reading status of {submission_id}: {_first_line(e)}") from None
        except Exception as e:
            raise RayError(f"reading status of {submission_id}: {_first_line(e)}") from None

    def stop(self, submission_id: str) -> None:
        try:
            self.client.stop_job(submission_id)
        except Exception as e:
            raise RayError(f"stopping {submission_id}: {_first_line(e)}") from None

    def logs(self, submission_id: str, offset: int = 0) -> bytes:
        try:
            return self.client.get_job_logs(submission_id).encode("utf-8", "replace")[offset:]
        except Exception as e:
            raise RayError(f"reading logs of {submission_id}: {_first_line(e)}") from None

    def _alive(self) -> list:
        from ray.util.state.api import StateApiClient
        from ray.util.state.common import ListApiOptions, StateResource
        try:
            nodes = StateApiClient(address=self.address, headers=self._headers()).list(
                StateResource.NODES, options=ListApiOptions(detail=True, timeout=10), raise_on_missing_output=False)
            return [n for n in nodes if getattr(n, "state", "") == "ALIVE"]
        except Exception as e:
            raise RayError(f"reading cluster resources at {self.address}: {_first_line(e)}") from None

    def nodes(self) -> list[RayNode]:
        return [RayNode(dict(n.labels or {}), float((n.resources_total or {}).get("GPU", 0.0))) for n in self._alive()]

    def resources(self) -> RayResources:
        nodes = self._alive()
        total: dict[str, float] = {}
        for n in nodes:
            for k, v in (n.resources_total or {}).items():
                total[k] = total.get(k, 0.0) + v
        return RayResources(cpus=total.get("CPU", 0.0), memory=int(total.get("memory", 0)),
                            gpus=total.get("GPU", 0.0), nodes=len(nodes))

    def wait_ready(self, timeout: float) -> RayResources:
        """Until the Jobs API answers and a node is alive."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                self._client = None
                self.client.get_version()
                r = self.resources()
                if r.nodes:
                    return r
            except Exception as e:
                last = e
            time.sleep(0.25)
        raise RayError(f"Ray at {self.address} not ready after {timeout:g}s: {_first_line(last) if last else ''}")


def _first_line(e: object) -> str:
    text = str(e).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    # Ray wraps server tracebacks; the last line carries the actual error.
    return (lines[-1] if lines and "Traceback" in text else (lines[0] if lines else type(e).__name__))[:300]
