"""`kind: Policy`: data classifications, the site and dataset catalog, fair-share queues and preemption."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from federation.spec.common import API_VERSION, Strict, check_labels, check_name
from federation.spec.pricing import Money, check_currency, parse_money
from federation.spec.quantity import parse_bytes, parse_duration
from federation.spec.site import Location

# What may leave a site for data of a classification: output files, model updates, the job's logs
# and its free-form status messages; or nothing.
CrossBorder = Literal["results", "model-updates", "logs", "nothing"]


def _results_only() -> list[CrossBorder]:
    return ["results"]


class ClassificationRule(Strict):
    allowed_jurisdictions: list[str] = Field(description="ISO codes, group names (EU, EEA) or '*'")
    required_labels: dict[str, str] = Field(default_factory=dict)
    allow_staging: bool = Field(default=False, description="may a copy be staged at another allowed site")
    may_cross_border: list[CrossBorder] = Field(
        default_factory=_results_only,
        description="what may leave the site: results, model-updates, logs (logs and job messages); or nothing")
    tenants: list[str] = Field(default_factory=lambda: ["*"],
                               description="tenants whose jobs may use data of this class; '*': every tenant")

    @field_validator("tenants")
    @classmethod
    def _tenants(cls, v: list[str]) -> list[str]:
        return _tenant_names(v)

    @field_validator("may_cross_border")
    @classmethod
    def _crossing(cls, v: list[CrossBorder]) -> list[CrossBorder]:
        if "nothing" in v and len(set(v)) > 1:
            raise ValueError("'nothing' stands alone: list what may cross, or [nothing]")
        return v


def _tenant_names(v: list[str]) -> list[str]:
    for t in v:
        if t != "*":
            check_name(t, "tenant")
    return v


class SiteEntry(Location):
    """What a site is, as the federation's admin says: a registration claiming otherwise is refused."""

    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        return check_labels(v)


class PrivacyBudget(Strict):
    """Differential privacy is spent like a resource: every training on the dataset charges what
    its rounds spend (basic composition: the epsilons and deltas add up), and a training that would
    take it past this is refused, or stopped before the round that would."""

    epsilon: float = Field(gt=0, le=1000)
    delta: float = Field(default=1e-3, gt=0, lt=1)


class DatasetEntry(Strict):
    """A dataset the federation knows: its classification, the sites that hold it and who may use it."""

    classification: str
    sites: list[str] = Field(min_length=1, description="sites that hold it; '*': any site")
    tenants: list[str] | None = Field(default=None, description="tenants that may use it; default: its class's")
    privacy_budget: PrivacyBudget | None = Field(default=None, description="the differential privacy all trainings "
                                                                           "on it may spend together")

    @field_validator("sites")
    @classmethod
    def _sites(cls, v: list[str]) -> list[str]:
        for s in v:
            if s != "*":
                check_name(s, "site name")
        return v

    @field_validator("tenants")
    @classmethod
    def _tenants(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else _tenant_names(v)


class Quota(Strict):
    """An amount of each resource; a resource left out is not bounded (limit) or not owed (deserved)."""

    cpus: float | None = Field(default=None, ge=0)
    memory: int | None = Field(default=None, ge=0, description="bytes; YAML takes quantities such as 4Gi")
    gpus: float | None = Field(default=None, ge=0, description="GPUs of any model")
    gpu_models: dict[str, float] = Field(default_factory=dict, description="GPUs of one model, e.g. {H100: 4}")
    cost_per_day: Money | None = Field(
        default=None, description="a budget (limit only): the queue's jobs wait while what it spent in the last "
                                  "24 hours, at the sites' prices, reaches this; a number or e.g. '500 USD'")

    @field_validator("cost_per_day", mode="before")
    @classmethod
    def _money(cls, v: Any) -> Money | None:
        return None if v is None else parse_money(v)

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
    time_limit: float | None = Field(default=None, gt=0, description="for its jobs that declare no spec.time_limit "
                                                                      "(and its child queues' that set none), e.g. 4h")
    queues: list[QueueSpec] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "queue name")

    @field_validator("time_limit", mode="before")
    @classmethod
    def _time_limit(cls, v: Any) -> float | None:
        return None if v is None else parse_duration(v)

    @field_validator("tenants")
    @classmethod
    def _tenants(cls, v: list[str]) -> list[str]:
        for t in v:
            check_name(t, "tenant")
        return v

    @model_validator(mode="after")
    def _shape(self) -> QueueSpec:
        if self.queues and self.tenants:
            raise ValueError("tenants: only a queue without child queues takes jobs")
        if self.deserved.cost_per_day is not None:
            raise ValueError("deserved.cost_per_day: a budget is a limit, not a share (limit.cost_per_day)")
        deserved, limit = self.deserved.amounts(), self.limit.amounts()
        for dim, amount in deserved.items():
            if dim in limit and amount > limit[dim]:
                raise ValueError(f"deserved.{_field(dim)}: {amount:g} is more than limit.{_field(dim)} "
                                 f"({limit[dim]:g})")
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


