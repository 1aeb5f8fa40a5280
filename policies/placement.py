"""Which site runs which job.

Hard filters first (the job's site and region narrowing, data sovereignty, whole-site
capacity, GPU type and topology shape, site vetoes, site health and cordons, free capacity
now, free GPUs in the wanted shape now), then a score over the survivors (data locality,
preference, CPU capacity left, GPU packing, load); the exact GPU block is then chosen
inside the best site by `GpuState.fit`, best fit by topology level. Jobs go in priority
order, FIFO within a priority. Nothing here mutates its input.

`static_verdict` states each filter for one job and one site; `schedule` computes the
same filters as NumPy masks over all sites, cached per dataset and per constraint set,
so one decision costs a few vector operations (tests hold the two to agreement).
"""
from __future__ import annotations

import gc
from dataclasses import replace
from typing import Callable, Iterable, Sequence

import numpy as np

from policies.fairshare import Ledger, Queues, demand
from policies.model import (
    Decision,
    PendingJob,
    Reason,
    ScheduleResult,
    SiteView,
    Snapshot,
    Unplaced,
    Verdict,
)
from policies.preemption import Preemption, preemptions
from policies.sovereignty import sovereignty_verdict
from policies.topology import MILLI, GpuRequest, GpuState, Slot, synthesized

W_LOCALITY = 4.0   # all of the job's data already at the site
W_PREFER = 2.0     # the site or its region is in placement.prefer
W_FREE = 1.0       # mean fraction of capacity still free after placing
W_LOAD = 0.5       # attempts already running there, saturating
W_SHARED = 2.0     # a shared-GPU job fits on a GPU that is already shared
W_NVLINK = 1.0     # a job that prefers one NVLink domain can have it here
W_TIGHT = 2.0      # the site's tightest NVLink group / node holding the job leaves least free
EPS = 1e-9
OK = int(Reason.OK)
VETOED, FRAGMENTED, NO_FREE = int(Reason.VETOED), int(Reason.FRAGMENTED), int(Reason.NO_FREE_CAPACITY)
DEFERRED, QUEUE_LIMIT, GANG = int(Reason.DEFERRED), int(Reason.QUEUE_LIMIT), int(Reason.GANG)


def in_region(site_region: str, wanted: str) -> bool:
    """Regions nest by '-': 'eu' contains 'eu-west' and 'eu-west-1'."""
    return site_region == wanted or site_region.startswith(wanted + "-")


def _matches(site: SiteView, names: Iterable[str]) -> bool:
    return any(site.name == n or in_region(site.region, n) for n in names)


def static_verdict(job: PendingJob, site: SiteView, snapshot: Snapshot) -> tuple[Reason, str]:
    """Every filter that does not depend on what else is placed this cycle, in order."""
    if job.sites and site.name not in job.sites:
        return Reason.NOT_IN_SITES, f"job allows only sites {', '.join(job.sites)}"
    if job.regions and not any(in_region(site.region, r) for r in job.regions):
        return Reason.NOT_IN_REGIONS, f"region {site.region} is not in {', '.join(job.regions)}"
    reason, detail = sovereignty_verdict(job.datasets, site, snapshot.catalog, snapshot.rules)
    if reason is not Reason.OK:
        return reason, detail
    if job.cpus > site.cpus + EPS or job.memory > site.memory + EPS:
        return Reason.NEVER_FITS, (f"needs {_fmt(job.cpus, job.memory, job.gpus)}, "
                                   f"site has {_fmt(site.cpus, site.memory, site.gpus)} in all")
    req = gpu_request(job)
    if req is not None:
        state = gpu_state(snapshot)
        i = snapshot.sites.index(site)
        _, miss = state.fit(i, req, capacity=True)
        if miss is not None:
            if miss.kind == "capacity" or state.total(i) == 0:
                return Reason.NEVER_FITS, f"needs {req.shape()}; {miss.detail or 'site has no GPUs'}"
            return (Reason.GPU_TYPE if miss.kind == "gpu-type" else Reason.TOPOLOGY), miss.detail
    if site.name in job.vetoed_by:
        return Reason.VETOED, "the site refused this job earlier"
    if not site.connected:
        return Reason.OFFLINE, "site agent is not connected"
    if site.draining:
        return Reason.DRAINING, "site is draining"
    if site.cordoned:
        return Reason.CORDONED, "site is cordoned"
    return Reason.OK, ""


