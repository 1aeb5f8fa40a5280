"""Backfill with reservations, as Slurm's backfill scheduler does it: the first jobs of a cycle that
cannot start (up to `depth`, as `bf_max_job_test`) each reserve the site where they can start
soonest, by when the running work ends (its time limit; work without one is taken to run on); a
job behind them may start at that site now only if it ends before the reservation (its time
limit says so) or takes only what the reservation will not need. So a stream of small jobs cannot
keep a large one waiting for ever.

Counted per site in CPUs, memory and GPUs (whole GPUs free of the models the job takes): the
exact GPU block is found when the time comes. A reservation holds its ask from its start on, and
the later ones at a site count it as taken. Pure: built from a cycle's snapshot and free capacity,
changed only by the cycle that owns it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from policies.feasible import EPS, Masks
from policies.gpus import GpuRequest
from policies.model import BackfillSettings, PendingJob, Reservation
from policies.preemption import Running

INF = float("inf")


@dataclass
class _Held:
    job_id: str
    start: float
    end: float                     # start + its time limit; INF when it has none
    need: np.ndarray
    slack: np.ndarray              # what is free there while it runs besides what it needs


@dataclass
class Backfill:
    """One cycle's reservations and what running work frees when."""

    masks: Masks
    now: float
    depth: int
    ends: dict[int, list[tuple[float, np.ndarray]]] = field(default_factory=dict)   # site -> (end, resources)
    held: dict[int, list[_Held]] = field(default_factory=dict)
    made: list[Reservation] = field(default_factory=list)

    @classmethod
    def of(cls, masks: Masks, running: tuple[Running, ...], now: float, settings: BackfillSettings) -> Backfill:
        out = cls(masks, now, settings.depth)
        for r in running:
            if not r.stopping:
                out.ends.setdefault(r.site, []).append((_end(r.started_at or now, r.job), _need(r.job, None)))
        return out

    def blocks(self, job: PendingJob, i: int) -> Reservation | None:
        """The reservation at site i that starting `job` there now would delay, if any."""
        end, need = _end(self.now, job), _need(job, None)
        for h in self.held.get(i, ()):
            if end > h.start + EPS and (need > h.slack + EPS).any():
                return next(r for r in self.made if r.job_id == h.job_id)
        return None

    def took(self, job: PendingJob, i: int) -> None:
        """`job` starts at site i now: what it holds while a reservation runs comes off its slack."""
        end, need = _end(self.now, job), _need(job, None)
        for h in self.held.get(i, ()):
            if end > h.start + EPS:
                h.slack = h.slack - need
        self.ends.setdefault(i, []).append((end, need))

    def reserve(self, job: PendingJob, req: GpuRequest | None, sites: np.ndarray) -> Reservation | None:
        """The site among `sites` where `job` can start soonest, reserved; None past the depth or
        when no site can say when (its capacity is held by work of unknown end)."""
        if len(self.made) >= self.depth or not sites.size:
            return None
        need, run_s = _need(job, req), job.time_limit if job.time_limit > 0 else INF
        best: tuple[float, int, np.ndarray] | None = None
        for i in (int(s) for s in sites):
            start, slack = self._earliest(i, need, run_s)
            if start < INF and (best is None or start < best[0]):
                best = (start, i, slack)
        if best is None:
            return None
        start, i, slack = best
        for h in self.held.get(i, ()):   # the earlier ones it overlaps have that much less to spare
            if h.start < start + run_s and start < h.end:
                h.slack = h.slack - need
        self.held.setdefault(i, []).append(_Held(job.id, start, start + run_s, need, slack))
        made = Reservation(job.id, self.masks.snapshot.sites[i].name, start)
        self.made.append(made)
        return made

    def _earliest(self, i: int, need: np.ndarray, run_s: float) -> tuple[float, np.ndarray]:
        """The first moment from which `need` stays free at site i for `run_s`, and the least that
        is free besides it meanwhile; (INF, -) when there is none."""
        m = self.masks
        events = [(e, freed) for e, freed in self.ends.get(i, ()) if e < INF]
        for h in self.held.get(i, ()):
            events.append((h.start, -h.need))
            if h.end < INF:
                events.append((h.end, h.need))
        events.sort(key=lambda e: e[0])
        times = np.array([self.now] + [max(e, self.now) for e, _ in events])
        free = np.array([m.free_cpu[i], m.free_mem[i], self._gpus(i)])
        avail = free + np.cumsum(np.vstack([np.zeros(3)] + [d for _, d in events]), axis=0)
        # what is free at each moment: after every event up to it
        last = np.searchsorted(times, times, side="right") - 1
        avail = avail[last]
        for k, t in enumerate(times):
            if k and times[k - 1] == t:
                continue
            until = np.searchsorted(times, t + run_s, side="left") if run_s < INF else len(times)
            window = avail[k:max(until, k + 1)]
            if (window >= need - EPS).all():
                return float(t), window.min(axis=0) - need
        return INF, np.zeros(3)

    def _gpus(self, i: int) -> float:
        g = self.masks.gpu
        return float(g.whole_total[i]) if g.sites else 0.0


def _end(start: float, job: PendingJob) -> float:
    return start + job.time_limit if job.time_limit > 0 else INF


def _need(job: PendingJob, req: GpuRequest | None) -> np.ndarray:
    return np.array([job.cpus, job.memory, req.whole if req is not None else job.gpus])
