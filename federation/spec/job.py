"""`kind: Job`: a job as the user submits it, with its gang, array, dependencies and retries."""
from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from federation.spec.array import parse_array
from federation.spec.bounds import MAX_ARRAY_TEXT, MAX_LIST, MAX_RUNTIME_ENV_KEYS, check_runtime_env
from federation.spec.common import (
    API_VERSION,
    Metadata,
    PlacementSpec,
    Priority,
    Resources,
    Strict,
    Topology,
    check_name,
)
from federation.spec.quantity import parse_duration


class GangPart(Strict):
    """One part of a gang: the job's spec with these fields replaced."""

    name: str
    entrypoint: str | None = Field(default=None, min_length=1, max_length=8192)
    datasets: list[str] | None = Field(default=None, max_length=MAX_LIST)
    resources: Resources | None = None
    placement: PlacementSpec | None = None
    topology: Topology | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "part name")


class Gang(Strict):
    """Parts that start together or not at all (e.g. one per site holding a shard)."""

    parts: list[GangPart] = Field(min_length=2, max_length=MAX_LIST)
    timeout: float = Field(default=600.0, gt=0, description="every part running within this after placement, "
                                                            "or all are stopped and the gang waits again")
    on_part_end: Literal["stop-all", "continue"] = Field(
        default="stop-all", description="a part that fails stops the others, as does one waiting again once "
                                        "started (stop-all); or, once all started, each goes on alone (continue)")

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, v: Any) -> float:
        return parse_duration(v)

    @field_validator("parts")
    @classmethod
    def _unique(cls, v: list[GangPart]) -> list[GangPart]:
        names = [p.name for p in v]
        if len(set(names)) != len(names):
            raise ValueError("two parts have the same name")
        return v


JOB_REF_RE = re.compile(r"^[a-z]-[0-9a-f]{4,32}(-[0-9]{1,6})?$")


class Dependencies(Strict):
    """Jobs (or whole arrays) this one waits on, by id."""

    after_ok: list[str] = Field(default_factory=list, max_length=MAX_LIST,
                                description="start once all of these succeeded")
    after_any: list[str] = Field(default_factory=list, max_length=MAX_LIST,
                                 description="start once all of these ended, however")
    after_not_ok: list[str] = Field(default_factory=list, max_length=MAX_LIST,
                                    description="start once all of these failed or were cancelled")

    @field_validator("after_ok", "after_any", "after_not_ok")
    @classmethod
    def _ids(cls, v: list[str]) -> list[str]:
        for ref in v:
            if not JOB_REF_RE.match(ref):
                raise ValueError(f"{ref!r} is not a job or array id (such as j-1a2b3c4d5e6f)")
        return v

    def all(self) -> list[tuple[str, str]]:
        return ([("after_ok", r) for r in self.after_ok] + [("after_any", r) for r in self.after_any]
                + [("after_not_ok", r) for r in self.after_not_ok])


class Retry(Strict):
    """When an attempt ends without the job ending: its site or Ray cluster was lost (always
    retried while the limit allows), or, with `on_failure`, the job itself failed."""

    limit: int = Field(default=3, ge=0, le=100, description="attempts after the first that losses or failures may cost")
    on_failure: bool = Field(default=False, description="also retry when the job exits non-zero")
    backoff: float = Field(default=5.0, ge=0, description="wait before the next attempt, doubling each time "
                                                         "(with jitter), at most max_backoff")
    max_backoff: float = Field(default=300.0, ge=0)

    @field_validator("backoff", "max_backoff", mode="before")
    @classmethod
    def _durations(cls, v: Any) -> float:
        return parse_duration(v)


class Checkpoint(Strict):
    """Where the job keeps checkpoints; a later attempt is told to resume from there."""

    path: str = Field(min_length=1, max_length=1024,
                      description="a path or URI every attempt can reach ({job_id} is replaced); every attempt sees "
                                  "it as FEDCTL_CHECKPOINT_PATH, the second and later ones FEDCTL_RESUME=1")


# Which devices a job sees is the site's to say, from the GPUs the job asked for and was given.
RESERVED_ENV = frozenset({"CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES",
                          "HIP_VISIBLE_DEVICES", "PYTHONUSERBASE",
                          # an attempt's guard's (site_agent.guard.ENV): a job may not pose as one
                          "FEDCTL_GUARDED", "FEDCTL_LEASE_FILE", "FEDCTL_LEASE_OWNER"})
# Ray's token is the site's; pip and uv read their index, links and config from these, which would
# bring back what runtime_env.pip/uv refuses.
RESERVED_PREFIXES = ("RAY_AUTH", "PIP_", "UV_")


