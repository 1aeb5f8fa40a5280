"""Spec models users write in YAML: Job, FederatedTraining, Site, Policy, Federation.

All models forbid unknown fields, so a typo is an error naming the field path
with a "did you mean" hint (see loader.describe), never a silently ignored key.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from federation.spec.array import parse_array
from federation.spec.quantity import parse_bytes, parse_duration

API_VERSION = "federation/v1"
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_./]{0,61}[A-Za-z0-9])?$")
JURISDICTION_RE = re.compile(r"^[A-Z]{2}$")

Priority = Literal["low", "normal", "high"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_name(value: str, what: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError(f"{what} {value!r} must be lower-case letters, digits and '-', 1-63 characters")
    return value


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        if not LABEL_KEY_RE.match(key):
            raise ValueError(f"label key {key!r} is not valid")
        if len(value) > 253:
            raise ValueError(f"label {key!r} value is longer than 253 characters")
    return labels


class Metadata(Strict):
    name: str
    tenant: str = "default"
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "name")

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, v: str) -> str:
        return _check_name(v, "tenant")

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        return check_labels(v)


class Resources(Strict):
    cpus: float = Field(default=1.0, ge=0, le=100_000)
    memory: int = Field(default=0, ge=0, description="bytes; YAML takes quantities such as 4Gi")
    gpus: float = Field(default=0.0, ge=0, le=100_000, description="whole GPUs, or a share of one below 1")
    gpu_type: list[str] = Field(default_factory=list, description="allowed GPU models (one or a list); empty: any")
    gpu_memory: int | None = Field(
        default=None, ge=1, description="with whole gpus: memory each GPU must have; alone: a slice of one GPU")

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, v: Any) -> int:
        return parse_bytes(v)

    @field_validator("gpu_memory", mode="before")
    @classmethod
    def _gpu_memory(cls, v: Any) -> int | None:
        return None if v is None else parse_bytes(v)

    @field_validator("gpu_type", mode="before")
    @classmethod
    def _gpu_type(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, v: float) -> float:
        if v > 1 and v != int(v):
            raise ValueError("more than one GPU must be a whole number")
        return v

    @model_validator(mode="after")
    def _shares(self) -> "Resources":
        if self.gpu_memory is not None and 0 < self.gpus < 1:
            raise ValueError("gpu_memory: give either a GPU share (gpus below 1) or gpu_memory, not both")
        return self


class Topology(Strict):
    """How a job's GPUs must sit relative to each other."""

    nvlink: Literal["required", "preferred"] | None = Field(
        default=None, description="all GPUs in one NVLink domain (an NVSwitch node or a fabric clique)")
    gpus_per_node: int | None = Field(default=None, ge=1, le=1024, description="exactly this many on each node")
    colocate: Literal["rack", "block"] | None = Field(default=None, description="all nodes in one rack or block")


class PlacementSpec(Strict):
    regions: list[str] = Field(default_factory=list, description="run only in these regions")
    sites: list[str] = Field(default_factory=list, description="run only on these sites")
    prefer: list[str] = Field(default_factory=list, description="regions or sites to prefer")


class GangPart(Strict):
    """One part of a gang: the job's spec with these fields replaced."""

    name: str
    entrypoint: str | None = Field(default=None, min_length=1, max_length=8192)
    datasets: list[str] | None = Field(default=None, max_length=64)
    resources: Resources | None = None
    placement: PlacementSpec | None = None
    topology: Topology | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "part name")


class Gang(Strict):
    """Parts that start together or not at all (e.g. one per site holding a shard)."""

    parts: list[GangPart] = Field(min_length=2, max_length=64)
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

    after_ok: list[str] = Field(default_factory=list, description="start once all of these succeeded")
    after_any: list[str] = Field(default_factory=list, description="start once all of these ended, however")
    after_not_ok: list[str] = Field(default_factory=list, description="start once all of these failed or were cancelled")

    @field_validator("after_ok", "after_any", "after_not_ok")
    @classmethod
    def _ids(cls, v: list[str]) -> list[str]:
        if len(v) > 64:
            raise ValueError("at most 64 jobs")
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