def describe(job: PendingJob, site: SiteView, reason: Reason, snapshot: Snapshot) -> Verdict:
    """The human reason behind a code `schedule` returned."""
    if reason in (Reason.NO_FREE_CAPACITY, Reason.FRAGMENTED):
        req = gpu_request(job)
        if reason is Reason.FRAGMENTED and req is not None:
            _, miss = gpu_state(snapshot).fit(snapshot.sites.index(site), req)
            detail = miss.detail if miss is not None else "the shape was taken by a job placed earlier this cycle"
            return Verdict(site.name, reason, f"needs {req.shape()}: {detail}")
        free = _fmt(max(0.0, site.cpus - site.used_cpus), max(0.0, site.memory - site.used_memory),
                    max(0.0, site.gpus - site.used_gpus))
        return Verdict(site.name, reason, f"needs {_fmt(job.cpus, job.memory, job.gpus)}; "
                                          f"not free now (free at the start of the cycle: {free})")
    if reason is Reason.GANG:
        return Verdict(site.name, reason, "another part of the job's gang cannot be placed now; see the summary")
    if reason is Reason.QUEUE_LIMIT:
        return Verdict(site.name, reason, "the job's queue (or a parent) is at its limit here; see the summary")
    if reason is Reason.DEFERRED:
        return Verdict(site.name, reason, "not considered this cycle: its placement limit went to jobs ahead "
                                          "of this one; the next cycle starts at once")
    return Verdict(site.name, reason, static_verdict(job, site, snapshot)[1])


def _fmt(cpus: float, memory: float, gpus: float) -> str:
    return f"{cpus:g} cpus, {memory / 2**30:.3g}Gi memory, {gpus:g} gpus"


def gpu_request(job: PendingJob) -> GpuRequest | None:
    """The job's GPU shape; legacy `gpus` alone means that many whole GPUs of any type."""
    if job.gpu is not None and job.gpu.wanted:
        return job.gpu
    if job.gpus <= EPS:
        return None
    if job.gpus < 1:
        return GpuRequest(share=max(1, round(job.gpus * MILLI)))
    return GpuRequest(count=int(round(job.gpus)))


def gpu_state(snapshot: Snapshot) -> GpuState:
    """The snapshot's GPU state, or one made from SiteView totals (one node a site, no NVLink)."""
    if snapshot.gpus is not None:
        return snapshot.gpus
    state = GpuState([synthesized(s.name, s.gpus) for s in snapshot.sites])
    for i, s in enumerate(snapshot.sites):
        used = min(s.used_gpus, float(int(s.gpus)))
        whole, part = int(used), round((used - int(used)) * MILLI)
        slots = [Slot(s.name, tuple(range(whole)))] if whole else []
        if part and whole < int(s.gpus):
            slots.append(Slot(s.name, (whole,), part))
        if slots:
            state.reserve(i, tuple(slots))
    return state


def order(pending: Iterable[PendingJob]) -> list[PendingJob]:
    """Scheduling order: higher priority first, then earlier submission, then id."""
    return sorted(pending, key=lambda j: (-j.priority, j.submitted_at, j.id))


