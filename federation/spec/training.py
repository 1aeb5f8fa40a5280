"""`kind: FederatedTraining`: rounds of a local step at the sites holding a dataset's shards."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from federation.spec.bounds import (
    MAX_CONFIG_KEYS,
    MAX_LIST,
    MAX_RUNTIME_ENV_KEYS,
    SiteName,
    check_config,
    check_runtime_env,
)
from federation.spec.common import API_VERSION, Metadata, Priority, Resources, Strict, Topology, check_name
from federation.spec.quantity import parse_duration

MIN_SECURE_SITES = 3   # to take part in a secure round, as training.bonawitz.MIN_SITES


class SiteCount(Strict):
    min: int = Field(default=2, ge=1, le=1000, description="a round proceeds with at least this many sites")
    max: int | None = Field(default=None, ge=1, le=1000, description="at most this many take part (default: all)")

    @model_validator(mode="after")
    def _order(self) -> SiteCount:
        if self.max is not None and self.max < self.min:
            raise ValueError(f"max ({self.max}) is below min ({self.min})")
        return self


class LocalStep(Strict):
    """What each participating site runs in a round, on its own shard."""

    entrypoint: str = Field(min_length=1, max_length=8192,
                            description="a command, or module:function for the built-in runner")
    runtime_env: dict[str, Any] = Field(default_factory=dict, max_length=MAX_RUNTIME_ENV_KEYS,
                                        description="as a job's (each round's job has it)")
    resources: Resources = Field(default_factory=Resources)
    topology: Topology = Field(default_factory=Topology)
    config: dict[str, Any] = Field(default_factory=dict, max_length=MAX_CONFIG_KEYS,
                                   description="passed to the step (epochs, batch size, ...); at most 16 KiB as JSON")

    @field_validator("runtime_env")
    @classmethod
    def _runtime_env(cls, v: dict[str, Any]) -> dict[str, Any]:
        check_runtime_env(v)
        return v

    @field_validator("config")
    @classmethod
    def _config(cls, v: dict[str, Any]) -> dict[str, Any]:
        check_config(v)
        return v


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

    sites: list[SiteName] = Field(default_factory=list, max_length=MAX_LIST)
    regions: list[SiteName] = Field(default_factory=list, max_length=MAX_LIST)
    resources: Resources = Field(default_factory=Resources)
    secure: bool = Field(default=False, description="Bonawitz's double masking: the aggregator (and the federation) "
                                                     "learns only the sum of the updates; a round needs 3 sites")
    threshold: float = Field(default=0.6, gt=0.5, le=1.0,
                             description="secure: the share of a round's sites whose shares unmask it (above half); "
                                         "the rest may drop out mid-round")


class PrivacySpec(Strict):
    """Client-level differential privacy: each site's update (its change to the global model) is
    clipped to `clip` and Gaussian noise is added at the sites, so that the model a round releases
    says little about any one site's data. Spent by the accountant of dp-accounting."""

    epsilon: float = Field(gt=0, le=100, description="the most this training may spend over its rounds")
    delta: float = Field(default=1e-5, gt=0, lt=0.1)
    clip: float = Field(gt=0, le=1e6, description="L2 bound on each site's update")
    noise_multiplier: float | None = Field(default=None, gt=0, le=1000,
                                           description="noise std over the clip; default: the least that keeps "
                                                       "every round within epsilon")


class TrainingBody(Strict):
    dataset: str = Field(description="catalog name; its shards are the datasets of this name at several sites")
    sites: SiteCount = Field(default_factory=SiteCount)
    rounds: int = Field(ge=1, le=100_000)
    local_step: LocalStep
    strategy: StrategySpec = Field(default_factory=StrategySpec)
    aggregation: AggregationSpec = Field(default_factory=AggregationSpec)
    privacy: PrivacySpec | None = None
    round_timeout: float = Field(default=600.0, gt=0, description="stragglers past this are left out of the round")
    priority: Priority = "normal"
    queue: str | None = None

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, v: str) -> str:
        return check_name(v, "dataset")

    @model_validator(mode="after")
    def _secure_needs_three(self) -> TrainingBody:
        if self.aggregation.secure and (self.sites.min < 2 or (self.sites.max or MIN_SECURE_SITES) < MIN_SECURE_SITES):
            raise ValueError(f"sites: secure aggregation needs {MIN_SECURE_SITES} sites or more to take part in a "
                             f"round and 2 or more to report (min {self.sites.min}, max {self.sites.max}): a sum of "
                             "fewer tells each site's update")
        return self

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