class JobBody(Strict):
    entrypoint: str = Field(min_length=1, max_length=8192)
    runtime_env: dict[str, Any] = Field(default_factory=dict)
    datasets: list[str] = Field(default_factory=list, max_length=64)
    resources: Resources = Field(default_factory=Resources)
    placement: PlacementSpec = Field(default_factory=PlacementSpec)
    topology: Topology = Field(default_factory=Topology)
    priority: Priority = "normal"
    queue: str | None = Field(default=None, description="the policy's queue to charge; default: the tenant's queue")
    dependencies: Dependencies = Field(default_factory=Dependencies)
    singleton: bool = Field(default=False, description="one job of this name and tenant placed or running at a time")
    array: str | None = Field(default=None, description="one job per index, e.g. 0-99%10 (at most 10 at once); "
                                                         "each sees FEDCTL_ARRAY_INDEX")
    gang: Gang | None = Field(default=None, description="parts placed and started all together or not at all")
    retry: Retry = Field(default_factory=Retry)
    checkpoint: Checkpoint | None = None

    @field_validator("array")
    @classmethod
    def _array(cls, v: str | None) -> str | None:
        if v is not None:
            parse_array(v)
        return v

    @field_validator("queue")
    @classmethod
    def _queue(cls, v: str | None) -> str | None:
        return None if v is None else _check_name(v, "queue")

    @model_validator(mode="after")
    def _topology_needs_gpus(self) -> "JobBody":
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

    @field_validator("datasets")
    @classmethod
    def _datasets(cls, v: list[str]) -> list[str]:
        for name in v:
            _check_name(name, "dataset")
        if len(set(v)) != len(v):
            raise ValueError("a dataset is listed twice")
        return v


class JobSpec(Strict):
    """A job as the user submits it (YAML `kind: Job`)."""

    apiVersion: Literal["federation/v1"] = API_VERSION
    kind: Literal["Job"] = "Job"
    metadata: Metadata
    spec: JobBody


# ------------------------------------------------------------------ federated training


class SiteCount(Strict):
    min: int = Field(default=2, ge=1, le=1000, description="a round proceeds with at least this many sites")
    max: int | None = Field(default=None, ge=1, le=1000, description="at most this many take part (default: all)")

    @model_validator(mode="after")
    def _order(self) -> "SiteCount":
        if self.max is not None and self.max < self.min:
            raise ValueError(f"max ({self.max}) is below min ({self.min})")
        return self


class LocalStep(Strict):
    """What each participating site runs in a round, on its own shard."""

    entrypoint: str = Field(min_length=1, max_length=8192,
                            description="a command, or module:function for the built-in runner")
    runtime_env: dict[str, Any] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    topology: Topology = Field(default_factory=Topology)
    config: dict[str, Any] = Field(default_factory=dict, description="passed to the step (epochs, batch size, ...)")


class StrategySpec(Strict):
    name: Literal["fedavg", "fedprox", "fedadam"] = "fedavg"
    mu: float = Field(default=0.01, ge=0, description="fedprox: weight of the proximal term")
    lr: float = Field(default=0.05, gt=0, description="fedadam: server learning rate")
    beta1: float = Field(default=0.9, ge=0, lt=1)
    beta2: float = Field(default=0.99, ge=0, lt=1)
    tau: float = Field(default=1e-3, gt=0, description="fedadam: adaptivity")


class AggregationSpec(Strict):
    """Where the aggregator may run: it receives every participant's model update, so only at a
    site whose jurisdiction the data's rules let model updates reach."""

    sites: list[str] = Field(default_factory=list, max_length=64)
    regions: list[str] = Field(default_factory=list, max_length=64)
    resources: Resources = Field(default_factory=Resources)
    secure: bool = Field(default=False, description="pairwise masks: the aggregator learns only the sum of updates")


