"""What a site costs and how it can grow: `spec.pricing` and `spec.elastic` of `kind: Site`.

Prices are per hour of what a job holds (CPUs, GiB of memory, GPUs by model) and per GB that
leaves the site; a fixed on-prem site may declare an amortised price. An elastic site names the
node types its Ray autoscaler may add, with their shape, bounds, start delay and whether they
are spot capacity that may vanish.
"""
from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import Field, WithJsonSchema, field_validator, model_validator

from federation.spec.bounds import GpuType
from federation.spec.common import Strict, check_name
from federation.spec.quantity import parse_bytes, parse_duration

CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
MAX_PRICE = 1e6          # per unit-hour or per GB: far above any real price, below float trouble
MAX_NODE_TYPES = 64


MONEY_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]{3})?\s*$")


def check_currency(v: str) -> str:
    if not CURRENCY_RE.match(v):
        raise ValueError(f"currency {v!r} must be an ISO 4217 code such as USD or EUR")
    return v


class _Money(Strict):
    amount: float = Field(ge=0, le=1e12)
    currency: str = Field(default="", description="empty: the policy's currency")

    def __str__(self) -> str:
        return f"{self.amount:g} {self.currency}".strip()


Money = Annotated[_Money, WithJsonSchema({"anyOf": [{"type": "number", "minimum": 0},
                                                    {"type": "string", "pattern": MONEY_RE.pattern}]})]


def parse_money(value: object) -> Any:
    """An amount of money from a number or a string such as '500 USD' (the currency is checked later)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{value!r} must be a finite amount, not negative")
        return _Money(amount=value)
    if isinstance(value, str) and (m := MONEY_RE.match(value)):
        currency = (m.group(2) or "")
        if currency and currency != currency.upper():
            raise ValueError(f"{value!r}: currency {currency!r} must be an ISO 4217 code such as USD or EUR")
        return _Money(amount=float(m.group(1)), currency=currency)
    raise ValueError(f"{str(value)[:40]!r} is not an amount of money; use a number or one such as '500 USD'")


class Rates(Strict):
    """Prices per hour of what a job holds."""

    cpu_hour: float = Field(ge=0, le=MAX_PRICE, description="per CPU-hour")
    memory_gib_hour: float = Field(default=0.0, ge=0, le=MAX_PRICE, description="per GiB-hour of memory")
    gpu_hour: dict[GpuType, float] = Field(default_factory=dict, max_length=64,
                                           description="per GPU-hour, by GPU model, e.g. {H100: 2.5}")

    @field_validator("gpu_hour")
    @classmethod
    def _gpu_prices(cls, v: dict[str, float]) -> dict[str, float]:
        for model, price in v.items():
            if not 0 <= price <= MAX_PRICE:
                raise ValueError(f"gpu_hour.{model}: {price:g} must be between 0 and {MAX_PRICE:g}")
        return v


class Pricing(Rates):
    """On-demand (or amortised) prices, spot prices where the site has spot, and egress."""

    currency: str = Field(description="ISO 4217 code; the federation's policy prices in one currency")
    spot: Rates | None = Field(default=None, description="prices of spot capacity (node types with spot: true)")
    egress_gb: float = Field(default=0.0, ge=0, le=MAX_PRICE, description="per GB of data leaving the site")

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str) -> str:
        return check_currency(v)


class NodeGpus(Strict):
    model: str = Field(min_length=1, max_length=64, description="GPU model, e.g. H100")
    count: int = Field(ge=1, le=128)
    memory: int = Field(ge=1, description="memory of each GPU, e.g. 80Gi")

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, v: Any) -> int:
        return parse_bytes(v)


class NodeType(Strict):
    """A kind of node the site's autoscaler may add (a Ray cluster's `available_node_types` entry)."""

    name: str
    cpus: float = Field(gt=0, le=100_000)
    memory: int = Field(gt=0, description="bytes; YAML takes quantities such as 32Gi")
    gpus: NodeGpus | None = None
    min: int = Field(default=0, ge=0, le=10_000, description="nodes kept up even when idle")
    max: int = Field(ge=1, le=10_000, description="nodes of this type at most")
    spot: bool = Field(default=False, description="spot capacity: cheaper, and may be taken back at any time")
    start: float = Field(default=120.0, ge=0, description="typical time to add a node, e.g. 90s")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "node type")

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, v: Any) -> int:
        return parse_bytes(v)

    @field_validator("start", mode="before")
    @classmethod
    def _start(cls, v: Any) -> float:
        return parse_duration(v)

    @model_validator(mode="after")
    def _bounds(self) -> NodeType:
        if self.min > self.max:
            raise ValueError(f"min: {self.min} is more than max ({self.max})")
        return self


class Elastic(Strict):
    """How the site grows and shrinks: its autoscaler adds nodes of these types for placed work."""

    node_types: list[NodeType] = Field(min_length=1, max_length=MAX_NODE_TYPES)
    idle_timeout: float = Field(default=300.0, ge=0, le=86400,
                                description="an idle node above its type's min is removed after this, e.g. 5m")

    @field_validator("idle_timeout", mode="before")
    @classmethod
    def _idle(cls, v: Any) -> float:
        return parse_duration(v)

    @field_validator("node_types")
    @classmethod
    def _unique(cls, v: list[NodeType]) -> list[NodeType]:
        names = [t.name for t in v]
        if len(set(names)) != len(names):
            raise ValueError("a node type is declared twice")
        return v


def check_priced(pricing: Pricing | None, elastic: Elastic | None, gpu_models: set[str]) -> None:
    """Every node an elastic site may add, and every GPU model it holds, has a price."""
    if pricing is None:
        if elastic is not None:
            raise ValueError("elastic: an elastic site needs spec.pricing (what its nodes cost)")
        return
    for k, t in enumerate(elastic.node_types if elastic else ()):
        rates = pricing.spot if t.spot else pricing
        where = "pricing.spot" if t.spot else "pricing"
        if rates is None:
            raise ValueError(f"elastic.node_types[{k}] ({t.name}) is spot: give pricing.spot")
        if t.gpus is not None and t.gpus.model not in rates.gpu_hour:
            raise ValueError(f"elastic.node_types[{k}] ({t.name}): GPU model {t.gpus.model} has no price "
                             f"in {where}.gpu_hour")
    for model in sorted(gpu_models - set(pricing.gpu_hour)):
        raise ValueError(f"pricing.gpu_hour: GPU model {model} of the site's nodes has no price")
