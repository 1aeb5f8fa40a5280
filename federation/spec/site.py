"""`kind: Site`: one site's location, datasets, Ray cluster, GPU nodes and vetoes."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from federation.spec.bounds import MAX_LIST
from federation.spec.common import API_VERSION, Resources, Strict, check_labels, check_name
from federation.spec.metrics import MetricsSettings
from federation.spec.pricing import Elastic, NodeGpus, Pricing, check_priced
from federation.spec.quantity import parse_bytes, parse_duration

JURISDICTION_RE = re.compile(r"^[A-Z]{2}$")


class DatasetSpec(Strict):
    name: str
    classification: str = Field(default="", description="the federation's policy classifies it; if given, it "
                                                         "must say the same or the site is refused")
    path: str = ""
    size: int | None = Field(default=None, ge=0, description="e.g. 50Gi: what staging a copy elsewhere moves, "
                                                              "priced at this site's egress")

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int | None:
        return None if v is None else parse_bytes(v)

    @field_validator("name")
    @classmethod
    def _n(cls, v: str) -> str:
        return check_name(v, "name")

    @field_validator("classification")
    @classmethod
    def _c(cls, v: str) -> str:
        return v and check_name(v, "classification")


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
    replicas: list[str] = Field(default_factory=list, max_length=16,
                                description="the federation's other replicas and witnesses: the agent follows "
                                            "the leader among them, and when it cannot reach the leader asks "
                                            "them whether any replica leads; if none does (an outage of the "
                                            "whole federation) it keeps its work running instead of fencing it")
    tls: TLSConfig | None = None
    insecure: bool = Field(default=False, description="plain-text gRPC; development only")

    @model_validator(mode="before")
    @classmethod
    def _given(cls, data: Any) -> Any:
        if data is None:  # SiteBody passes a missing block on as None, to be refused here with its own path
            raise ValueError("required: give address and tls, or insecure: true for development")
        return data

    @field_validator("insecure")
    @classmethod
    def _not_beside_tls(cls, v: bool, info: ValidationInfo) -> bool:
        if v and info.data.get("tls") is not None:
            raise ValueError("plain text is never used beside tls: remove insecure (or, for development only, tls)")
        return v

    @model_validator(mode="after")
    def _tls_or_insecure(self) -> FederationEndpoint:
        if self.tls is None and not self.insecure:
            raise ValueError("set tls (ca, cert, key) or, for development only, insecure: true")
        return self


USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


class TenantHeads(Strict):
    """A local Ray head per tenant, started on demand beside the site's own, each as an OS user of
    its own: one tenant's jobs cannot read another's files, logs or Ray token, nor reach its jobs."""

    user: str = Field(default="fedjob-{tenant}", description="OS user per tenant; {tenant} is replaced")
    max: int = Field(default=4, ge=1, le=32, description="heads at once; each takes ~300 ports after the last")
    idle_stop_s: float = Field(default=300.0, ge=0, le=86400, description="a head with no work stops after this")

    @field_validator("user")
    @classmethod
    def _user(cls, v: str) -> str:
        return tenant_user(v)


def tenant_user(v: str) -> str:
    if "{tenant}" not in v or v == "{tenant}" or not USER_RE.match(v.replace("{tenant}", "t")):
        raise ValueError(f"user {v!r} must be an OS user name with {{tenant}} and a fixed part in it, e.g. "
                         "fedjob-{tenant} (a tenant must not be able to name a system account)")
    return v


class LocalRay(Strict):
    port_base: int = Field(default=26000, ge=1024, le=65000, description="first of ~300 ports the head uses")
    num_cpus: int | None = Field(default=None, ge=0, description="CPUs the head offers jobs; 0 on an elastic site "
                                                                 "whose nodes come on demand")
    num_gpus: int | None = Field(default=None, ge=0)
    object_store_memory: int = Field(default=100 * 2**20, ge=75 * 2**20)
    temp_dir: Path | None = None
    stop_grace_s: float = Field(
        default=10.0, ge=1, le=3600,
        description="a stopped job (cancelled, preempted) gets SIGTERM, then SIGKILL after this")
    token_auth: bool = Field(default=True, description="Ray token authentication (a token only this site holds)")
    run_as: str | None = Field(
        default=None, description="OS user the head and so every job runs as, never the agent's own (the agent "
                                  "runs as root to switch); default: the agent's user")
    tenant_heads: TenantHeads | None = Field(
        default=None, description="for mutually untrusted tenants: each tenant's jobs on a head of its own")

    @field_validator("run_as")
    @classmethod
    def _user(cls, v: str | None) -> str | None:
        if v is not None and not USER_RE.match(v):
            raise ValueError(f"run_as {v!r} is not an OS user name")
        return v

    @model_validator(mode="after")
    def _apart(self) -> LocalRay:
        if self.tenant_heads is not None and self.run_as is None:
            raise ValueError("tenant_heads: needs run_as too, or the site's own head runs as the agent's user")
        if (self.run_as or self.tenant_heads) and not self.token_auth:
            raise ValueError("token_auth: jobs kept apart need Ray's token, or any job may use any head")
        return self

    @field_validator("object_store_memory", mode="before")
    @classmethod
    def _osm(cls, v: Any) -> int:
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
    spot: bool = Field(default=False, description="a spot node, which the cloud may take back: only jobs "
                                                  "that accept spot are given its GPUs")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "node name")

    @model_validator(mode="after")
    def _groups(self) -> NodeSpec:
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


class SlurmSpec(Strict):
    """A site whose nodes belong to Slurm: each attempt is a Slurm job that starts a Ray cluster on
    its allocation, runs the job's entrypoint through it, and tears it down."""

    partitions: list[str] = Field(default_factory=list, max_length=MAX_LIST, description="sbatch --partition")
    account: str | None = Field(default=None, description="sbatch --account, charged for every attempt")
    qos: str | None = Field(default=None, description="sbatch --qos")
    time_limit: float | None = Field(default=None, gt=0, description="the Slurm time limit of a job that declares "
                                                                      "none, e.g. 12h; none: the partition's")
    conf: Path | None = Field(default=None, description="the slurm.conf the agent's sbatch, squeue and scancel use "
                                                        "(SLURM_CONF); default: the system's")
    ray_port_base: int = Field(default=40000, ge=1024, le=60000,
                               description="first of the port ranges (300 each) a Ray head inside an allocation "
                                           "takes; the first free one is used")
    ray_slots: int = Field(default=16, ge=1, le=64, description="port ranges to try: Ray heads at once on one node")
    users: str | None = Field(
        default=None, description="OS user of each tenant's Slurm jobs, {tenant} replaced (e.g. fedjob-{tenant}): "
                                  "one tenant's jobs cannot read another's files or logs; the agent runs as root "
                                  "to submit as them (sbatch --uid); default: the agent's own user")

    @field_validator("users")
    @classmethod
    def _users(cls, v: str | None) -> str | None:
        return None if v is None else tenant_user(v)

    @field_validator("time_limit", mode="before")
    @classmethod
    def _time_limit(cls, v: Any) -> float | None:
        return None if v is None else parse_duration(v)


