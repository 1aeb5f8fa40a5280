"""Placement strategies the simulator compares: ours, its former rule, and four that do not see
topology.

`topology` is policies.schedule with the workload's Demand: inside a site, FGD among the blocks
that keep the job's topology rules. `topology-bestfit` is the same without a Demand: best fit by
topology level (our rule before FGD). The rest see no NVLink; like every strategy here they keep
sovereignty and GPU types. `fgd` is fragmentation gradient descent alone (Weng et al., ATC '23):
the GPU, or the node with k whole GPUs, anywhere eligible, where the expected fragmentation grows
least. `best-fit` takes the node that fits with the least free left. `blind` is what a federation
that sees only per-site GPU totals does: the emptiest site, GPUs taken first fit in index order
wherever they sit. `round-robin` takes eligible sites in turn, first fit.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

import policies
from federation.collector import paused_gc
from policies import fgd
from policies.feasible import Masks, gpu_request
from policies.fgd import Demand
from policies.gpu_state import GpuState
from policies.gpus import MILLI, Binding, GpuRequest, Slot
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
            decisions.append(_placed(masks, job, i, binding, int(candidates.size)))
        return policies.ScheduleResult(tuple(decisions), tuple(unplaced))
    return schedule


def _placed(masks: Masks, job: policies.PendingJob, i: int, binding: Binding, candidates: int) -> policies.Decision:
    """`job` placed at site i: it holds its CPUs and GPUs from here on."""
    masks.free_cpu[i] -= job.cpus
    if binding:
        masks.gpu.reserve(i, binding)
    return policies.Decision(job.id, masks.snapshot.sites[i].name, 0.0, (), candidates, binding)


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


def _per_node(state: GpuState, sites: np.ndarray, req: GpuRequest) -> tuple[np.ndarray, np.ndarray]:
    """The eligible sites' GPUs of the models `req` takes, and the whole ones among them."""
    gpus = np.concatenate([np.arange(state.sites[s].start, state.sites[s].end) for s in sites]) \
        if sites.size else np.zeros(0, dtype=np.int64)
    gpus = gpus[np.isin(state.model_of[gpus], state.model_ids(req.models))]
    return gpus, gpus[state.free[gpus] == MILLI]


def _node_pick(state: GpuState, sites: np.ndarray, req: GpuRequest,
               rank: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> tuple[int, Binding] | None:
    """Blind to NVLink: one GPU with room (a share, or one whole), or k whole GPUs on one node,
    wherever `rank` (of the candidate GPUs, or nodes; lowest first) says."""
    gpus, whole = _per_node(state, sites, req)
    need = req.share or MILLI
    if req.count <= 1:
        cand = gpus[state.free[gpus] >= need]
        if not cand.size:
            return None
        g = int(cand[int(np.argmin(rank(cand, np.array([]))))])
        return int(state.site_of[g]), (_slot(state, [g], need),)
    nodes, counts = np.unique(state.node_of[whole], return_counts=True)
    cand = nodes[counts >= req.count]
    if not cand.size:
        return None
    k = int(cand[int(np.argmin(rank(np.array([]), cand)))])
    chosen = whole[state.node_of[whole] == k][:req.count]
    return int(state.site_of[chosen[0]]), (_slot(state, chosen.tolist(), MILLI),)


def _slot(state: GpuState, flat: list[int], milli: int) -> Slot:
    site = state.sites[int(state.site_of[flat[0]])]
    k = int(state.node_of[flat[0]]) - int(state.node_of[site.start])
    return Slot(site.nodes[k].name, tuple(int(state.local[g]) for g in flat), milli)


def _fgd_rank(demand: Demand) -> Callable[[GpuState, GpuRequest], Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    blind = Demand(tuple(replace(r, nvlink="") for r in demand.requests), demand.weights)   # it sees no NVLink

    def for_job(state: GpuState, req: GpuRequest) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        def rank(gpus: np.ndarray, nodes: np.ndarray) -> np.ndarray:
            if gpus.size:   # least growth, then best fit
                growth = np.round(fgd.gpu_growth(state, gpus, req.share or MILLI, blind), 6)
                return np.lexsort((state.free[gpus], growth)).argsort()
            free, domains, _, models = fgd.rows(state, nodes)
            after = np.where((free == MILLI).cumsum(axis=1) <= req.count, np.where(free == MILLI, 0, free), free)
            growth = fgd.expected(after, domains, models, state, blind) - fgd.expected(free, domains, models, state,
                                                                                       blind)
            return np.lexsort((np.where(free > 0, free, 0).sum(axis=1), np.round(growth, 6))).argsort()
        return rank
    return for_job


def _best_fit_rank(state: GpuState, req: GpuRequest) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def rank(gpus: np.ndarray, nodes: np.ndarray) -> np.ndarray:
        if gpus.size:   # the GPU with least left, then the fullest node
            node_free = np.bincount(state.node_of, weights=state.free)
            return np.lexsort((node_free[state.node_of[gpus]], state.free[gpus])).argsort()
        return np.bincount(state.node_of, weights=state.free)[nodes]
    return rank


def _anywhere(ranking: Callable[[GpuState, GpuRequest], Callable[[np.ndarray, np.ndarray], np.ndarray]]) -> Strategy:
    """A strategy that picks node and GPUs across every eligible site at once, by `ranking`."""
    def schedule(snapshot: policies.Snapshot, pending: Sequence[policies.PendingJob], now: float):
        masks = Masks(snapshot)
        decisions, unplaced = [], []
        for job in order(pending):
            req = gpu_request(job)
            ok = (masks.static(job, None)[1] == 0) & (masks.free_cpu >= job.cpus - 1e-9)
            sites = np.flatnonzero(ok)
            got: tuple[int, Binding] | None
            if req is None:
                got = (_emptiest(sites, masks, None), ()) if sites.size else None
            else:
                got = _node_pick(masks.gpu, sites, req, ranking(masks.gpu, req))
            if got is None:
                unplaced.append(policies.Unplaced(job.id, "no site", b""))
                continue
            decisions.append(_placed(masks, job, got[0], got[1], int(sites.size)))
        return policies.ScheduleResult(tuple(decisions), tuple(unplaced))
    return schedule


def _with_demand(schedule: Strategy, demand: Demand | None) -> Strategy:
    def run(snapshot: policies.Snapshot, pending: Sequence[policies.PendingJob], now: float) -> policies.ScheduleResult:
        if snapshot.gpus is not None:
            snapshot.gpus.demand = demand
        return schedule(snapshot, pending, now)
    return run


def _paused(schedule: Strategy) -> Strategy:
    """As the federation runs its cycle: with the garbage collector paused."""
    def run(snapshot: policies.Snapshot, pending: Sequence[policies.PendingJob], now: float) -> policies.ScheduleResult:
        with paused_gc():
            return schedule(snapshot, pending, now)
    return run


def strategies(demand: Demand | None = None) -> dict[str, Strategy]:
    """Fresh strategies (round-robin keeps its turn between cycles of one run); `demand`, the
    workload's asks, for those that use FGD."""
    empty = Demand((), ())
    return {"topology": _paused(_with_demand(policies.schedule, demand)),
            "topology-bestfit": _paused(_with_demand(policies.schedule, None)),
            "fgd": _paused(_with_demand(_anywhere(_fgd_rank(demand or empty)), None)),
            "best-fit": _paused(_with_demand(_anywhere(_best_fit_rank), None)),
            "blind": _with_demand(_totals_only(_emptiest), None),
            "round-robin": _with_demand(_totals_only(_RoundRobin()), None)}


NAMES = tuple(strategies())
