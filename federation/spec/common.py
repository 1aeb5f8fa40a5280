"""What every spec kind shares: strict models, names, labels, metadata, resources and placement.

All models forbid unknown fields, so a typo is an error naming the field path
with a "did you mean" hint (see loader.describe), never a silently ignored key.
"""
from __future__ import annotations

import re
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from federation.spec.bounds import MAX_GPU_TYPES, MAX_LIST, GpuType, SiteName
from federation.spec.quantity import parse_bytes

API_VERSION: Final = "federation/v1"
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_./]{0,61}[A-Za-z0-9])?$")

Priority = Literal["low", "normal", "high"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_name(value: str, what: str) -> str:
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
    labels: dict[str, str] = Field(default_factory=dict, max_length=MAX_LIST)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "name")

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, v: str) -> str:
        return check_name(v, "tenant")

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        return check_labels(v)


class Resources(Strict):
    cpus: float = Field(default=1.0, ge=0, le=100_000)
    memory: int = Field(default=0, ge=0, description="bytes; YAML takes quantities such as 4Gi")
    gpus: float = Field(default=0.0, ge=0, le=100_000, description="whole GPUs, or a share of one below 1")
    gpu_type: list[GpuType] = Field(default_factory=list, max_length=MAX_GPU_TYPES,
                                    description="allowed GPU models (one or a list); empty: any")
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
    def _shares(self) -> Resources:
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
    regions: list[SiteName] = Field(default_factory=list, max_length=MAX_LIST, description="run only in these regions")
    sites: list[SiteName] = Field(default_factory=list, max_length=MAX_LIST, description="run only on these sites")
    prefer: list[SiteName] = Field(default_factory=list, max_length=MAX_LIST, description="regions or sites to prefer")
    optimize: Literal["time", "cost"] = Field(
        default="time", description="time: the site that starts it soonest, the cheaper of equals; cost: capacity "
                                    "a site has first (it is paid for), else the cheapest node to add, however "
                                    "slow to start")
    max_price: float | None = Field(default=None, gt=0, le=1e9,
                                    description="per hour, in the policy's currency: never a site dearer than this")
    spot: Literal["never", "allow", "prefer"] | None = Field(
        default=None, description="run on spot capacity, which may vanish mid-run: never, allow or prefer; "
                                  "default: allow for a job with a checkpoint to resume from, never otherwise")