class SecureTraining(Strict):
    """Datasets this site lets out only as updates of a secure-aggregated training, which it does
    not have to trust the federation for: any job on one must be such a training's local step, by
    a step function listed here, with nothing of its own code or environment beside it."""

    datasets: list[str] = Field(min_length=1, max_length=MAX_LIST)
    steps: list[str] = Field(min_length=1, max_length=MAX_LIST,
                             description="module:function allowed as local steps "
                                         "(e.g. training.examples.digits:local_step)")


class Veto(Strict):
    """Work this site refuses whatever the federation decides."""

    tenants: list[str] | None = Field(default=None, description="only these tenants; null = all")
    max_cpus_per_job: float | None = None
    max_gpus_per_job: float | None = None
    classifications: list[str] | None = Field(default=None, description="only datasets of these classes")
    packages: list[str] | None = Field(default=None, description="only these packages from runtime_env pip/uv; "
                                                                 "null = any plain requirement")
    secure_training: SecureTraining | None = None


class SiteBody(Strict):
    federation: FederationEndpoint
    location: Location
    labels: dict[str, str] = Field(default_factory=dict)
    datasets: list[DatasetSpec] = Field(default_factory=list)
    capacity: Resources | None = Field(default=None, description="declared inventory; default: what Ray reports")
    gpu_nodes: list[NodeSpec] | None = Field(
        default=None, description="declared GPU topology; default: discovered through NVML and Ray node labels")
    ray: RaySpec = Field(default_factory=RaySpec)
    backend: Literal["ray", "slurm"] = Field(default="ray", description="who runs the site's work: its Ray cluster "
                                                                          "(spec.ray), or Slurm (spec.slurm)")
    slurm: SlurmSpec = Field(default_factory=SlurmSpec)
    veto: Veto = Field(default_factory=Veto)
    work_dir: Path | None = None
    autonomous: bool = Field(default=False, description="an edge site: cut off from the federation, it keeps running "
                                                        "what it holds (nothing is re-placed) and reconciles on return")
    pricing: Pricing | None = Field(default=None, description="what the site costs; none: it is priced at zero")
    elastic: Elastic | None = Field(default=None, description="node types the site's Ray autoscaler may add")
    metrics: MetricsSettings | None = Field(default=None, description="serve the agent's Prometheus metrics")

    @model_validator(mode="before")
    @classmethod
    def _federation_block(cls, data: Any) -> Any:
        if isinstance(data, dict) and "federation" not in data:
            return {**data, "federation": None}  # no plain-text default: FederationEndpoint says what to give
        return data

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

    @model_validator(mode="after")
    def _slurm_alone(self) -> SiteBody:
        local = self.ray.local
        if self.backend == "slurm" and (local.run_as or local.tenant_heads or self.elastic):
            raise ValueError("backend: slurm runs each attempt as a Slurm job (of each tenant's user with "
                             "slurm.users): ray.local.run_as, ray.local.tenant_heads and elastic are for a Ray site")
        return self

    @model_validator(mode="after")
    def _priced(self) -> SiteBody:
        if self.pricing is not None or self.elastic is not None:
            check_priced(self.pricing, self.elastic, {n.gpus.model for n in self.gpu_nodes or []})
        return self


class SiteMetadata(Strict):
    name: str
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "site name")


class SiteConfig(Strict):
    apiVersion: Literal["federation/v1"] = API_VERSION
    kind: Literal["Site"] = "Site"
    metadata: SiteMetadata
    spec: SiteBody