class LimitsSpec(Strict):
    pending_per_tenant: int = Field(default=10_000, ge=1, le=10_000_000,
                                    description="a submission that would leave a tenant more jobs waiting is refused")
    submissions_per_second: float = Field(
        default=2_000, gt=0, le=1_000_000,
        description="each caller's submissions (SubmitJob, SubmitTraining; a request counts once, however many "
                    "array elements or gang parts it makes; SubmitJobs counts each of its items) a second, on average; "
                    "past it and the burst a "
                    "submission is refused (retry later)")
    submission_burst: int | None = Field(
        default=None, ge=1, le=10_000_000,
        description="submissions a caller may make at once before its rate applies; default: two seconds' worth")
    streams_per_caller: int = Field(default=8, ge=1, le=10_000,
                                    description="open WatchJob and StreamJobLogs streams (watch, logs -f) a caller "
                                                "may hold; past it a stream is refused")
    user_streams: int = Field(default=256, ge=1, le=1_000_000,
                              description="open user streams the federation holds, all callers together")

    @property
    def burst(self) -> int:
        return self.submission_burst or max(1, round(2 * self.submissions_per_second))


class RetentionSpec(Strict):
    """How long the federation keeps jobs after they end (federation.control.retention)."""

    jobs: float = Field(
        default=30 * 86400.0, ge=0,
        description="a job is removed this long after it ended (e.g. 30d), with its attempts, logs, files and "
                    "request id; its usage (fedctl usage, fair share) and final state (for dependencies) are "
                    "kept, and the audit log is never cut; an array or gang goes when all of it is old enough. "
                    "0: keep every job forever")

    @field_validator("jobs", mode="before")
    @classmethod
    def _jobs(cls, v: Any) -> float:
        return parse_duration(v)


class PolicyBody(Strict):
    currency: str = Field(default="USD", description="ISO 4217 code of every price: sites', jobs' max_price, budgets")
    jurisdiction_groups: dict[str, list[str]] = Field(default_factory=dict)
    classifications: dict[str, ClassificationRule]
    sites: dict[str, SiteEntry] = Field(
        default_factory=dict, description="site catalog: each site's location and labels, for sites whose "
                                          "certificate does not bind them")
    datasets: dict[str, DatasetEntry] = Field(
        default_factory=dict, description="dataset catalog: a site may register only the datasets listed for it")
    queues: list[QueueSpec] = Field(default_factory=list, description="fair-share queues; none: one for all")
    fair_share: FairShareSpec = Field(default_factory=FairShareSpec)
    preemption: PreemptionSpec = Field(default_factory=PreemptionSpec)
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    retention: RetentionSpec = Field(default_factory=RetentionSpec)

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

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str) -> str:
        return check_currency(v)

    @model_validator(mode="after")
    def _budgets(self) -> PolicyBody:
        stack = [(q, f"queues.{q.name}") for q in self.queues]
        while stack:
            q, where = stack.pop()
            budget = q.limit.cost_per_day
            if budget is not None and budget.currency not in ("", self.currency):
                raise ValueError(f"{where}.limit.cost_per_day: {budget} is in {budget.currency}; this policy's "
                                 f"prices are in {self.currency} (spec.currency)")
            stack.extend((c, f"{where}.queues.{c.name}") for c in q.queues)
        return self

    @model_validator(mode="after")
    def _catalog(self) -> PolicyBody:
        for name in self.sites:
            check_name(name, "site name")
        for name, d in self.datasets.items():
            check_name(name, "dataset name")
            if d.classification not in self.classifications:
                raise ValueError(f"datasets.{name}.classification: {d.classification!r} is not one of "
                                 f"classifications ({', '.join(sorted(self.classifications))})")
        return self


class PolicyMetadata(Strict):
    name: str
    version: str = "1"


class PolicyConfig(Strict):
    apiVersion: Literal["federation/v1"] = API_VERSION
    kind: Literal["Policy"] = "Policy"
    metadata: PolicyMetadata
    spec: PolicyBody