class TrainingBody(Strict):
    dataset: str = Field(description="catalog name; its shards are the datasets of this name at several sites")
    sites: SiteCount = Field(default_factory=SiteCount)
    rounds: int = Field(ge=1, le=100_000)
    local_step: LocalStep
    strategy: StrategySpec = Field(default_factory=StrategySpec)
    aggregation: AggregationSpec = Field(default_factory=AggregationSpec)
    round_timeout: float = Field(default=600.0, gt=0, description="stragglers past this are left out of the round")
    priority: Priority = "normal"
    queue: str | None = None

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, v: str) -> str:
        return _check_name(v, "dataset")

    @field_validator("round_timeout", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float:
        return parse_duration(v)


class FederatedTrainingSpec(Strict):
    """Federated training as the user submits it (YAML `kind: FederatedTraining`): rounds of a
    local step at the sites holding the dataset's shards, aggregated where the rules allow."""

    apiVersion: Literal["federation/v1"] = API_VERSION
    kind: Literal["FederatedTraining"] = "FederatedTraining"
    metadata: Metadata
    spec: TrainingBody


# ------------------------------------------------------------------ sites


class DatasetSpec(Strict):
    name: str
    classification: str
    path: str = ""

    @field_validator("name", "classification")
    @classmethod
    def _n(cls, v: str) -> str:
        return _check_name(v, "name")


class Location(Strict):
    jurisdiction: str = Field(description="ISO 3166-1 alpha-2 country code, e.g. DE")
    region: str

    @field_validator("jurisdiction")
    @classmethod
    def _j(cls, v: str) -> str:
        if not JURISDICTION_RE.match(v):
            raise ValueError(f"jurisdiction {v!r} must be an ISO 3166-1 alpha-2 code such as DE or US")
        return v


class TLSConfig(Strict):
    ca: Path
    cert: Path
    key: Path


class FederationEndpoint(Strict):
    address: str = "127.0.0.1:50051"
    tls: TLSConfig | None = None
    insecure: bool = Field(default=False, description="plain-text gRPC; development only")

    @model_validator(mode="after")
    def _tls_or_insecure(self) -> "FederationEndpoint":
        if self.tls is None and not self.insecure:
            raise ValueError("set tls (ca, cert, key) or, for development only, insecure: true")
        return self


class LocalRay(Strict):
    port_base: int = Field(default=26000, ge=1024, le=65000, description="first of ~300 ports the head uses")
    num_cpus: int | None = Field(default=None, ge=1)
    num_gpus: int | None = Field(default=None, ge=0)
    object_store_memory: int = Field(default=100 * 2**20, ge=75 * 2**20)
    temp_dir: Path | None = None
    stop_grace_s: float = Field(default=10.0, ge=1, le=3600,
                                description="a stopped job (cancelled, preempted) gets SIGTERM, then SIGKILL after this")
    token_auth: bool = Field(default=True, description="Ray token authentication (a token only this site holds)")

    @field_validator("object_store_memory", mode="before")
    @classmethod
    def _osm(cls, v: Any) -> int:
        return parse_bytes(v)


class NodeGpus(Strict):
    model: str = Field(min_length=1, max_length=64, description="GPU model, e.g. H100")
    count: int = Field(ge=1, le=128)
    memory: int = Field(ge=1, description="memory of each GPU, e.g. 80Gi")

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, v: Any) -> int:
        return parse_bytes(v)


class NodeSpec(Strict):
    """GPU nodes as declared by the operator (machines without NVML, or to pledge a part)."""

    name: str
    replicas: int = Field(default=1, ge=1, le=10_000, description="this many alike nodes, named <name>-0, -1, …")
    gpus: NodeGpus
    nvlink: list[list[int]] = Field(default_factory=list, description="groups of GPU indices sharing NVLink")
    fabric: str | None = Field(default=None, description="NVLink fabric clique id shared with other nodes")
    rack: str = ""
    block: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "node name")

    @model_validator(mode="after")
    def _groups(self) -> "NodeSpec":
        if self.fabric and self.nvlink:
            raise ValueError("nvlink: a node in a fabric clique shares one domain; give fabric or nvlink, not both")
        seen: set[int] = set()
        for k, group in enumerate(self.nvlink):
            for g in group:
                if not 0 <= g < self.gpus.count:
                    raise ValueError(f"nvlink[{k}]: GPU {g} is not one of 0..{self.gpus.count - 1}")
                if g in seen:
                    raise ValueError(f"nvlink[{k}]: GPU {g} is in two NVLink groups")
                seen.add(g)
        return self


class RaySpec(Strict):
    address: str | None = Field(default=None, description="Ray dashboard / Jobs API URL, e.g. http://127.0.0.1:8265")
    auth_token_path: Path | None = Field(default=None, description="the cluster's Ray auth token, if it uses one")
    local: LocalRay = Field(default_factory=LocalRay)


class Veto(Strict):
    """Work this site refuses whatever the federation decides."""

    tenants: list[str] | None = Field(default=None, description="only these tenants; null = all")
    max_cpus_per_job: float | None = None
    max_gpus_per_job: float | None = None
    classifications: list[str] | None = Field(default=None, description="only datasets of these classes")


