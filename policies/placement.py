"""The scheduling cycle: which site runs which job.

Jobs go in fair-share order (`fairshare.Ledger`: the queue furthest below its share, then
higher priority, then first come). For each job, the hard filters as masks over all sites
(`feasible`), a score over the survivors (`scoring`), then the exact GPU block inside the
best site by `GpuState.fit`, best fit by topology level. A job no site can take now keeps
its reasons at every site, built only when asked for (`explain`). The parts of a gang are
placed all together or not at all; at the end, work to stop for the waiting jobs
(`preemption`). Nothing here mutates its input.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

import numpy as np

from policies.backfill import Backfill
from policies.explain import Parts, held_parts, noting, site_codes, unplaced_parts, why
from policies.fairshare import Ledger, Queues, demand
from policies.feasible import FRAGMENTED, NO_FREE, OK, Masks, gpu_request, gpu_state
from policies.gpu_state import GpuState
from policies.gpus import Binding, GpuRequest
from policies.model import Decision, PendingJob, Reason, Unplaced
from policies.preemption import Preemption, preemptions
from policies.pricing import NOW, SPOT
from policies.scoring import best_first, economics, offers, score
from policies.snapshot import ScheduleResult, Snapshot

DEFERRED, QUEUE_LIMIT, GANG = int(Reason.DEFERRED), int(Reason.QUEUE_LIMIT), int(Reason.GANG)
RESERVED = int(Reason.RESERVED)
# A job no site can take now, its GPU shape, and the sites where stopping work could make room.
Starved = tuple[PendingJob, GpuRequest | None, np.ndarray]
# Where a job goes: (site, GPUs bound, score, how it starts there, after how long, price per hour).
Found = tuple[int, Binding, float, int, float, float]


def schedule(snapshot: Snapshot, pending: Sequence[PendingJob], now: float,
             max_placements: int | None = None) -> ScheduleResult:
    """Place as many pending jobs as fit, at most `max_placements`; give every other one a
    reason at every site. Jobs behind a reached limit are DEFERRED where nothing static
    excludes them: one cycle's time stays bounded in a burst, and the next cycle goes on."""
    cycle = _Cycle(snapshot, pending, now)
    decisions, unplaced, deferred = cycle.run(max_placements)
    victims, room = cycle.preempt(now)
    return ScheduleResult(decisions=tuple(decisions), unplaced=tuple(unplaced), deferred=deferred,
                          preemptions=tuple(victims), making_room=room,
                          reservations=tuple(cycle.backfill.made) if cycle.backfill else ())


def order(pending: Iterable[PendingJob]) -> list[PendingJob]:
    """Scheduling order: higher priority first, then earlier submission, then id."""
    return sorted(pending, key=lambda j: (-j.priority, j.submitted_at, j.id))


def totals(snapshot: Snapshot, gpu: GpuState | None = None) -> dict[str, float]:
    """The federation's capacity by resource dimension, the denominators of dominant shares."""
    g = gpu or gpu_state(snapshot)
    per_model = g.capacity[0].sum(axis=0)
    out = {"cpus": float(sum(s.cpus for s in snapshot.sites)), "memory": float(sum(s.memory for s in snapshot.sites)),
           "gpus": float(per_model.sum())}
    out.update({f"gpu:{name}": float(per_model[m]) for name, m in g.models.items() if name})
    return out


