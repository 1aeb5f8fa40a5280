"""Backfill with reservations, as Slurm's backfill scheduler does it: the first jobs of a cycle that
cannot start (up to `depth`, as `bf_max_job_test`) each reserve the site where they can start
soonest, by when the running work ends (its time limit; work without one is taken to run on); a
job behind them may start at that site now only if it ends before the reservation (its time
limit says so) or takes only what the reservation will not need. So a stream of small jobs cannot
keep a large one waiting for ever.

A GPU job reserves the very GPUs it will get: the block of its shape (one NVLink domain, or one
node) whose GPUs are all whole soonest. A job that would still run at that moment is placed as if
those GPUs were taken (`state_for`: a copy of the cycle's GPU state with every reserved block held).
CPUs and memory are counted per site: a reservation keeps what is free besides its own ask while it
runs as its slack, and a job started in its way must fit in that slack. Jobs of several nodes
(`per_node`, a rack) reserve nothing. The same ends time each GPU node (`drain`): a job is
placed where it keeps a node busy no longer than its other work, so nodes empty together and the
big jobs' reservations come due sooner. Pure: built from a cycle's snapshot, changed only by the cycle
that owns it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from policies.drain import Drain
from policies.feasible import EPS, Masks
from policies.gpu_state import GpuState
from policies.gpus import MILLI, Binding, GpuRequest
from policies.model import BackfillSettings, PendingJob, Reservation
from policies.preemption import Running

INF = float("inf")


@dataclass
class _Held:
    job_id: str
    start: float
    end: float                     # start + its time limit; INF when it has none
    need: np.ndarray               # CPUs and memory
    slack: np.ndarray              # what is free there while it runs besides what it needs


@dataclass
class Backfill:
    """One cycle's reservations and what running work frees when."""

    masks: Masks
    now: float
    depth: int
    ends: dict[int, dict[str, tuple[float, np.ndarray]]] = field(default_factory=dict)  # site -> job -> (end, need)
    gpu_end: np.ndarray = field(default_factory=lambda: np.zeros(0))    # per flat GPU, when its last work ends
    node_end: np.ndarray = field(default_factory=lambda: np.zeros(0))   # the same per GPU node
    held: dict[int, list[_Held]] = field(default_factory=dict)
    made: list[Reservation] = field(default_factory=list)
    tried: int = 0                   # jobs that asked for a reservation this cycle (made or not)
    shadow: GpuState | None = None   # the cycle's GPUs with every reserved block held
    first_start: dict[int, float] = field(default_factory=dict)   # site -> its earliest GPU reservation
    usable: dict[tuple, np.ndarray] = field(default_factory=dict)   # (site, models, memory) -> flat GPUs of that kind

    @classmethod
    def of(cls, masks: Masks, running: tuple[Running, ...], now: float, settings: BackfillSettings) -> Backfill:
        out = cls(masks, now, settings.depth, gpu_end=np.full(masks.gpu.free.size, -INF),
                  node_end=np.full(masks.gpu.node_whole.size, now))
        for r in running:
            if not r.stopping:
                out._ran(r.job, r.site, r.binding, r.started_at or now)
        return out

    def _ran(self, job: PendingJob, i: int, binding: Binding, start: float) -> None:
        end = _end(start, job)
        self.ends.setdefault(i, {})[job.id] = (end, _need(job))
        self._busy(_flat(self.masks.gpu, i, binding), end)

    def _busy(self, gpus: list[int], until: float) -> None:
        self.gpu_end[gpus] = np.maximum(self.gpu_end[gpus], until)
        nodes = self.masks.gpu.node_of[gpus]
        self.node_end[nodes] = np.maximum(self.node_end[nodes], until)

    def drain(self, job: PendingJob) -> Drain | None:
        """What times the GPU nodes for `job`: none when it declares no time limit."""
        return Drain(self.node_end, _end(self.now, job)) if job.time_limit > 0 else None

    def state_for(self, job: PendingJob, i: int) -> GpuState | None:
        """The GPU state `job` is to be placed on at site i: with the reserved blocks held when it
        would still run when the first of them is due; None for the cycle's own."""
        start = self.first_start.get(i)
        return self.shadow if start is not None and _end(self.now, job) > start + EPS else None

    def blocks(self, job: PendingJob, i: int) -> Reservation | None:
        """The reservation at site i whose CPUs or memory starting `job` there now would take."""
        end, need = _end(self.now, job), _need(job)
        for h in self.held.get(i, ()):
            if end > h.start + EPS and (need > h.slack + EPS).any():
                return next(r for r in self.made if r.job_id == h.job_id)
        return None

    def took(self, job: PendingJob, i: int, binding: Binding, sign: int = -1) -> None:
        """`job` starts at site i now (sign -1), or gives back a start (+1, a gang rolled back)."""
        end, need = _end(self.now, job), _need(job)
        for h in self.held.get(i, ()):
            if end > h.start + EPS:
                h.slack = h.slack + sign * need
        if sign < 0:
            self._ran(job, i, binding, self.now)
        else:
            self.ends.get(i, {}).pop(job.id, None)
        if self.shadow is not None and binding:
            self.shadow.reserve(i, binding, sign)

    def reserve(self, job: PendingJob, req: GpuRequest | None, sites: np.ndarray) -> Reservation | None:
        """The site among `sites` where `job` can start soonest, reserved; None past the depth (the
        jobs tried, as Slurm counts them, so a cycle's cost stays bounded) or when no site can say
        when (what it needs is held by work of unknown end)."""
        if self.tried >= self.depth or not sites.size or (req is not None and (req.per_node or req.colocate)):
            return None
        self.tried += 1
        need, run_s = _need(job), job.time_limit if job.time_limit > 0 else INF
        best: tuple[float, int, np.ndarray, np.ndarray] | None = None
        for i in (int(s) for s in sites):
            gpus, after = (np.zeros(0, dtype=np.int64), self.now) if req is None else self._block(i, req)
            start, slack = self._earliest(i, need, run_s, after) if after < INF else (INF, need)
            if start < INF and (best is None or start < best[0]):
                best = (start, i, slack, gpus)
        if best is None:
            return None
        start, i, slack, gpus = best
        for h in self.held.get(i, ()):   # the earlier ones it overlaps have that much less to spare
            if h.start < start + run_s and start < h.end:
                h.slack = h.slack - need
        self.held.setdefault(i, []).append(_Held(job.id, start, start + run_s, need, slack))
        if gpus.size:
            if self.shadow is None:
                self.shadow = self.masks.gpu.copy()
            shadow = self.shadow
            shadow.reserve(i, shadow.slots(i, gpus[shadow.free[gpus] > 0]))
            self._busy(gpus.tolist(), start + run_s)
            self.first_start[i] = min(self.first_start.get(i, INF), start)
        made = Reservation(job.id, self.masks.snapshot.sites[i].name, start)
        self.made.append(made)
        return made

    def _block(self, i: int, req: GpuRequest) -> tuple[np.ndarray, float]:
        """The GPUs of site i that are whole soonest in the shape `req` asks (one NVLink domain, or
        one node), and when."""
        g = self.masks.gpu
        memory = req.memory if req.count else 0
        flat = self.usable.get((i, req.models, memory))
        if flat is None:
            a, b = g.sites[i].start, g.sites[i].end
            ok = np.isin(g.model_of[a:b], g.model_ids(req.models)) & (g.memory_of[a:b] >= memory)
            flat = self.usable[(i, req.models, memory)] = np.flatnonzero(ok) + a
        if not flat.size:
            return flat, INF
        known = self.gpu_end[flat]
        # A whole GPU no work is known on is free now; one in use by work of unknown end, never.
        free_at = np.where((g.free[flat] == MILLI) & (known == -INF), self.now,
                           np.maximum(self.now, np.where(known == -INF, INF, known)))
        unit = g.group_of[flat] if req.nvlink == "required" else g.node_of[flat]
        k = max(1, req.count)
        order = np.lexsort((free_at, unit))   # by unit, soonest first (stable: file order on ties)
        _, first, size = np.unique(unit[order], return_index=True, return_counts=True)
        big = np.flatnonzero(size >= k)
        if not big.size:
            return flat[:0], INF
        when = free_at[order[first[big] + k - 1]]   # the k-th soonest of each unit
        u = int(first[big[int(np.argmin(when))]])
        return np.sort(flat[order[u:u + k]]), float(when.min())

    def _earliest(self, i: int, need: np.ndarray, run_s: float, after: float) -> tuple[float, np.ndarray]:
        """The first moment from `after` on from which `need` (CPUs, memory) stays free at site i for
        `run_s`, and the least free besides it meanwhile; (INF, -) when there is none."""
        m = self.masks
        events = [(e, freed) for e, freed in self.ends.get(i, {}).values() if e < INF]
        for h in self.held.get(i, ()):
            events.append((h.start, -h.need))
            if h.end < INF:
                events.append((h.end, h.need))
        events.sort(key=lambda e: e[0])
        times = np.maximum(np.array([self.now] + [e for e, _ in events]), self.now)
        steps = np.array([[0.0, 0.0]] + [d for _, d in events]).reshape(-1, 2)
        avail = np.array([m.free_cpu[i], m.free_mem[i]]) + np.cumsum(steps, axis=0)
        avail = avail[np.searchsorted(times, times, side="right") - 1]   # after every event up to each moment
        # Each candidate start (`after`, then every later event) fits when no moment from it until
        # it would end lacks `need`: the first moment short of it is at or past that end.
        starts = np.concatenate([[after], times[times > after]])
        k = np.searchsorted(times, starts, side="right") - 1
        until = np.searchsorted(times, starts + run_s, side="left") if run_s < INF else np.full(k.size, times.size)
        until = np.maximum(until, k + 1)
        short = np.append(np.flatnonzero(~(avail >= need - EPS).all(axis=1)), times.size)
        fits = short[np.searchsorted(short, k)] >= until
        if not fits.any():
            return INF, need
        c = int(np.argmax(fits))
        return float(starts[c]), avail[k[c]:until[c]].min(axis=0) - need


def _end(start: float, job: PendingJob) -> float:
    return start + job.time_limit if job.time_limit > 0 else INF


def _need(job: PendingJob) -> np.ndarray:
    return np.array([job.cpus, job.memory])


def _flat(state: GpuState, i: int, binding: Binding) -> list[int]:
    site = state.sites[i]
    out: list[int] = []
    for slot in binding:
        k = site.names.get(slot.node)
        if k is not None:
            out.extend(site.node_start[k] + g for g in slot.gpus if g < site.nodes[k].gpus)
    return out
