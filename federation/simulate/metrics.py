"""GPU fragmentation as the FGD paper measures it (Weng et al., ATC '23), with NVLink shapes.

For a task shape m and a node n, the free GPU capacity m cannot use on n is a fragment:
all of it when m does not fit n at all (wrong model, too few whole GPUs, no NVLink domain
large enough when m requires one), else the free slivers of GPUs m cannot use (shares
below m's ask; partly used GPUs for whole-GPU tasks). The cluster's fragmentation is the
expectation over the workload's shape popularity, summed over nodes.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from federation.simulate.trace import SimJob
from policies.gpu_state import GpuState
from policies.gpus import MILLI, GpuRequest


@dataclass(frozen=True)
class Shapes:
    requests: tuple[GpuRequest, ...]
    weights: tuple[float, ...]

    @classmethod
    def of(cls, jobs: Iterable[SimJob], cover: float = 0.99) -> Shapes:
        counts = Counter(j.gpu for j in jobs if j.gpu is not None)
        total = sum(counts.values())
        kept, seen = [], 0
        for req, n in counts.most_common():
            kept.append((req, n / total if total else 0.0))
            seen += n
            if seen >= cover * total:
                break
        norm = sum(w for _, w in kept) or 1.0
        return cls(tuple(r for r, _ in kept), tuple(w / norm for _, w in kept))


class _Layout:
    """Group ids over the flat GPU arrays, computed once per state layout."""

    def __init__(self, state: GpuState) -> None:
        self.nodes = int(state.node_of.max()) + 1 if state.node_of.size else 0
        key = state.site_of.astype(np.int64) * (1 << 40) + state.domain_of + (1 << 39)
        _, self.domain = np.unique(key, return_inverse=True)
        self.domains = int(self.domain.max()) + 1 if self.domain.size else 0
        self.domain_node = np.zeros(self.domains, dtype=np.int64)
        self.domain_node[self.domain] = state.node_of


def fragmentation(state: GpuState, shapes: Shapes) -> tuple[float, float]:
    """(expected fragmented GPUs, free GPUs)."""
    layout = state.__dict__.get("_fragment_layout")
    if layout is None:  # static per layout, so copies of the state share it
        layout = state.__dict__["_fragment_layout"] = _Layout(state)
    free = state.free.astype(np.float64)
    total_free = float(free.sum()) / MILLI
    if not shapes.requests or layout.nodes == 0:
        return 0.0, total_free
    node_free = np.bincount(state.node_of, weights=free, minlength=layout.nodes)
    frag = 0.0
    for req, weight in zip(shapes.requests, shapes.weights):
        ok = np.isin(state.model_of, state.model_ids(req.models))
        if req.count:
            whole = ok & (state.free == MILLI)
            if req.nvlink == "required" and req.count > 1:
                per_domain = np.bincount(layout.domain, weights=whole, minlength=layout.domains)
                best = np.zeros(layout.nodes)
                np.maximum.at(best, layout.domain_node, per_domain)
            else:
                best = np.bincount(state.node_of, weights=whole, minlength=layout.nodes)
            fits = best >= req.count
            usable = np.bincount(state.node_of, weights=np.where(whole, free, 0.0), minlength=layout.nodes)
        else:
            good = ok & (state.free >= req.share)
            usable = np.bincount(state.node_of, weights=np.where(good, free, 0.0), minlength=layout.nodes)
            fits = usable > 0
        frag += weight * float(np.where(fits, node_free - usable, node_free).sum()) / MILLI
    return frag, total_free
