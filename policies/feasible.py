"""Feasibility: which sites may take a job, and if not, the first filter that says no.

The hard filters in order: the job's site and region narrowing, data sovereignty, whole-site
capacity, GPU type and topology shape, site vetoes, site health and cordons, free capacity
now, free GPUs in the wanted shape now. `static_verdict` states each filter for one job and
one site; `Masks` computes the same filters as NumPy arrays over all sites, cached per
dataset and per constraint set, and holds what one cycle has left free (tests hold the two
to agreement).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from policies.gpu_state import GpuState
from policies.gpus import MILLI, Binding, GpuRequest, Slot, refusing_spot, synthesized
from policies.model import PendingJob, Reason, SiteView
from policies.pricing import (
    NEVER,
    STAGING_BYTES_S,
    Costs,
    Pricing,
    fits_node,
    gpu_price,
    gpu_units,
    has_spot_nodes,
    largest_node,
)
from policies.snapshot import Snapshot
from policies.sovereignty import sovereignty_verdict

EPS = 1e-9
OK = int(Reason.OK)
VETOED, FRAGMENTED, NO_FREE = int(Reason.VETOED), int(Reason.FRAGMENTED), int(Reason.NO_FREE_CAPACITY)
PRICE = int(Reason.PRICE)


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
    node_cpus, node_mem = largest_node(site)
    if job.cpus > max(site.cpus, node_cpus) + EPS or job.memory > max(site.memory, node_mem) + EPS:
        return Reason.NEVER_FITS, (f"needs {fmt_resources(job.cpus, job.memory, job.gpus)}, "
                                   f"site has {fmt_resources(site.cpus, site.memory, site.gpus)} in all")
    req = gpu_request(job)
    grows = site.elastic is not None and any(fits_node(t, job.cpus, job.memory, req) for t in site.elastic.node_types)
    if req is not None and not grows:
        state = gpu_state(snapshot)
        i = snapshot.sites.index(site)
        _, miss = state.fit(i, req, capacity=True)
        if miss is not None:
            if miss.kind == "capacity" or state.total(i) == 0:
                return Reason.NEVER_FITS, f"needs {req.shape()}; {miss.detail or 'site has no GPUs'}"
            return (Reason.GPU_TYPE if miss.kind == "gpu-type" else Reason.TOPOLOGY), miss.detail
    if job.max_price:
        price = cheapest(job, req, site, snapshot)
        if price > job.max_price + EPS:
            return Reason.PRICE, f"costs {price:.4g} an hour for this job, above its max_price {job.max_price:g}"
    if site.name in job.vetoed_by:
        return Reason.VETOED, "the site refused this job earlier"
    if not site.connected:
        return Reason.OFFLINE, "site agent is not connected"
    if site.draining:
        return Reason.DRAINING, "site is draining"
    if site.cordoned:
        return Reason.CORDONED, "site is cordoned"
    return Reason.OK, ""


def cheapest(job: PendingJob, req: GpuRequest | None, site: SiteView, snapshot: Snapshot) -> float:
    """The lowest price per hour the job can run at at the site (spot too if it accepts spot)."""
    models = gpu_state(snapshot).models_at(snapshot.sites.index(site)) if req is not None else frozenset()
    if site.elastic is not None:
        models |= {t.gpu_model for t in site.elastic.node_types if t.gpu_model}
    return cheapest_of(job, req, site.pricing, has_spot_nodes(site), models)


def cheapest_of(job: PendingJob, req: GpuRequest | None, p: Pricing | None, spot_nodes: bool,
                present: frozenset[str]) -> float:
    """The lowest price an hour the job can run at at a site priced `p` with GPU models `present`."""
    if p is None:
        return 0.0
    rates = [p.on_demand] + ([p.spot] if p.spot is not None and job.spot != NEVER and spot_nodes else [])
    out = float("inf")
    for r in rates:
        gpu = gpu_price(r, req.models, present) * gpu_units(req) if req is not None else 0.0
        out = min(out, r.hourly(job.cpus, job.memory, 0.0) + gpu)
    return out


def fmt_resources(cpus: float, memory: float, gpus: float) -> str:
    return f"{cpus:g} cpus, {memory / 2**30:.3g}Gi memory, {gpus:g} gpus"


def gpu_request(job: PendingJob) -> GpuRequest | None:
    """The job's GPU shape; legacy `gpus` alone means that many whole GPUs of any type. A job that
    refuses spot is never given GPUs of a spot node."""
    if job.gpu is not None and job.gpu.wanted:
        req = job.gpu
    elif job.gpus <= EPS:
        return None
    elif job.gpus < 1:
        req = GpuRequest(share=max(1, round(job.gpus * MILLI)))
    else:
        req = GpuRequest(count=round(job.gpus))
    return refusing_spot(req) if job.spot == NEVER and req.spot else req


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


class Masks:
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
        self.gpu = gpu_state(snapshot).copy()
        priced = any(s.pricing is not None for s in sites)
        self.costs = Costs(sites, [self.gpu.models_at(i) for i in range(self.n)] if priced else ())
        self.priced = bool(self.costs.priced.any()) or self.costs.elastic
        if self.costs.elastic:  # whole-site capacity: what it has, or its largest node type may hold
            largest = np.array([largest_node(s) for s in sites], dtype=f)
            self.max_cpu = np.maximum(self.cap_cpu, largest[:, 0])
            self.max_mem = np.maximum(self.cap_mem, largest[:, 1])
        else:
            self.max_cpu, self.max_mem = self.cap_cpu, self.cap_mem
        self.running = np.array([s.running for s in sites], dtype=f)
        dims = (self.cap_cpu > 0).astype(f) + (self.cap_mem > 0)
        inv_dims = np.divide(1.0, dims, out=np.zeros_like(dims), where=dims > 0)
        # The mean fraction of CPUs and memory free is `free_frac - cpus * per_cpu - memory * per_byte`
        # for a job; `free_frac` and `load` are kept up to date row by row as jobs are placed.
        self.per_cpu, self.per_byte = (np.divide(1.0, c, out=np.zeros_like(c), where=c > 0) * inv_dims
                                       for c in (self.cap_cpu, self.cap_mem))
        self.no_dims = (dims == 0).astype(f)   # a site with neither counts as all free
        self.free_frac, self.load = np.empty(self.n), np.empty(self.n)
        self._rescore(slice(None))
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
        self._static: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self._prefer: dict[tuple, np.ndarray] = {}
        self._regions: dict[tuple, np.ndarray] = {}
        self._gpu_static: dict[GpuRequest, np.ndarray] = {}
        self._by_data: dict[tuple, np.ndarray] = {}
        self._locality: dict[tuple, np.ndarray] = {}
        self._by_shape: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self._free: dict[tuple, tuple[np.ndarray, np.ndarray, bool]] = {}
        self.no_free = np.full(self.n, NO_FREE, dtype=np.uint8)   # capacity codes where nothing is free
        self.no_free.flags.writeable = False
        self._later: dict[tuple, tuple[np.ndarray, np.ndarray, bool]] = {}
        self._data_ok: dict[tuple, np.ndarray] = {}
        self._shape_ok: dict[tuple, np.ndarray] = {}
        self._staging: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self.scoring: dict[tuple, np.ndarray] = {}   # the scorer's arrays by what jobs share (`scoring`)

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
        key = (job.sites, job.regions, job.datasets, req, job.cpus, job.memory, job.max_price, job.spot)
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
        key = (job.sites, job.regions, req, job.cpus, job.memory, job.max_price, job.spot)
        hit = self._by_shape.get(key)
        if hit is None:
            narrow = np.full(self.n, OK, dtype=np.uint8)
            if job.regions:
                narrow[~self.in_regions(job.regions)] = Reason.NOT_IN_REGIONS
            if job.sites:
                allowed = np.zeros(self.n, dtype=bool)
                allowed[[self.index[s] for s in job.sites if s in self.index]] = True
                narrow[~allowed] = Reason.NOT_IN_SITES
            gpu = self.gpu_static(req)
            if self.costs.elastic and req is not None:  # a node it may add holds the job: its GPUs too
                gpu = np.where(self.costs.node_fits(job.cpus, job.memory, req, static=True).any(axis=0), OK, gpu)
            capacity = np.where((self.max_cpu < job.cpus - EPS) | (self.max_mem < job.memory - EPS),
                                Reason.NEVER_FITS, gpu).astype(np.uint8)
            if job.max_price and self.priced:
                capacity = np.where((capacity == OK) & (self.cheapest(job, req) > job.max_price + EPS),
                                    PRICE, capacity).astype(np.uint8)
            hit = self._by_shape[key] = (narrow, capacity)
        return hit

    def staging(self, datasets: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Per site, what copying the job's data there would cost (the cheapest holder's egress) and
        take (at STAGING_BYTES_S): zero where it is held, or its size is not said."""
        hit = self._staging.get(datasets)
        if hit is None:
            cost, seconds = np.zeros(self.n), np.zeros(self.n)
            for name in datasets:
                info = self.snapshot.catalog.get(name)
                if info is None or not info.size:
                    continue
                held = [self.index[s] for s in info.sites if s in self.index]
                egress = min((p.egress_gb if (p := self.snapshot.sites[i].pricing) else 0.0 for i in held),
                             default=0.0)
                away = np.ones(self.n, dtype=bool)
                away[held] = False
                cost += away * egress * info.size / 1e9
                seconds += away * info.size / STAGING_BYTES_S
            hit = self._staging[datasets] = (cost, seconds)
        return hit

    def cheapest(self, job: PendingJob, req: GpuRequest | None) -> np.ndarray:
        """Per site, the lowest price per hour the job can run at (spot too if it accepts spot)."""
        price = self.costs.hourly(job.cpus, job.memory, req)
        return price[0] if job.spot == NEVER else price.min(axis=0)

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

    def allowed(self, job: PendingJob, req: GpuRequest | None) -> np.ndarray:
        """Sites every filter but capacity now allows: data, narrowing, whole-site shape, health (a new array)."""
        data_ok = self._data_ok.get(job.datasets)
        if data_ok is None:
            data_ok = self._data_ok[job.datasets] = self._data(job.datasets) == OK
        key = (job.sites, job.regions, req, job.cpus, job.memory, job.max_price, job.spot)
        shape_ok = self._shape_ok.get(key)
        if shape_ok is None:
            narrow, capacity = self._placement(job, req)
            shape_ok = self._shape_ok[key] = (narrow == OK) & (capacity == OK) & (self.health == OK)
        return data_ok & shape_ok

    def free_now(self, job: PendingJob, req: GpuRequest | None) -> tuple[np.ndarray, np.ndarray, bool]:
        """(fits now, capacity code where it does not: FRAGMENTED when enough GPUs are free but not in
        the shape, else NO_FREE_CAPACITY) per site, and whether any site fits; read-only, cached until
        the next placement changes what is free."""
        key = (req, job.cpus, job.memory, job.max_price)
        hit = self._free.get(key)
        if hit is None:
            fits = (self.free_cpu >= job.cpus - EPS) & (self.free_mem >= job.memory - EPS)
            now = self.no_free
            if req is not None:
                shaped, enough = self.gpu.fits_now(req)
                now = np.where(fits & enough & ~shaped, FRAGMENTED, NO_FREE).astype(np.uint8)
                now.flags.writeable = False
                fits &= shaped
            if job.max_price and self.priced:   # on what the site has, at its on-demand price
                fits &= self.costs.hourly(job.cpus, job.memory, req)[0] <= job.max_price + EPS
            fits.flags.writeable = False
            hit = self._free[key] = (fits, now, bool(np.count_nonzero(fits)))
        return hit

    def free_later(self, job: PendingJob, req: GpuRequest | None) -> tuple[np.ndarray, np.ndarray, bool]:
        """(fits now or on a node the site may add, (2, n): fits on a new on-demand / spot node, whether
        any site fits) per site; asked only when no site the job may use has room now."""
        key = (req, job.cpus, job.memory, job.max_price, job.spot)
        hit = self._later.get(key)
        if hit is None:
            fits = self.free_now(job, req)[0]
            grow = self.costs.growth(job.cpus, job.memory, req, self.free_cpu, self.free_mem)
            if job.spot == NEVER:
                grow[1] = False
            if job.max_price and self.priced:   # each way to start it, at its own price
                grow &= self.costs.hourly(job.cpus, job.memory, req) <= job.max_price + EPS
            either = fits | grow[0] | grow[1]
            grow.flags.writeable = either.flags.writeable = False
            hit = self._later[key] = (either, grow, bool(np.count_nonzero(either)))
        return hit

    def took(self, i: int, job: PendingJob, binding: Binding, sign: int = -1, kind: int = 0) -> None:
        """A placement at site i (sign -1), or one undone (+1): what is free changed. `kind`: the job
        starts on a new node the site is to add (pricing.ON_DEMAND or SPOT), partly on what is free."""
        cpus, memory = job.cpus, job.memory
        if sign < 0 and kind:
            cpus, memory = self.costs.took(job.id, i, kind, cpus, memory, self.free_cpu[i], self.free_mem[i],
                                           gpu_request(job))
        elif sign > 0:
            grown = self.costs.gave_back(job.id)
            cpus, memory = cpus - grown[0], memory - grown[1]
        self.free_cpu[i] += sign * cpus
        self.free_mem[i] += sign * memory
        if binding:
            self.gpu.reserve(i, binding, sign)
        self.running[i] -= sign
        self._rescore(i)
        self._free.clear()
        self._later.clear()

    def _rescore(self, rows: int | slice) -> None:
        self.free_frac[rows] = self.free_cpu[rows] * self.per_cpu[rows] + self.free_mem[rows] * self.per_byte[rows] \
            + self.no_dims[rows]
        self.load[rows] = self.running[rows] / (self.running[rows] + 4.0)

    def gave_back(self, i: int, job: PendingJob, binding: Binding) -> None:
        self.took(i, job, binding, +1)

    def may_use(self, job: PendingJob, req: GpuRequest | None, topology: Sequence[int]) -> np.ndarray:
        """Sites every filter but capacity now allows: where stopping other work could make room."""
        ok = self.allowed(job, req)
        if topology:
            ok[list(topology)] = False
        if job.vetoed_by:
            ok[[self.index[s] for s in job.vetoed_by if s in self.index]] = False
        return ok