class _Cycle:
    """One cycle's working state: what is still free (`masks`), the fair-share ledger, the
    refusals seen so far and the jobs left waiting that preemption may make room for."""

    def __init__(self, snapshot: Snapshot, pending: Sequence[PendingJob], now: float = 0.0) -> None:
        self.snapshot = snapshot
        self.masks = Masks(snapshot)
        bf = snapshot.backfill
        self.backfill = Backfill.of(self.masks, snapshot.running, now, bf) if bf is not None and bf.depth else None
        self.ledger = Ledger(snapshot.queues or Queues(), totals(snapshot, self.masks.gpu), pending)
        # Capacity only shrinks within a cycle (a gang tried and rolled back restores what it took),
        # so a job like one that did not fit does not fit either.
        self.refused: dict[tuple, Parts] = {}
        self.starved: list[Starved] = []
        settings = snapshot.preemption
        self.preempting = bool(snapshot.running) and settings is not None and settings.enabled
        self.gangs: dict[str, list[PendingJob]] = {}
        for job in pending:
            if job.gang:
                self.gangs.setdefault(job.gang, []).append(job)
        # What preemption freed for a job is held for it: taken away from everyone until it is tried.
        self.held: dict[str, list[tuple[int, PendingJob, Binding]]] = {}
        waiting = {j.id for j in pending}
        for n in snapshot.nominated:
            i = self.masks.index.get(n.site)
            if i is not None and n.job_id in waiting:
                share = PendingJob(id=f"{n.job_id}/held", tenant="", cpus=n.cpus, memory=n.memory)
                self.masks.took(i, share, n.binding)
                self.held.setdefault(n.job_id, []).append((i, share, n.binding))

    def run(self, limit: int | None) -> tuple[list[Decision], list[Unplaced], int]:
        """Every job in the ledger's order: (decisions, unplaced, how many were deferred)."""
        decisions: list[Decision] = []
        unplaced: list[Unplaced] = []
        tried: set[str] = set()
        for job in self.ledger:
            if limit is not None and len(decisions) >= limit:
                rest = [j for j in (job, *self.ledger.remaining()) if j.id not in tried]
                unplaced.extend(Unplaced(j.id, parts=held_parts(self.masks, j, DEFERRED)) for j in rest)
                return decisions, unplaced, len(rest)
            if not job.gang:
                got = self.place(job)
                if isinstance(got, Decision):
                    decisions.append(got)
                else:
                    unplaced.append(got)
                continue
            if job.id in tried:
                continue  # placed or refused with the first of its gang
            parts = sorted(self.gangs[job.gang], key=lambda j: j.id)
            tried.update(j.id for j in parts)
            placed, refusals = self._place_gang(parts)
            decisions.extend(placed)
            unplaced.extend(refusals)
        return decisions, unplaced, 0

    def place(self, job: PendingJob, in_gang: bool = False) -> Decision | Unplaced:
        """Place one job (taking what it holds), or say why not. A job that capacity was held for
        gets it back for its try; if it still cannot start, the hold goes on."""
        held = self.held.pop(job.id, [])
        for i, share, binding in held:
            self.masks.gave_back(i, share, binding)
        got = self._place(job, in_gang, fresh=bool(held))
        if held and not isinstance(got, Decision):
            for i, share, binding in held:
                self.masks.took(i, share, binding)
            self.held[job.id] = held
        return got

    def _place(self, job: PendingJob, in_gang: bool, fresh: bool) -> Decision | Unplaced:
        req = gpu_request(job)
        if self.ledger.limited(job.queue):
            held = self.ledger.admits(job.queue, demand(job))
            if held:
                return Unplaced(job.id, parts=held_parts(self.masks, job, QUEUE_LIMIT,
                                                         f"held by a queue limit: {held}"))
        key = (job.sites, job.regions, job.datasets, req, job.cpus, job.memory, job.vetoed_by, job.queue,
               job.max_price, job.spot, job.time_limit)
        seen = None if fresh else self.refused.get(key)   # held capacity: what others saw says nothing
        if seen is not None:
            if self.preempting and not in_gang:
                self.starved.append((job, req, self.masks.may_use(job, req, ())))
            return Unplaced(job.id, None, None, seen if in_gang else self._reserve(job, req, seen, []))
        masks = self.masks
        topology: list[int] = []    # sites where the exact fit showed the shape can never be held
        # Every filter but capacity now: where none passes, what is free says nothing of why not.
        allowed = masks.may_use(job, req, ())
        if not np.count_nonzero(allowed):
            return self._refuse(job, req, key, masks.no_free, topology, in_gang)
        fits, now, anywhere = masks.free_now(job, req)
        # Capacity a site has comes first, always: nodes to add are looked at only when no site the
        # job may use can start it now.
        for later in (False, True) if masks.costs.elastic else (False,):
            grow = None
            if later:
                fits, grow, anywhere = masks.free_later(job, req)
            if not anywhere:
                continue
            # Eligible = data may go there, the job's narrowing and whole-site shape allow it,
            # the site is healthy, and it has room; the per-site codes wait until needed.
            ok = allowed & fits
            eligible = int(np.count_nonzero(ok))
            if eligible:
                found, now = self._first_fit(job, req, ok, eligible, now, topology, grow)
                if found is not None:
                    return self._take(job, req, found, ok, eligible, now, topology)
        return self._refuse(job, req, key, now, topology, in_gang)

    def _first_fit(self, job: PendingJob, req: GpuRequest | None, ok: np.ndarray, eligible: int, now: np.ndarray,
                   topology: list[int], grow: np.ndarray | None = None) -> tuple[Found | None, np.ndarray]:
        """The best-scored eligible site where the job's exact GPU block fits, and the capacity codes
        with the sites tried and found wanting marked."""
        masks = self.masks
        prefer, locality = masks.prefer(job), masks.locality(job.datasets)
        sites = np.flatnonzero(ok) if eligible * 4 < masks.n else None   # few eligible sites: score just those
        sel = slice(None) if sites is None else sites
        scores = score(masks, sel, job, req, locality, prefer)
        kind = delay = price = None
        if masks.priced:
            kind, delay, price = offers(masks, sel, job, req, grow)
            scores += economics(masks, sel, job, kind, delay, price, ok[sel])
        if sites is None:
            scores = np.where(ok, scores, -np.inf)
        for best in best_first(scores):
            i = best if sites is None else int(sites[best])
            how = NOW if kind is None else int(kind[best])
            binding, code = self._bind(job, req, i, topology) if how == NOW else ((), OK)
            cost = self._price(job, req, i, how, binding) if masks.priced else 0.0
            if code == OK and job.max_price and cost > job.max_price + 1e-9:
                code = NO_FREE   # the GPUs free there now cost more than its cap: its cheaper ones are taken
            if code == OK and how == NOW and self.backfill is not None and self.backfill.blocks(job, i):
                code = RESERVED
            if code == OK:
                return (i, binding, float(scores[best]), how, 0.0 if delay is None else float(delay[best]), cost), now
            if not now.flags.writeable:
                now = now.copy()
            now[i] = code
        return None, now

    def _price(self, job: PendingJob, req: GpuRequest | None, i: int, how: int, binding: Binding) -> float:
        """The job's price an hour at site i on what it would be given: its bound GPUs' model, or the
        node type the site is to add."""
        costs = self.masks.costs
        model = self.masks.gpu.model_of_binding(i, binding) if binding else ""
        if how != NOW and req is not None:
            j = costs.node_for(how, i, job.cpus, job.memory, req)
            model = costs.types[i][j].gpu_model if j >= 0 else ""
        return costs.price_at(i, how, job.cpus, job.memory, req, model)

    def _bind(self, job: PendingJob, req: GpuRequest | None, i: int, topology: list[int]) -> tuple[Binding, int]:
        """The GPUs the job would hold at site i, and OK, or the capacity code that says no."""
        if req is None:
            return (), OK
        gpu = self.masks.gpu
        shadow = self.backfill.state_for(job, i) if self.backfill is not None else None
        binding, miss = (shadow or gpu).fit(i, req, drain=self.backfill.drain(job) if self.backfill else None)
        if binding is None and shadow is not None and gpu.fit(i, req)[0] is not None:
            return (), RESERVED   # it fits on GPUs a job ahead of it reserved, and would still hold them then
        if binding is None:
            assert miss is not None
            if miss.static:
                topology.append(i)
            return (), NO_FREE if miss.static else FRAGMENTED
        if self.ledger.limited(job.queue, models=True) and self.ledger.admits(
                job.queue, demand(job, gpu.model_of_binding(i, binding))):
            return binding, QUEUE_LIMIT  # this site's GPU model is capped for the queue
        return binding, OK

    def _take(self, job: PendingJob, req: GpuRequest | None, found: Found, ok: np.ndarray,
              eligible: int, now: np.ndarray, topology: list[int]) -> Decision:
        """Place the job at the site found: it holds what it takes from here on."""
        i, binding, best, how, delay, price = found
        masks = self.masks
        site = self.snapshot.sites[i]
        model = masks.gpu.model_of_binding(i, binding) if binding else ""
        node = ""
        if how != NOW:
            j = masks.costs.node_for(how, i, job.cpus, job.memory, req)
            node = site.elastic.node_types[j].name if site.elastic is not None and j >= 0 else ""
            model = site.elastic.node_types[j].gpu_model if site.elastic is not None and j >= 0 and req else model
        masks.took(i, job, binding, kind=how)
        if self.backfill is not None and how == NOW:
            self.backfill.took(job, i, binding)
        self.ledger.charge(job.queue, demand(job, model))
        reasons = why(job, req, site, masks.locality(job.datasets)[i], masks.prefer(job)[i], masks, i, eligible,
                      binding, node, delay, price)
        return Decision(job_id=job.id, site=site.name, score=round(best, 4), reasons=reasons, candidates=eligible,
                        binding=binding, gpu_model=model, site_codes=site_codes(masks, job, req, now, topology, ok),
                        price=price, node_type=node, spot=how == SPOT, start_s=delay)

    def _refuse(self, job: PendingJob, req: GpuRequest | None, key: tuple, now: np.ndarray, topology: list[int],
                in_gang: bool) -> Unplaced:
        """No site has room for this job now: the per-site reasons wait until someone asks."""
        parts = unplaced_parts(self.masks, job, req, now, topology)
        if not in_gang:  # a refusal while a gang holds part of the capacity says nothing after it
            self.refused[key] = parts
            if self.preempting:
                self.starved.append((job, req, self.masks.may_use(job, req, topology)))
            parts = self._reserve(job, req, parts, topology)
        return Unplaced(job.id, parts=parts)

    def _reserve(self, job: PendingJob, req: GpuRequest | None, parts: Parts, topology: list[int]) -> Parts:
        """With backfill, a reservation for a job that cannot start now (while the depth lasts),
        noted in its reasons."""
        bf = self.backfill
        made = bf.reserve(job, req, np.flatnonzero(self.masks.may_use(job, req, topology))) if bf else None
        if bf is None or made is None:
            return parts
        return noting(parts, f"reserved {made.site} from {made.start - bf.now:.0f}s from now, when the work "
                             "running there is due to end")

    def _place_gang(self, parts: list[PendingJob]) -> tuple[list[Decision], list[Unplaced]]:
        """All parts of a gang placed, or none: what the first parts took is given back when a later one
        cannot be placed, and every part says why."""
        size = parts[0].gang_size
        gang = parts[0].gang
        masks = self.masks
        if len(parts) < size:
            note = f"gang {gang}: {len(parts)} of its {size} parts are waiting; it starts only whole"
            return [], [Unplaced(p.id, parts=held_parts(masks, p, GANG, note)) for p in parts]
        done: list[tuple[PendingJob, Decision]] = []
        for p in parts:
            got = self.place(p, in_gang=True)
            if isinstance(got, Decision):
                done.append((p, got))
                continue
            for q, d in reversed(done):
                masks.gave_back(masks.index[d.site], q, d.binding)
                if self.backfill is not None and not d.node_type:
                    self.backfill.took(q, masks.index[d.site], d.binding, sign=+1)
                self.ledger.charge(q.queue, demand(q, d.gpu_model), -1.0)
            note = f"gang {gang}: part {p.id} cannot be placed now ({got.summary}), so no part is"
            return [], [got if q is p else Unplaced(q.id, parts=held_parts(masks, q, GANG, note)) for q in parts]
        note = f"gang {gang}: all {size} parts placed together"
        return [replace(d, reasons=(note, *d.reasons)) for _, d in done], []

    def preempt(self, at: float) -> tuple[list[Preemption], dict[str, str]]:
        """Running work to stop so that the jobs left waiting can start, and where."""
        snapshot, masks = self.snapshot, self.masks
        if not self.starved or snapshot.preemption is None:
            return [], {}
        self.starved.sort(key=lambda s: -s[0].priority)  # stable: scheduling order within a priority
        usage = snapshot.queues.usage if snapshot.queues else {}
        settings = replace(snapshot.preemption, queues_running={q: u.running for q, u in usage.items()})
        return preemptions(self.starved, snapshot.running, [s.name for s in snapshot.sites], masks.free_cpu,
                           masks.free_mem, masks.gpu.copy(), self.ledger, at, settings)