class SiteBody(Strict):
    federation: FederationEndpoint = Field(default_factory=lambda: FederationEndpoint(insecure=True))
    location: Location
    labels: dict[str, str] = Field(default_factory=dict)
    datasets: list[DatasetSpec] = Field(default_factory=list)
    capacity: Resources | None = Field(default=None, description="declared inventory; default: what Ray reports")
    gpu_nodes: list[NodeSpec] | None = Field(
        default=None, description="declared GPU topology; default: discovered through NVML and Ray node labels")
    ray: RaySpec = Field(default_factory=RaySpec)
    veto: Veto = Field(default_factory=Veto)
    work_dir: Path | None = None
    autonomous: bool = Field(default=False, description="an edge site: cut off from the federation, it keeps running "
                                                        "what it holds (nothing is re-placed) and reconciles on return")

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        return check_labels(v)


    @field_validator("gpu_nodes")
    @classmethod
    def _unique_nodes(cls, v: list[NodeSpec] | None) -> list[NodeSpec] | None:
        names = [n.name for n in v or []]
        if len(set(names)) != len(names):
            raise ValueError("a node name is declared twice")
        return v


class SiteMetadata(Strict):
    name: str
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "site name")


class SiteConfig(Strict):
    apiVersion: Literal["federation/v1"] = API_VERSION
    kind: Literal["Site"] = "Site"
    metadata: SiteMetadata
    spec: SiteBody


# ------------------------------------------------------------------ policy

CrossBorder = Literal["results", "model-updates", "nothing"]


class ClassificationRule(Strict):
    allowed_jurisdictions: list[str] = Field(description="ISO codes, group names (EU, EEA) or '*'")
    required_labels: dict[str, str] = Field(default_factory=dict)
    allow_staging: bool = Field(default=False, description="may a copy be staged at another allowed site")
    may_cross_border: list[CrossBorder] = Field(default_factory=lambda: ["results"])


class Quota(Strict):
    """An amount of each resource; a resource left out is not bounded (limit) or not owed (deserved)."""

    cpus: float | None = Field(default=None, ge=0)
    memory: int | None = Field(default=None, ge=0, description="bytes; YAML takes quantities such as 4Gi")
    gpus: float | None = Field(default=None, ge=0, description="GPUs of any model")
    gpu_models: dict[str, float] = Field(default_factory=dict, description="GPUs of one model, e.g. {H100: 4}")

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, v: Any) -> int | None:
        return None if v is None else parse_bytes(v)

    @field_validator("gpu_models")
    @classmethod
    def _models(cls, v: dict[str, float]) -> dict[str, float]:
        for model, n in v.items():
            if n < 0:
                raise ValueError(f"gpu_models.{model}: must not be negative")
        return v

    def amounts(self) -> dict[str, float]:
        """The quota as resource dimensions: cpus, memory, gpus, gpu:<model>."""
        out = {k: float(v) for k, v in (("cpus", self.cpus), ("memory", self.memory), ("gpus", self.gpus))
               if v is not None}
        out.update({f"gpu:{m}": float(n) for m, n in self.gpu_models.items()})
        return out


class QueueSpec(Strict):
    """A queue of the federation-wide fair share; a queue with `queues` only groups them."""

    name: str
    tenants: list[str] = Field(default_factory=list, description="tenants whose jobs go here unless they name a queue")
    deserved: Quota = Field(default_factory=Quota, description="the share this queue is owed when it has work")
    over_quota_weight: float = Field(default=1.0, ge=0, description="its part of what is left over; 0: none")
    limit: Quota = Field(default_factory=Quota, description="never more than this at once")
    queues: list["QueueSpec"] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "queue name")

    @field_validator("tenants")
    @classmethod
    def _tenants(cls, v: list[str]) -> list[str]:
        for t in v:
            _check_name(t, "tenant")
        return v

    @model_validator(mode="after")
    def _shape(self) -> "QueueSpec":
        if self.queues and self.tenants:
            raise ValueError("tenants: only a queue without child queues takes jobs")
        deserved, limit = self.deserved.amounts(), self.limit.amounts()
        for dim, amount in deserved.items():
            if dim in limit and amount > limit[dim]:
                raise ValueError(f"deserved.{_field(dim)}: {amount:g} is more than limit.{_field(dim)} ({limit[dim]:g})")
        owed: dict[str, float] = {}
        for child in self.queues:
            for dim, amount in child.deserved.amounts().items():
                owed[dim] = owed.get(dim, 0.0) + amount
        for dim, amount in owed.items():
            if dim in deserved and amount > deserved[dim] + 1e-9:
                raise ValueError(f"queues: deserved {_field(dim)} of the child queues ({amount:g}) is more than "
                                 f"this queue's ({deserved[dim]:g})")
        return self


