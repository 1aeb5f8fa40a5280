"""The GPU vocabulary: what a site's nodes hold, what a job asks of GPUs, what it was given.

A site's inventory is its nodes; each GPU carries its model, memory and NVLink domain
(domain ids are site-wide, so a fabric clique of an NVL72-class rack spans nodes).
Plain data and small pure helpers, shared by the scheduler, the site agent and the
federation; the federation-wide free-GPU state is `policies.gpu_state.GpuState`.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from typing import Literal

MILLI = 1000  # one whole GPU in thousandths
Need = Literal["", "required", "preferred"]
Colocate = Literal["", "rack", "block"]


@dataclass(frozen=True, slots=True)
class GpuNode:
    name: str
    model: str = ""
    memory: int = 0                       # bytes per GPU
    domains: tuple[str, ...] = ()         # NVLink domain of each GPU; "" = no NVLink peer
    rack: str = ""
    block: str = ""
    spot: bool = False                    # a spot node, which the cloud may take back at any time

    @property
    def gpus(self) -> int:
        return len(self.domains)


@dataclass(frozen=True, slots=True)
class Inventory:
    nodes: tuple[GpuNode, ...] = ()

    @property
    def gpus(self) -> int:
        return sum(n.gpus for n in self.nodes)


@dataclass(frozen=True, slots=True)
class GpuRequest:
    """What a job asks of GPUs. count > 0: whole GPUs; else one GPU's share (thousandths)
    or, with share == 0, a slice of one GPU sized by `memory`."""

    count: int = 0
    share: int = 0
    memory: int = 0                       # per GPU: a minimum for whole GPUs, the slice size otherwise
    models: frozenset[str] = frozenset()  # empty: any model
    nvlink: Need = ""
    per_node: int = 0
    colocate: Colocate = ""
    spot: bool = True                     # may be given GPUs of spot nodes (False: a job that refuses spot)
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Requests key the scheduler's per-cycle caches: hash once, not on every lookup.
        object.__setattr__(self, "_hash", hash((self.count, self.share, self.memory, self.models, self.nvlink,
                                                self.per_node, self.colocate, self.spot)))

    def __hash__(self) -> int:
        return self._hash

    @property
    def wanted(self) -> bool:
        return self.count > 0 or self.share > 0 or self.memory > 0

    @property
    def whole(self) -> float:
        """GPUs this request holds, in GPUs (fractional for a share)."""
        return float(self.count) if self.count else self.share / MILLI

    def shape(self) -> str:
        if self.count:
            s = f"{self.count} GPU{'s' if self.count != 1 else ''}"
        elif self.share:
            s = f"{self.share / MILLI:g} of a GPU"
        else:
            s = f"{self.memory / 2**30:.3g}Gi of one GPU"
        if self.models:
            s += f" ({'|'.join(sorted(self.models))})"
        if self.nvlink == "required":
            s += " in one NVLink domain"
        if self.per_node:
            s += f", {self.per_node} per node"
        if self.colocate:
            s += f", nodes in one {self.colocate}"
        return s


@functools.lru_cache(maxsize=4096)
def refusing_spot(req: GpuRequest) -> GpuRequest:
    """The request of a job that refuses spot: never given GPUs of a spot node."""
    return replace(req, spot=False)


@dataclass(frozen=True, slots=True)
class Slot:
    """GPUs reserved on one node: local GPU indices and thousandths held on each."""

    node: str
    gpus: tuple[int, ...]
    milli: int = MILLI


Binding = tuple[Slot, ...]


@dataclass(frozen=True, slots=True)
class Miss:
    """Why a request does not fit a site: it never could (`static`) or not now."""

    static: bool
    detail: str
    kind: Literal["gpu-type", "topology", "capacity"] = "topology"


def slice_of(memory: int, gpu_memory: int) -> int:
    """Thousandths of a GPU with `gpu_memory` bytes that hold `memory` bytes."""
    return MILLI + 1 if gpu_memory <= 0 else max(1, math.ceil(MILLI * memory / gpu_memory))


def synthesized(name: str, gpus: float, model: str = "") -> Inventory:
    """A site that reports only a GPU total: one node, no NVLink known."""
    whole = int(gpus)
    return Inventory((GpuNode(name=name, model=model, domains=("",) * whole),)) if whole else Inventory()


def check_binding(inv: Inventory, req: GpuRequest, binding: Binding) -> str:
    """Independent check that a binding honours the request; '' when it does."""
    nodes = {n.name: n for n in inv.nodes}
    if any(s.node not in nodes or g >= nodes[s.node].gpus for s in binding for g in s.gpus):
        return "binding names a GPU the site does not have"
    gpus = [(nodes[s.node], g, s.milli) for s in binding for g in s.gpus]
    if req.count and len(gpus) != req.count:
        return f"binding holds {len(gpus)} GPUs, job asked {req.count}"
    if not req.count and len(gpus) != 1:
        return "a shared-GPU job must hold exactly one GPU"
    models = {n.model for n, _, _ in gpus}
    if len(models) > 1:
        return f"binding mixes GPU models {sorted(models)}"
    if req.models and not models <= req.models:
        return f"GPU type {models.pop()} is not one of {sorted(req.models)}"
    if req.count and req.memory and any(n.memory < req.memory for n, _, _ in gpus):
        return "a GPU has less memory than asked"
    if req.nvlink == "required" and req.count > 1:
        doms = {n.domains[g] for n, g, _ in gpus}
        if len(doms) != 1 or "" in doms:
            return "GPUs span more than one NVLink domain"
    if req.per_node and any(len(s.gpus) != req.per_node for s in binding):
        return f"a node holds other than {req.per_node} of the job's GPUs"
    if req.colocate and len({getattr(nodes[s.node], req.colocate) for s in binding}) > 1:
        return f"nodes span more than one {req.colocate}"
    return ""

