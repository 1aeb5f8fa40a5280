"""Fragmentation gradient descent (Weng et al., ATC '23): among the places a GPU job fits, take
the one where the expected fragmentation of its node grows least.

A node's fragmentation for one ask of the workload is the free GPU capacity that ask cannot use
there: all of it when the ask does not fit the node at all (another GPU model, too few whole GPUs,
no NVLink domain holding it when it needs one), else the free slivers it cannot use (shares below
the ask; partly used GPUs for whole-GPU asks). The node's expected fragmentation weighs each ask by
how often the workload makes it (`Demand`). FGD places a job where that expectation grows least;
ours does so among the blocks that keep the job's topology rules (`GpuState.fit`), FGD alone
ignores them (`federation.simulate.baselines`).

`pressure` weighs the same workload per GPU model, for the choice among the models a job accepts.

Pure: reads `GpuState`'s arrays, changes nothing. Evaluates only the nodes of the candidates, so
its cost grows with the candidates of one site, not with the federation.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from policies.gpus import MILLI, GpuRequest

GpuState = Any   # policies.gpu_state.GpuState, which calls this module (no import back)

EMPTY = -1   # a padding column: no GPU


@dataclass(frozen=True)
class Demand:
    """The workload's GPU asks and the share of jobs making each (FGD's target workload)."""

    requests: tuple[GpuRequest, ...]
    weights: tuple[float, ...]

    @classmethod
    def of(cls, asks: Iterable[GpuRequest | None], cover: float = 0.99) -> Demand:
        """The most common asks that make up `cover` of the GPU jobs, their weights summing to 1."""
        counts = Counter(a for a in asks if a is not None)
        total = sum(counts.values())
        kept, seen = [], 0
        for req, n in counts.most_common():
            kept.append((req, n))
            seen += n
            if seen >= cover * total:
                break
        norm = sum(n for _, n in kept) or 1
        return cls(tuple(r for r, _ in kept), tuple(n / norm for _, n in kept))


def expected(free: np.ndarray, domains: np.ndarray, models: np.ndarray, state: GpuState, demand: Demand) -> np.ndarray:
    """Each row's expected fragmentation in thousandths: `free` and `domains` are node rows (a GPU
    a column, EMPTY where the node has fewer), `models` the model of each row's node."""
    valid = free != EMPTY
    f = np.where(valid, free, 0)
    total = f.sum(axis=1).astype(np.float64)
    whole = valid & (free == MILLI)
    out = np.zeros(len(free))
    same: np.ndarray | None = None
    for req, weight in zip(demand.requests, demand.weights):
        ok = np.isin(models, state.model_ids(req.models))
        if req.count:
            if req.nvlink == "required" and req.count > 1:
                if same is None:   # whole GPUs sharing each GPU's NVLink domain, per row
                    same = (domains[:, :, None] == domains[:, None, :]) & whole[:, None, :]
                best = np.where(whole, same.sum(axis=2), 0).max(axis=1)
            else:
                best = whole.sum(axis=1)
            fits = ok & (best >= req.count)
            usable = np.where(whole, f, 0).sum(axis=1)
        else:
            good = valid & (free >= req.share)
            usable = np.where(good, f, 0).sum(axis=1)
            fits = ok & good.any(axis=1)
        out += weight * np.where(fits, total - usable, total)
    return out


def rows(state: GpuState, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The nodes' GPUs as rows: free, domain, flat index (EMPTY-padded), and each node's model."""
    starts, ends = state.node_ptr[nodes], state.node_ptr[nodes + 1]
    width = int((ends - starts).max()) if len(nodes) else 0
    flat = starts[:, None] + np.arange(width)[None, :]
    valid = flat < ends[:, None]
    flat = np.where(valid, flat, 0)
    free = np.where(valid, state.free[flat], EMPTY)
    domains = np.where(valid, state.domain_of[flat], EMPTY)
    return free, domains, np.where(valid, flat, EMPTY), state.model_of[starts]


def gpu_growth(state: GpuState, gpus: np.ndarray, need: int, demand: Demand) -> np.ndarray:
    """How much each candidate GPU's node would fragment more with `need` thousandths taken from it."""
    nodes, at = np.unique(state.node_of[gpus], return_inverse=True)
    free, domains, flat, models = rows(state, nodes)
    before = expected(free, domains, models, state, demand)
    after = free[at].copy()
    after[flat[at] == gpus[:, None]] -= need
    return expected(after, domains[at], models[at], state, demand) - before[at]


def group_growth(state: GpuState, groups: np.ndarray, count: int, demand: Demand) -> np.ndarray | None:
    """How much each candidate NVLink group's node would fragment more with `count` of its whole
    GPUs taken; None when a group spans nodes (a rack-scale domain: FGD's nodes do not describe it)."""
    firsts = state.group_gpus[state.group_ptr[groups]]
    lasts = state.group_gpus[state.group_ptr[groups + 1] - 1]
    if (state.node_of[firsts] != state.node_of[lasts]).any():
        return None
    nodes, at = np.unique(state.node_of[firsts], return_inverse=True)
    free, domains, flat, models = rows(state, nodes)
    before = expected(free, domains, models, state, demand)
    after = free[at].copy()
    mine = (np.where(flat[at] >= 0, state.group_of[np.maximum(flat[at], 0)], EMPTY) == groups[:, None]) \
        & (after == MILLI)
    take = np.cumsum(mine, axis=1) <= count   # the group's first `count` whole GPUs
    after[mine & take] = 0
    return expected(after, domains[at], models[at], state, demand) - before[at]


def pressure(state: GpuState, demand: Demand) -> np.ndarray:
    """Per site and GPU model, the workload's GPUs each of its GPUs would carry, were every ask
    spread evenly over the site's GPUs that can serve it (by model, and by topology: a block of
    NVLink GPUs only where a domain holds it). Models that asks need by name or by NVLink domain
    are pressed more than those serving only what any GPU serves (`GpuState` takes the least
    pressed of the models a job accepts)."""
    whole, domain, node = state.capacity
    out = np.zeros(whole.shape)
    for req, weight in zip(demand.requests, demand.weights):
        serves = np.zeros(whole.shape, dtype=bool)
        serves[:, state.model_ids(req.models)] = True
        if req.count > 1 and not req.per_node:
            serves &= (domain if req.nvlink == "required" else node) >= req.count
        held = np.where(serves, whole, 0).sum(axis=1, keepdims=True)
        out += np.where(serves & (held > 0), weight * req.whole / np.maximum(held, 1), 0.0)
    return out