def _field(dim: str) -> str:
    return dim.replace("gpu:", "gpu_models.")


class FairShareSpec(Strict):
    half_life: float = Field(default=86400.0, gt=0, description="past usage counts half after this long, e.g. 1d")
    history_weight: float = Field(
        default=0.5, ge=0, le=1, description="0: share by what runs now only; 1: by decayed past usage only")

    @field_validator("half_life", mode="before")
    @classmethod
    def _half_life(cls, v: Any) -> float:
        return parse_duration(v)


class PreemptionSpec(Strict):
    enabled: bool = Field(default=True, description="stop lower-priority or over-quota work for waiting jobs")
    reclaim: bool = Field(default=True, description="a queue below its deserved share may stop over-quota work")
    min_runtime: float = Field(default=300.0, ge=0, description="work that ran less than this is never stopped")
    max_per_cycle: int = Field(default=10, ge=0, le=10_000)
    max_per_hour: int = Field(default=100, ge=0, le=1_000_000)

    @field_validator("min_runtime", mode="before")
    @classmethod
    def _min_runtime(cls, v: Any) -> float:
        return parse_duration(v)


class PolicyBody(Strict):
    jurisdiction_groups: dict[str, list[str]] = Field(default_factory=dict)
    classifications: dict[str, ClassificationRule]
    queues: list[QueueSpec] = Field(default_factory=list, description="fair-share queues; none: one for all")
    fair_share: FairShareSpec = Field(default_factory=FairShareSpec)
    preemption: PreemptionSpec = Field(default_factory=PreemptionSpec)

    @field_validator("queues")
    @classmethod
    def _unique(cls, v: list[QueueSpec]) -> list[QueueSpec]:
        names: set[str] = set()
        tenants: dict[str, str] = {}
        stack = list(v)
        while stack:
            q = stack.pop()
            if q.name in names:
                raise ValueError(f"queue {q.name!r} is defined twice")
            names.add(q.name)
            for t in q.tenants:
                if t in tenants:
                    raise ValueError(f"tenant {t!r} is in queues {tenants[t]!r} and {q.name!r}")
                tenants[t] = q.name
            stack.extend(q.queues)
        return v


class PolicyMetadata(Strict):
    name: str
    version: str = "1"


class PolicyConfig(Strict):
    apiVersion: Literal["federation/v1"] = API_VERSION
    kind: Literal["Policy"] = "Policy"
    metadata: PolicyMetadata
    spec: PolicyBody


# ------------------------------------------------------------------ federation


class ServerTLS(Strict):
    cert: Path
    key: Path
    client_ca: Path | None = Field(default=None, description="require client certificates from this CA")


class SchedulerSettings(Strict):
    interval_s: float = Field(default=0.5, gt=0, le=60)
    max_placements_per_cycle: int = Field(
        default=5000, ge=1, le=1_000_000,
        description="jobs placed in one cycle at most; the rest are deferred and the next cycle starts at once")


class Enrolment(Strict):
    """Sites join with a one-time token (`fedctl site token create`, `fedctl site join`): they
    reach this listener over TLS without a client certificate and leave with one."""

    listen: str = "127.0.0.1:50052"
    ca_cert: Path
    ca_key: Path = Field(description="the CA's key: the federation signs site certificates with it")
    cert_days: int = Field(default=30, ge=1, le=825)


class FederationBody(Strict):
    listen: str = "127.0.0.1:50051"
    store: Path = Path(".fedctl/federation.db")
    policy: Path
    tls: ServerTLS | None = None
    insecure: bool = False
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    enrolment: Enrolment | None = None
    site_timeout_s: float = Field(default=30.0, gt=0)
    heartbeat_interval_s: float = Field(default=2.0, gt=0)

    @model_validator(mode="after")
    def _tls_or_insecure(self) -> "FederationBody":
        if self.tls is None and not self.insecure:
            raise ValueError("set tls (cert, key, client_ca) or, for development only, insecure: true")
        return self


class FederationMetadata(Strict):
    name: str = "federation"


class FederationConfig(Strict):
    apiVersion: Literal["federation/v1"] = API_VERSION
    kind: Literal["Federation"] = "Federation"
    metadata: FederationMetadata = Field(default_factory=FederationMetadata)
    spec: FederationBody