class JobBody(Strict):
    entrypoint: str = Field(min_length=1, max_length=8192)
    runtime_env: dict[str, Any] = Field(default_factory=dict, max_length=MAX_RUNTIME_ENV_KEYS,
                                        description="Ray's runtime_env, passed through; env_vars: at most 256, "
                                                    "values of 32 KiB; lists and mappings inside: at most 256")
    datasets: list[str] = Field(default_factory=list, max_length=MAX_LIST)
    resources: Resources = Field(default_factory=Resources)
    placement: PlacementSpec = Field(default_factory=PlacementSpec)
    topology: Topology = Field(default_factory=Topology)
    priority: Priority = "normal"
    queue: str | None = Field(default=None, description="the policy's queue to charge; default: the tenant's queue")
    dependencies: Dependencies = Field(default_factory=Dependencies)
    singleton: bool = Field(default=False, description="one job of this name and tenant placed or running at a time")
    array: str | None = Field(default=None, max_length=MAX_ARRAY_TEXT,
                              description="one job per index, e.g. 0-99%10 (at most 10 at once); "
                                          "each sees FEDCTL_ARRAY_INDEX")
    gang: Gang | None = Field(default=None, description="parts placed and started all together or not at all")
    retry: Retry = Field(default_factory=Retry)
    checkpoint: Checkpoint | None = None
    execution: Literal["auto", "task", "driver"] = Field(
        default="auto", description="how its attempts start at a site: task (in milliseconds, as a task of the "
                                    "site's long-lived runner), driver (a Ray job with a driver of its own, for work "
                                    "that uses Ray itself), or auto (task for array elements and training steps "
                                    "whose entrypoint does not name Ray; driver otherwise); see `fedctl explain`")
    time_limit: float | None = Field(
        default=None, gt=0, description="how long it may run, e.g. 2h: past it the job is stopped (SIGTERM, then "
                                         "SIGKILL after the site's grace) and fails as timed out; the scheduler "
                                         "plans reservations for large jobs by it (backfill)")
    on_site_loss: Literal["replace", "wait"] = Field(
        default="replace", description="when its site stops answering: replace (the site stops the job and it runs "
                                       "again elsewhere, by spec.retry) or wait (it keeps running there, and the "
                                       "federation waits for the site to return; a long training would rather "
                                       "wait than start over)")

    @field_validator("time_limit", mode="before")
    @classmethod
    def _time_limit(cls, v: Any) -> float | None:
        return None if v is None else parse_duration(v)

    @field_validator("array")
    @classmethod
    def _array(cls, v: str | None) -> str | None:
        if v is not None:
            parse_array(v)
        return v

    @field_validator("queue")
    @classmethod
    def _queue(cls, v: str | None) -> str | None:
        return None if v is None else check_name(v, "queue")

    @model_validator(mode="after")
    def _topology_needs_gpus(self) -> JobBody:
        t, r = self.topology, self.resources
        shaped = t.nvlink or t.gpus_per_node or t.colocate
        if shaped and r.gpus < 1:
            raise ValueError("topology: needs whole GPUs (resources.gpus of 1 or more)")
        if t.gpus_per_node and int(r.gpus) % t.gpus_per_node:
            raise ValueError(f"topology.gpus_per_node: {t.gpus_per_node} does not divide resources.gpus "
                             f"({r.gpus:g})")
        if (r.gpu_type or r.gpu_memory) and r.gpus == 0 and r.gpu_memory is None:
            raise ValueError("resources.gpu_type: set resources.gpus or resources.gpu_memory too")
        if self.gang is not None and self.array is not None:
            raise ValueError("gang: a job is a gang or an array, not both")
        return self

    @field_validator("runtime_env")
    @classmethod
    def _runtime_env(cls, v: dict[str, Any]) -> dict[str, Any]:
        check_runtime_env(v)
        for name in v.get("env_vars", {}):
            if name in RESERVED_ENV or str(name).startswith(RESERVED_PREFIXES):
                raise ValueError(f"env_vars.{name}: set by the site (GPUs from spec.resources, Ray's token, "
                                 "where packages come from); a job may not set it")
        return v

    @field_validator("datasets")
    @classmethod
    def _datasets(cls, v: list[str]) -> list[str]:
        for name in v:
            check_name(name, "dataset")
        if len(set(v)) != len(v):
            raise ValueError("a dataset is listed twice")
        return v


def spot_of(body: JobBody) -> str:
    """placement.spot, or its default: allow for a job with a checkpoint to resume from, never otherwise."""
    return body.placement.spot or ("allow" if body.checkpoint is not None else "never")


class JobSpec(Strict):
    """A job as the user submits it (YAML `kind: Job`)."""

    apiVersion: Literal["federation/v1"] = API_VERSION
    kind: Literal["Job"] = "Job"
    metadata: Metadata
    spec: JobBody
