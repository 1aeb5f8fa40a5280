"""Which running work to stop so that waiting work can start.

Two reasons to preempt, both only at a site the waiting job may use (its data rules,
narrowing and shape) and only for a job no site can take now:
- priority: the waiting job's priority is higher than the victim's;
- reclaim: the waiting job's queue is below its deserved share and stays within it, the
  victim's queue is above its own and stays at or above it without the victim.
Victims: lowest priority first, then the most recently started (least work lost); never one
that has run less than `min_runtime`, never more than `budget` in a cycle; only the head of
the waiting jobs (in scheduling order, highest priority first) is considered each cycle. Attempts already
stopping count as free, so a job is not given victims twice. The preemptor is not placed
in the same cycle: the stopped work frees its resources first.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from policies.fairshare import EPS, Ledger, demand
from policies.gpu_state import GpuState
from policies.gpus import Binding, GpuRequest
from policies.model import PendingJob

HEAD = 64   # waiting jobs considered a cycle, at least


@dataclass(frozen=True, slots=True)
class Running:
    """A live attempt as preemption sees it."""

    job: PendingJob              # its resources, priority and queue
    attempt: int
    site: int                    # index in the snapshot
    binding: Binding = ()
    gpu_model: str = ""
    started_at: float = 0.0      # 0: not started yet
    stopping: bool = False       # a stop was already requested


@dataclass(frozen=True, slots=True)
class Preemption:
    job_id: str                  # the victim
    attempt: int
    site: str
    for_job: str                 # the job it makes room for
    reason: str


@dataclass(frozen=True, slots=True)
class Settings:
    enabled: bool = True
    min_runtime: float = 300.0
    budget: int = 10             # victims this cycle, after the policy's hourly limit
    reclaim: bool = True
    queues_running: Mapping[str, Mapping[str, float]] = field(default_factory=dict)


def preemptions(waiting: Sequence[tuple[PendingJob, GpuRequest | None, np.ndarray]], running: Sequence[Running],
                sites: Sequence[str], free_cpu: np.ndarray, free_mem: np.ndarray, gpu: GpuState, ledger: Ledger,
                now: float, settings: Settings) -> tuple[list[Preemption], dict[str, str]]:
    """`waiting`: jobs no site could take, in scheduling order, each with the sites it may use
    (a bool mask); `free_*` and `gpu`: capacity after this cycle's placements. `gpu` is changed.
    Returns the victims, and per waiting job that stopping work makes room for, the site."""
    if not settings.enabled or not waiting or not running:
        return [], {}
    cpu, mem = free_cpu.copy(), free_mem.copy()
    by_site: dict[int, list[Running]] = {}
    for r in running:
        if r.stopping:
            _release(r, cpu, mem, gpu)
        else:
            by_site.setdefault(r.site, []).append(r)
    queue_use = {q: dict(v) for q, v in settings.queues_running.items()}
    out: list[Preemption] = []
    room: dict[str, str] = {}
    # The head of the queue only: a long backlog is not searched for victims every cycle.
    for job, req, allowed in waiting[:max(HEAD, 4 * settings.budget)]:
        at = _place(job, req, np.flatnonzero(allowed), cpu, mem, gpu)
        if at is not None:
            room[job.id] = sites[at]  # what is already stopping makes room for it
            continue
        if len(out) >= settings.budget:
            continue
        best: tuple[tuple, int, list[Running], str] | None = None
        for i in np.flatnonzero(allowed).tolist():
            pick = _victims(job, req, i, by_site.get(i, []), cpu, mem, gpu, ledger, queue_use, now, settings,
                            settings.budget - len(out))
            if pick is not None:
                victims, why = pick
                cost = (max(v.job.priority for v in victims), len(victims),
                        sum(v.job.cpus for v in victims), i)
                if best is None or cost < best[0]:
                    best = (cost, i, victims, why)
        if best is None:
            continue
        _, i, victims, why = best
        for v in victims:
            _release(v, cpu, mem, gpu)
            by_site[i].remove(v)
            _add(queue_use, v.job.queue, demand(v.job, v.gpu_model), -1)
            out.append(Preemption(v.job.id, v.attempt, sites[i], job.id, why))
        placed = _place(job, req, np.array([i]), cpu, mem, gpu)
        assert placed is not None, "victims were chosen so that the job fits"
        room[job.id] = sites[i]
        _add(queue_use, job.queue, demand(job), +1)
    return out, room


def _victims(job: PendingJob, req: GpuRequest | None, i: int, candidates: list[Running], cpu: np.ndarray,
             mem: np.ndarray, gpu: GpuState, ledger: Ledger, queue_use: dict, now: float, settings: Settings,
             room: int) -> tuple[list[Running], str] | None:
    """The fewest, least valuable victims at site i that make `job` fit, and why; None if none do."""
    eligible = []
    for r in candidates:
        if r.started_at and now - r.started_at < settings.min_runtime:
            continue
        if r.job.priority < job.priority:
            eligible.append((r, f"priority: {job.id} outranks it"))
        elif settings.reclaim and r.job.priority <= job.priority and _reclaims(job, r, ledger, queue_use):
            eligible.append((r, f"reclaim: queue {job.queue} is below its deserved share, {r.job.queue} above"))
    if not eligible:
        return None
    eligible.sort(key=lambda e: (e[0].job.priority, -e[0].started_at))
    taken: list[tuple[Running, str]] = []
    fits = False
    for r, why in eligible[:room]:
        _release(r, cpu, mem, gpu)
        taken.append((r, why))
        if _fits(job, req, i, cpu, mem, gpu):
            fits = True
            break
    for r, _ in taken:
        _hold(r, cpu, mem, gpu)
    if not fits:
        return None
    # Keep only the victims the fit needs: drop any whose resources turn out not to matter.
    needed = list(taken)
    for t in taken:
        rest = [x for x in needed if x is not t]
        for r, _ in rest:
            _release(r, cpu, mem, gpu)
        ok = _fits(job, req, i, cpu, mem, gpu)
        for r, _ in rest:
            _hold(r, cpu, mem, gpu)
        if ok:
            needed = rest
    return [r for r, _ in needed], needed[0][1]


def _reclaims(job: PendingJob, victim: Running, ledger: Ledger, queue_use: dict) -> bool:
    """The waiting job's queue stays within its deserved share; the victim's stays at or above its own."""
    if job.queue == victim.job.queue:
        return False
    mine, theirs = ledger.nodes[job.queue].queue, ledger.nodes[victim.job.queue].queue
    asks = demand(job)
    use = queue_use.get(job.queue, {})
    dims = [d for d, v in asks.items() if v > 0]
    if not dims or any(use.get(d, 0.0) + asks[d] > mine.deserved.get(d, 0.0) + EPS for d in dims):
        return False
    frees = demand(victim.job, victim.gpu_model)
    held = queue_use.get(victim.job.queue, {})
    return all(held.get(d, 0.0) - frees.get(d, 0.0) >= theirs.deserved.get(d, 0.0) - EPS
               for d in dims if frees.get(d, 0.0) > 0) and any(frees.get(d, 0.0) > 0 for d in dims)


def _fits(job: PendingJob, req: GpuRequest | None, i: int, cpu: np.ndarray, mem: np.ndarray, gpu: GpuState) -> bool:
    if cpu[i] < job.cpus - EPS or mem[i] < job.memory - EPS:
        return False
    return req is None or gpu.fit(i, req)[0] is not None


def _place(job: PendingJob, req: GpuRequest | None, sites: np.ndarray, cpu: np.ndarray, mem: np.ndarray,
           gpu: GpuState) -> int | None:
    """Reserve the job at the first of `sites` it fits on, on the working state; that site."""
    for i in sites.tolist():
        if cpu[i] < job.cpus - EPS or mem[i] < job.memory - EPS:
            continue
        binding: Binding = ()
        if req is not None:
            fitted = gpu.fit(i, req)[0]
            if fitted is None:
                continue
            binding = fitted
            gpu.reserve(i, binding)
        cpu[i] -= job.cpus
        mem[i] -= job.memory
        return i
    return None


def _release(r: Running, cpu: np.ndarray, mem: np.ndarray, gpu: GpuState) -> None:
    cpu[r.site] += r.job.cpus
    mem[r.site] += r.job.memory
    if r.binding:
        gpu.reserve(r.site, r.binding, +1)


def _hold(r: Running, cpu: np.ndarray, mem: np.ndarray, gpu: GpuState) -> None:
    cpu[r.site] -= r.job.cpus
    mem[r.site] -= r.job.memory
    if r.binding:
        gpu.reserve(r.site, r.binding, -1)


def _add(use: dict, queue: str, amounts: Mapping[str, float], sign: int) -> None:
    into = use.setdefault(queue, {})
    for d, v in amounts.items():
        into[d] = into.get(d, 0.0) + sign * v

