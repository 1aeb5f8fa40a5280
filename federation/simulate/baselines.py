"""Placement strategies the simulator compares: ours, and two that do not see topology.

`topology` is policies.schedule. `blind` is what a federation that sees only per-site GPU
totals does: sovereignty and GPU type honoured, the emptiest site chosen, GPUs taken first
fit in index order wherever they sit. `round-robin` takes eligible sites in turn, first fit.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

import policies
from federation.collector import paused_gc
from policies.feasible import Masks, gpu_request
from policies.gpu_state import GpuState
from policies.gpus import MILLI, GpuRequest, Slot
from policies.placement import order

Strategy = Callable[[policies.Snapshot, Sequence[policies.PendingJob], float], policies.ScheduleResult]


def _first_fit(state: GpuState, s: int, req: GpuRequest) -> tuple[Slot, ...] | None:
    site = state.sites[s]
    a, b = site.start, site.end
    ms = state.model_ids(req.models)
    ok = np.isin(state.model_of[a:b], ms)
    free = state.free[a:b]
    need = req.share or MILLI
    if req.count:
        picks = np.flatnonzero(ok & (free == MILLI))[: req.count]
        if picks.size < req.count:
            return None
    else:
        picks = np.flatnonzero(ok & (free >= need))[:1]
        if not picks.size:
            return None
    slots: dict[int, list[int]] = {}
    for g in picks:
        k = int(np.searchsorted(site.node_start, a + g, side="right")) - 1
        slots.setdefault(k, []).append(int(state.local[a + g]))
    return tuple(Slot(site.nodes[k].name, tuple(gs), need if not req.count else MILLI) for k, gs in slots.items())


def _totals_only(choose: Callable[[np.ndarray, Masks, GpuRequest | None], int]) -> Strategy:
    def schedule(snapshot: policies.Snapshot, pending: Sequence[policies.PendingJob], now: float):
        masks = Masks(snapshot)
        decisions, unplaced = [], []
        for job in order(pending):
            req = gpu_request(job)
            ok = masks.static(job, None)[1] == 0
            ok = ok & (masks.free_cpu >= job.cpus - 1e-9)
            if req is not None:
                ms = masks.gpu.model_ids(req.models)
                if req.count:
                    ok &= masks.gpu.whole_free[:, ms].sum(axis=1) >= req.count
                else:
                    ok &= (masks.gpu.max_share[:, ms] >= req.share).any(axis=1)
            candidates = np.flatnonzero(ok)
            binding = None
            for i in ([choose(candidates, masks, req)] if candidates.size else []):
                binding = () if req is None else _first_fit(masks.gpu, i, req)
            if binding is None:
                unplaced.append(policies.Unplaced(job.id, "no site", b""))
                continue
            masks.free_cpu[i] -= job.cpus
            if binding:
                masks.gpu.reserve(i, binding)
            decisions.append(policies.Decision(job.id, snapshot.sites[i].name, 0.0, (), int(candidates.size), binding))
        return policies.ScheduleResult(tuple(decisions), tuple(unplaced))
    return schedule


def _emptiest(candidates: np.ndarray, masks: Masks, req: GpuRequest | None) -> int:
    free = masks.gpu.whole_free[candidates].sum(axis=1) * masks.gpu_inv[candidates]
    return int(candidates[int(np.argmax(free))])


class _RoundRobin:
    def __init__(self) -> None:
        self.next = 0

    def __call__(self, candidates: np.ndarray, masks: Masks, req: GpuRequest | None) -> int:
        after = candidates[candidates >= self.next]
        i = int(after[0] if after.size else candidates[0])
        self.next = (i + 1) % masks.n
        return i


def _paused(schedule: Strategy) -> Strategy:
    """As the federation runs its cycle: with the garbage collector paused."""
    def run(snapshot: policies.Snapshot, pending: Sequence[policies.PendingJob], now: float) -> policies.ScheduleResult:
        with paused_gc():
            return schedule(snapshot, pending, now)
    return run


def strategies() -> dict[str, Strategy]:
    """Fresh strategies (round-robin keeps its turn between cycles of one run)."""
    return {"topology": _paused(policies.schedule), "blind": _totals_only(_emptiest),
            "round-robin": _totals_only(_RoundRobin())}


NAMES = tuple(strategies())