class _Masks:
    """Per-cycle arrays over the sites, with caches keyed by what jobs share."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        sites = snapshot.sites
        self.index = {s.name: i for i, s in enumerate(sites)}
        self.n = len(sites)
        f = np.float64
        self.cap_cpu = np.array([s.cpus for s in sites], dtype=f)
        self.cap_mem = np.array([s.memory for s in sites], dtype=f)
        self.free_cpu = self.cap_cpu - np.array([s.used_cpus for s in sites], dtype=f)
        self.free_mem = self.cap_mem - np.array([s.used_memory for s in sites], dtype=f)
        self.running = np.array([s.running for s in sites], dtype=f)
        self.inv = [np.divide(1.0, c, out=np.zeros_like(c), where=c > 0) for c in (self.cap_cpu, self.cap_mem)]
        dims = (self.cap_cpu > 0).astype(f) + (self.cap_mem > 0)
        self.inv_dims = np.divide(1.0, dims, out=np.zeros_like(dims), where=dims > 0)
        self.no_dims = (dims == 0).astype(f)   # a site with neither counts as all free
        self.gpu = gpu_state(snapshot).copy()
        self.gpu_total = self.gpu.capacity[0].sum(axis=1).astype(f)
        self.gpu_inv = np.divide(1.0, self.gpu_total, out=np.zeros_like(self.gpu_total), where=self.gpu_total > 0)
        health = np.full(self.n, OK, dtype=np.uint8)
        for i, s in enumerate(sites):
            if not s.connected:
                health[i] = Reason.OFFLINE
            elif s.draining:
                health[i] = Reason.DRAINING
            elif s.cordoned:
                health[i] = Reason.CORDONED
        self.health = health
        self._dataset: dict[str, np.ndarray] = {}
        self._class: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._static: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._prefer: dict[tuple, np.ndarray] = {}
        self._regions: dict[tuple, np.ndarray] = {}
        self._gpu_static: dict[GpuRequest, np.ndarray] = {}
        self._by_data: dict[tuple, np.ndarray] = {}
        self._locality: dict[tuple, np.ndarray] = {}
        self._by_shape: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self._free: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self._data_ok: dict[tuple, np.ndarray] = {}
        self._shape_fits: dict[tuple, np.ndarray] = {}

    def _classification(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        hit = self._class.get(name)
        if hit is None:
            rule = self.snapshot.rules.classifications[name]
            sites = self.snapshot.sites
            allowed = rule.allowed_jurisdictions
            jur_ok = np.array([allowed is None or s.jurisdiction in allowed for s in sites], dtype=bool)
            label_ok = np.array([all(s.labels.get(k) == v for k, v in rule.required_labels.items()) for s in sites],
                                dtype=bool)
            hit = self._class[name] = (jur_ok, label_ok)
        return hit

    def dataset(self, name: str) -> np.ndarray:
        """Reason code per site for processing this dataset there."""
        hit = self._dataset.get(name)
        if hit is None:
            info = self.snapshot.catalog.get(name)
            if info is None:
                hit = np.full(self.n, Reason.UNKNOWN_DATASET, dtype=np.uint8)
            elif info.classification not in self.snapshot.rules.classifications:
                hit = np.full(self.n, Reason.NO_RULE, dtype=np.uint8)
            else:
                jur_ok, label_ok = self._classification(info.classification)
                held = np.zeros(self.n, dtype=bool)
                held[[self.index[s] for s in info.sites if s in self.index]] = True
                staging = self.snapshot.rules.classifications[info.classification].allow_staging
                hit = np.where(~jur_ok, Reason.JURISDICTION,
                               np.where(~label_ok, Reason.MISSING_LABEL,
                                        np.where(held | staging, OK, Reason.DATA_ELSEWHERE))).astype(np.uint8)
            self._dataset[name] = hit
        return hit

    def gpu_static(self, req: GpuRequest | None) -> np.ndarray:
        """Per site: OK, or why the GPU shape could never be held there (after NEVER_FITS)."""
        if req is None:
            return np.full(self.n, OK, dtype=np.uint8)
        hit = self._gpu_static.get(req)
        if hit is None:
            g = self.gpu
            ms = g.model_ids(req.models)
            cap_whole = g.capacity[0][:, ms]
            mem_ok = g.model_memory[ms] >= (req.memory if req.count else 0)
            has_type = ((cap_whole > 0) & mem_ok).any(axis=1)
            if req.count:
                enough = ((cap_whole >= req.count) & mem_ok).any(axis=1)
            else:
                enough = has_type & g.may_fit(req, capacity=True)
            shape = g.may_fit(req, capacity=True)
            none = self.gpu_total == 0
            hit = np.where(none, Reason.NEVER_FITS, np.where(~has_type, Reason.GPU_TYPE, np.where(
                ~enough, Reason.NEVER_FITS, np.where(~shape, Reason.TOPOLOGY, OK)))).astype(np.uint8)
            self._gpu_static[req] = hit
        return hit

    def static(self, job: PendingJob, req: GpuRequest | None) -> tuple[np.ndarray, np.ndarray]:
        """(code per site before capacity and health, the same with site health applied)."""
        key = (job.sites, job.regions, job.datasets, req, job.cpus, job.memory)
        hit = self._static.get(key)
        if hit is None:
            data = self._data(job.datasets)
            narrow, capacity = self._placement(job, req)
            codes = np.where(narrow != OK, narrow, np.where(data != OK, data, capacity)).astype(np.uint8)
            hit = self._static[key] = (codes, np.where(codes != OK, codes, self.health).astype(np.uint8))
        return hit

    def _data(self, datasets: tuple[str, ...]) -> np.ndarray:
        """Sovereignty codes for a set of datasets."""
        hit = self._by_data.get(datasets)
        if hit is None:
            hit = np.full(self.n, OK, dtype=np.uint8)
            for name in datasets:
                hit = np.where(hit == OK, self.dataset(name), hit)
            self._by_data[datasets] = hit
        return hit

    def locality(self, datasets: tuple[str, ...]) -> np.ndarray:
        """Per site, the share of the datasets it holds."""
        hit = self._locality.get(datasets)
        if hit is None:
            hit = np.zeros(self.n)
            for name in datasets:
                info = self.snapshot.catalog.get(name)
                if info is not None:
                    hit[[self.index[s] for s in info.sites if s in self.index]] += 1.0 / len(datasets)
            self._locality[datasets] = hit
        return hit

    def _placement(self, job: PendingJob, req: GpuRequest | None) -> tuple[np.ndarray, np.ndarray]:
        """(codes of the job's site and region narrowing, codes of whole-site capacity and GPU shape)."""
        key = (job.sites, job.regions, req, job.cpus, job.memory)
        hit = self._by_shape.get(key)
        if hit is None:
            narrow = np.full(self.n, OK, dtype=np.uint8)
            if job.regions:
                narrow[~self.in_regions(job.regions)] = Reason.NOT_IN_REGIONS
            if job.sites:
                allowed = np.zeros(self.n, dtype=bool)
                allowed[[self.index[s] for s in job.sites if s in self.index]] = True
                narrow[~allowed] = Reason.NOT_IN_SITES
            capacity = np.where((self.cap_cpu < job.cpus - EPS) | (self.cap_mem < job.memory - EPS),
                                Reason.NEVER_FITS, self.gpu_static(req)).astype(np.uint8)
            hit = self._by_shape[key] = (narrow, capacity)
        return hit

    def in_regions(self, regions: tuple[str, ...]) -> np.ndarray:
        hit = self._regions.get(regions)
        if hit is None:
            hit = self._regions[regions] = np.array(
                [any(in_region(s.region, r) for r in regions) for s in self.snapshot.sites], dtype=bool)
        return hit

    def prefer(self, job: PendingJob) -> np.ndarray:
        hit = self._prefer.get(job.prefer)
        if hit is None:
            hit = self._prefer[job.prefer] = np.array(
                [1.0 if job.prefer and _matches(s, job.prefer) else 0.0 for s in self.snapshot.sites])
        return hit

    def reasons(self, job: PendingJob, req: GpuRequest | None, now: np.ndarray, topology: Sequence[int] = ()
                ) -> np.ndarray:
        """The first failing filter per site, in static_verdict's order, then capacity now
        (`now`: NO_FREE_CAPACITY or FRAGMENTED where every other filter passes). `topology`:
        sites whose exact fit found the shape can never be held, though the summaries allowed it."""
        codes, base = self.static(job, req)
        if topology:
            codes, base = codes.copy(), base.copy()
            codes[list(topology)] = base[list(topology)] = int(Reason.TOPOLOGY)
        out = np.where(base != OK, base, now)
        if job.vetoed_by:
            vetoed = [self.index[s] for s in job.vetoed_by if s in self.index]
            out[vetoed] = np.where(codes[vetoed] == OK, VETOED, out[vetoed])
        return out

    def data_ok(self, datasets: tuple[str, ...]) -> np.ndarray:
        hit = self._data_ok.get(datasets)
        if hit is None:
            hit = self._data_ok[datasets] = self._data(datasets) == OK
        return hit

    def shape_fits(self, job: PendingJob, req: GpuRequest | None, fits: np.ndarray) -> np.ndarray:
        """Healthy sites the job's narrowing and whole-site shape allow, with room now; cached
        until the next placement."""
        key = (job.sites, job.regions, req, job.cpus, job.memory)
        hit = self._shape_fits.get(key)
        if hit is None:
            narrow, capacity = self._placement(job, req)
            hit = self._shape_fits[key] = (narrow == OK) & (capacity == OK) & (self.health == OK) & fits
        return hit

    def free_now(self, job: PendingJob, req: GpuRequest | None) -> tuple[np.ndarray, np.ndarray, bool]:
        """(fits now, capacity code where it does not: FRAGMENTED when enough GPUs are free but not
        in the shape, else NO_FREE_CAPACITY) per site, and whether any site fits; read-only,
        cached until the next placement changes what is free."""
        key = (req, job.cpus, job.memory)
        hit = self._free.get(key)
        if hit is None:
            ok = (self.free_cpu >= job.cpus - EPS) & (self.free_mem >= job.memory - EPS)
            if req is None:
                hit = ok, np.zeros(self.n, dtype=bool)
            else:
                shaped, enough = self.gpu.fits_now(req)
                hit = ok & shaped, ok & enough & ~shaped
            fits, fragmented = hit
            now = np.where(fragmented, FRAGMENTED, NO_FREE).astype(np.uint8)
            fits.flags.writeable = now.flags.writeable = False
            hit = self._free[key] = (fits, now, bool(fits.any()))
        return hit

    def took(self, i: int, job: PendingJob, binding: tuple, sign: int = -1) -> None:
        """A placement at site i (sign -1), or one undone (+1): what is free changed."""
        self.free_cpu[i] += sign * job.cpus
        self.free_mem[i] += sign * job.memory
        if binding:
            self.gpu.reserve(i, binding, sign)
        self.running[i] -= sign
        self._free.clear()
        self._shape_fits.clear()

    def gave_back(self, i: int, job: PendingJob, binding: tuple) -> None:
        self.took(i, job, binding, +1)


def schedule(snapshot: Snapshot, pending: Sequence[PendingJob], now: float,
             max_placements: int | None = None) -> ScheduleResult:
    """Place as many pending jobs as fit, at most `max_placements`; give every other one a
    reason at every site. Jobs behind a reached limit are DEFERRED where nothing static
    excludes them: one cycle's time stays bounded in a burst, and the next cycle goes on."""
    # A cycle allocates a few objects per job, none in reference cycles; a garbage collection
    # triggered mid-cycle would walk the whole snapshot and backlog for nothing.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _schedule(snapshot, pending, now, max_placements)
    finally:
        if collecting:
            gc.enable()


def _schedule(snapshot: Snapshot, pending: Sequence[PendingJob], at: float, limit: int | None) -> ScheduleResult:
    masks = _Masks(snapshot)
    ledger = Ledger(snapshot.queues or Queues(), totals(snapshot, masks.gpu), pending)
    decisions: list[Decision] = []
    unplaced: list[Unplaced] = []
    # Capacity only shrinks within a cycle (a gang tried and rolled back restores what it took),
    # so a job like one that did not fit does not fit either.
    refused: dict[tuple, Callable[[], tuple[str, bytes]]] = {}
    seen_before, free_now = refused.get, masks.free_now
    limited = ledger.limited
    deferred = 0
    starved: list[tuple[PendingJob, GpuRequest | None, np.ndarray]] = []   # no site can take it now
    preempting = bool(snapshot.running) and snapshot.preemption is not None and snapshot.preemption.enabled
    gangs: dict[str, list[PendingJob]] = {}
    for job in pending:
        if job.gang:
            gangs.setdefault(job.gang, []).append(job)

    def place(job: PendingJob, in_gang: bool = False) -> Decision | Unplaced:
        """Place one job (taking what it holds), or say why not."""
        req = gpu_request(job)
        if limited(job.queue):
            why = ledger.admits(job.queue, demand(job))
            if why:
                return Unplaced(job.id, parts=_held(masks, job, QUEUE_LIMIT, f"held by a queue limit: {why}"))
        key = (job.sites, job.regions, job.datasets, req, job.cpus, job.memory, job.vetoed_by, job.queue)
        seen = seen_before(key)
        if seen is not None:
            if preempting and not in_gang:
                starved.append((job, req, _may_use(masks, job, req, ())))
            return Unplaced(job.id, None, None, seen)
        fits, now, anywhere = free_now(job, req)
        topology: list[int] = []    # sites where the exact fit showed the shape can never be held
        placed = None
        if anywhere:
            # Eligible = data may go there, the job's narrowing and whole-site shape allow it,
            # the site is healthy, and it has room now; the per-site codes wait until needed.
            ok = masks.data_ok(job.datasets) & masks.shape_fits(job, req, fits)
            if job.vetoed_by:
                ok[[masks.index[s] for s in job.vetoed_by if s in masks.index]] = False
            eligible = int(np.count_nonzero(ok))
            if eligible:
                prefer, locality = masks.prefer(job), masks.locality(job.datasets)
                if eligible * 4 < masks.n:  # few eligible sites: score just those
                    sites = np.flatnonzero(ok)
                    scores = _score(masks, sites, job, req, locality, prefer)
                else:
                    sites = None
                    scores = np.where(ok, _score(masks, slice(None), job, req, locality, prefer), -np.inf)
                for best in _best_first(scores):
                    i = best if sites is None else int(sites[best])
                    binding, code = (), OK
                    if req is not None:
                        binding, miss = masks.gpu.fit(i, req)
                        if binding is None:
                            code = NO_FREE if miss.static else FRAGMENTED
                            if miss.static:
                                topology.append(i)
                        elif limited(job.queue, models=True) and ledger.admits(
                                job.queue, demand(job, masks.gpu.model_of_binding(i, binding))):
                            code = QUEUE_LIMIT  # this site's GPU model is capped for the queue
                    if code != OK:
                        if not now.flags.writeable:
                            now = now.copy()
                        now[i] = code
                        continue
                    placed = (i, binding, float(scores[best]))
                    break
        if placed is None:
            # No site has room for this job now: the per-site reasons wait until someone asks.
            parts = _parts(masks, job, req, now, topology)
            if not in_gang:  # a refusal while a gang holds part of the capacity says nothing after it
                refused[key] = parts
                if preempting:
                    starved.append((job, req, _may_use(masks, job, req, topology)))
            return Unplaced(job.id, parts=parts)
        i, binding, score = placed
        site = snapshot.sites[i]
        model = masks.gpu.model_of_binding(i, binding) if binding else ""
        masks.took(i, job, binding)
        ledger.charge(job.queue, demand(job, model))
        return Decision(job_id=job.id, site=site.name, score=round(score, 4),
                        reasons=_why(job, req, site, locality[i], prefer[i], masks, i, eligible, binding),
                        candidates=eligible, binding=binding, gpu_model=model,
                        site_codes=_site_codes(masks, job, req, now, topology, ok))

    tried: set[str] = set()
    for job in ledger:
        if limit is not None and len(decisions) >= limit:
            rest = [j for j in (job, *ledger.remaining()) if j.id not in tried]
            unplaced.extend(Unplaced(j.id, parts=_held(masks, j, DEFERRED)) for j in rest)
            deferred = len(rest)
            break
        if not job.gang:
            got = place(job)
            (decisions if isinstance(got, Decision) else unplaced).append(got)
            continue
        if job.id in tried:
            continue  # placed or refused with the first of its gang
        parts = sorted(gangs[job.gang], key=lambda j: j.id)
        tried.update(j.id for j in parts)
        placed, refusals = _place_gang(parts, place, masks, ledger)
        decisions.extend(placed)
        unplaced.extend(refusals)
    victims: list[Preemption] = []
    room: dict[str, str] = {}
    if starved:
        starved.sort(key=lambda s: -s[0].priority)  # stable: scheduling order within a priority
        usage = snapshot.queues.usage if snapshot.queues else {}
        settings = replace(snapshot.preemption, queues_running={q: u.running for q, u in usage.items()})
        victims, room = preemptions(starved, snapshot.running, [s.name for s in snapshot.sites], masks.free_cpu,
                                    masks.free_mem, masks.gpu.copy(), ledger, at, settings)
    return ScheduleResult(decisions=tuple(decisions), unplaced=tuple(unplaced), deferred=deferred,
                          preemptions=tuple(victims), making_room=room)


def _place_gang(parts: list[PendingJob], place: Callable[..., Decision | Unplaced], masks: _Masks,
                ledger: Ledger) -> tuple[list[Decision], list[Unplaced]]:
    """All parts of a gang placed, or none: what the first parts took is given back when a later one
    cannot be placed, and every part says why."""
    size = parts[0].gang_size
    gang = parts[0].gang
    if len(parts) < size:
        why = f"gang {gang}: {len(parts)} of its {size} parts are waiting; it starts only whole"
        return [], [Unplaced(p.id, parts=_held(masks, p, GANG, why)) for p in parts]
    done: list[tuple[PendingJob, Decision]] = []
    for p in parts:
        got = place(p, in_gang=True)
        if isinstance(got, Decision):
            done.append((p, got))
            continue
        for q, d in reversed(done):
            i = masks.index[d.site]
            masks.gave_back(i, q, d.binding)
            ledger.charge(q.queue, demand(q, d.gpu_model), -1.0)
        why = f"gang {gang}: part {p.id} cannot be placed now ({got.summary}), so no part is"
        return [], [got if q is p else Unplaced(q.id, parts=_held(masks, q, GANG, why)) for q in parts]
    note = f"gang {gang}: all {size} parts placed together"
    return [replace(d, reasons=(note, *d.reasons)) for _, d in done], []


def _may_use(masks: _Masks, job: PendingJob, req: GpuRequest | None, topology: Sequence[int]) -> np.ndarray:
    """Sites every filter but capacity now allows: where stopping other work could make room."""
    ok = masks.static(job, req)[1] == OK
    if topology:
        ok = ok.copy()
        ok[list(topology)] = False
    if job.vetoed_by:
        ok = ok.copy()
        ok[[masks.index[s] for s in job.vetoed_by if s in masks.index]] = False
    return ok


def totals(snapshot: Snapshot, gpu: GpuState | None = None) -> dict[str, float]:
    """The federation's capacity by resource dimension, the denominators of dominant shares."""
    g = gpu or gpu_state(snapshot)
    per_model = g.capacity[0].sum(axis=0)
    out = {"cpus": float(sum(s.cpus for s in snapshot.sites)), "memory": float(sum(s.memory for s in snapshot.sites)),
           "gpus": float(per_model.sum())}
    out.update({f"gpu:{name}": float(per_model[m]) for name, m in g.models.items() if name})
    return out


def _parts(masks: _Masks, job: PendingJob, req: GpuRequest | None, now: np.ndarray,
           topology: list[int]) -> Callable[[], tuple[str, bytes]]:
    """(summary, reasons) of an unplaced job, computed once when first asked for. The static
    codes depend only on the snapshot, `now` is the capacity at the moment the job was refused."""
    done: list[tuple[str, bytes]] = []

    def parts() -> tuple[str, bytes]:
        if not done:
            reasons = masks.reasons(job, req, now, topology)
            done.append((summarize(reasons), reasons.tobytes()))
        return done[0]
    return parts


def _held(masks: _Masks, job: PendingJob, code: int, summary: str = "") -> Callable[[], tuple[str, bytes]]:
    """(summary, reasons) of a job not tried at the sites (DEFERRED, QUEUE_LIMIT): its static codes,
    `code` wherever nothing static excludes it."""
    def parts() -> tuple[str, bytes]:
        reasons = masks.reasons(job, gpu_request(job), np.full(masks.n, code, dtype=np.uint8))
        return summary or summarize(reasons), reasons.tobytes()
    return parts


def _site_codes(masks: _Masks, job: PendingJob, req: GpuRequest | None, now: np.ndarray, topology: list[int],
                eligible: np.ndarray) -> Callable[[], bytes]:
    """The per-site codes of a placed job, computed when asked for (explain, the store)."""
    def codes() -> bytes:
        out = masks.reasons(job, req, now, topology)
        out[eligible] = OK
        return out.tobytes()
    return codes


def _best_first(scores: np.ndarray):
    """Positions in `scores`, best first, while any is eligible (not -inf); the full order is
    computed only when the best site's exact GPU fit fails."""
    first = int(np.argmax(scores))
    yield first
    for i in np.argsort(-scores, kind="stable"):
        if scores[i] == -np.inf:
            return
        if i != first:
            yield int(i)


def _score(m: _Masks, sel: np.ndarray | slice, job: PendingJob, req: GpuRequest | None, locality: np.ndarray,
           prefer: np.ndarray) -> np.ndarray:
    """Scores of the sites `sel` picks (an index array, or slice(None) for all of them)."""
    free_frac = ((m.free_cpu[sel] - job.cpus) * m.inv[0][sel] + (m.free_mem[sel] - job.memory) * m.inv[1][sel]) \
        * m.inv_dims[sel] + m.no_dims[sel]
    running = m.running[sel]
    score = (W_LOCALITY * locality[sel] + W_PREFER * prefer[sel] + W_FREE * free_frac
             - W_LOAD * running / (running + 4.0))
    if req is not None:
        g = m.gpu
        # Across sites, spread GPU work (emptier in the models the job accepts wins): every site keeps
        # room for jobs only it may run. Inside the site, GpuState.fit packs by topology.
        if req.models:
            ms = g.model_ids(req.models)
            cap = g.capacity[0][sel][:, ms].sum(axis=1)
            free = np.divide(g.whole_free[sel][:, ms].sum(axis=1), cap, out=np.zeros(cap.shape), where=cap > 0)
        else:
            free = g.whole_total[sel] * m.gpu_inv[sel]
        score += W_FREE * free
        if req.count:
            score += W_TIGHT * g.tightness(req, sel)
        if req.count and req.nvlink == "preferred":
            score += W_NVLINK * g.fits_now(GpuRequest(count=req.count, models=req.models, nvlink="required"))[0][sel]
        elif not req.count:
            if req.share and not req.models:
                shared = g.shared_any[sel] >= req.share
            else:
                ms = g.model_ids(req.models)
                shared = (g.shared_fit[sel][:, ms] >= g.share_per_model(req, ms)).any(axis=1)
            # Else on a node already partly used, so untouched nodes stay whole.
            score += W_SHARED * shared + W_TIGHT * (~shared) * g.tightness(GpuRequest(count=1, models=req.models), sel)
    return score


def _why(job: PendingJob, req: GpuRequest | None, site: SiteView, locality: float, prefer: float, m: _Masks,
         i: int, candidates: int, binding: tuple) -> tuple[str, ...]:
    reasons = []
    if binding:
        where = "; ".join(f"{s.node} GPU {','.join(map(str, s.gpus))}" for s in binding)
        reasons.append(f"{req.shape()} on {where}")
    if job.datasets:
        if locality >= 1.0 - EPS:
            reasons.append(f"holds {', '.join(job.datasets)}")
        elif locality > 0:
            reasons.append("holds part of the job's data; the rest may be staged here")
        else:
            reasons.append("the job's data may be staged here")
        reasons.append(f"{site.jurisdiction} is allowed for the job's data")
    if prefer:
        reasons.append("in placement.prefer")
    if site.cpus:
        reasons.append(f"{max(0.0, m.free_cpu[i] - job.cpus):g} of {site.cpus:g} cpus free after")
    reasons.append(f"best score of {candidates} eligible site{'s' if candidates != 1 else ''}")
    return tuple(reasons)


_TRANSIENT = np.zeros(256, dtype=bool)
_TRANSIENT[[int(r) for r in Reason if r.transient]] = True


_SLUGS = [Reason(r).slug if r in Reason._value2member_map_ else str(r) for r in range(256)]


def summarize(reasons: np.ndarray) -> str:
    """One line for an unplaced job from its reason codes."""
    if reasons.size == 0:
        return "no sites are registered"
    counts = np.bincount(reasons, minlength=len(Reason))
    present = np.flatnonzero(counts)
    parts = ", ".join(f"{counts[r]} {_SLUGS[r]}" for r in present.tolist())
    transient = _TRANSIENT[present]
    if counts[DEFERRED]:
        return f"deferred: this cycle reached its placement limit before this job ({parts})"
    if transient.all():
        return f"waiting: no site can take it now ({parts})"
    if not transient.any():
        return f"no site may ever take it as things stand ({parts})"
    return f"no site can take it ({parts})"


def verdicts(unplaced: Unplaced, job: PendingJob, snapshot: Snapshot) -> tuple[Verdict, ...]:
    """Per-site verdicts, with their human reasons, for an unplaced job."""
    return tuple(describe(job, s, unplaced.reason_at(i), snapshot) for i, s in enumerate(snapshot.sites))
