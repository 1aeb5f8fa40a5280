"""Which site runs which job.

Hard filters first (the job's site and region narrowing, data sovereignty, whole-site
capacity, site vetoes, site health and cordons, free capacity now), then a score over
the survivors (data locality, preference, capacity left, load). Jobs go in priority
order, FIFO within a priority. Nothing here mutates its input.

`static_verdict` states each filter for one job and one site; `schedule` computes the
same filters as NumPy masks over all sites, cached per dataset and per constraint set,
so one decision costs a few vector operations (tests hold the two to agreement).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

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
from policies.sovereignty import sovereignty_verdict

W_LOCALITY = 4.0   # all of the job's data already at the site
W_PREFER = 2.0     # the site or its region is in placement.prefer
W_FREE = 1.0       # mean fraction of capacity still free after placing
W_LOAD = 0.5       # attempts already running there, saturating
EPS = 1e-9
OK = int(Reason.OK)


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
    if job.cpus > site.cpus + EPS or job.memory > site.memory + EPS or job.gpus > site.gpus + EPS:
        return Reason.NEVER_FITS, (f"needs {_fmt(job.cpus, job.memory, job.gpus)}, "
                                   f"site has {_fmt(site.cpus, site.memory, site.gpus)} in all")
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
    if reason is Reason.NO_FREE_CAPACITY:
        free = _fmt(max(0.0, site.cpus - site.used_cpus), max(0.0, site.memory - site.used_memory),
                    max(0.0, site.gpus - site.used_gpus))
        return Verdict(site.name, reason, f"needs {_fmt(job.cpus, job.memory, job.gpus)}; "
                                          f"not free now (free at the start of the cycle: {free})")
    return Verdict(site.name, reason, static_verdict(job, site, snapshot)[1])


def _fmt(cpus: float, memory: float, gpus: float) -> str:
    return f"{cpus:g} cpus, {memory / 2**30:.3g}Gi memory, {gpus:g} gpus"


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
        self.cap_gpu = np.array([s.gpus for s in sites], dtype=f)
        self.free_cpu = self.cap_cpu - np.array([s.used_cpus for s in sites], dtype=f)
        self.free_mem = self.cap_mem - np.array([s.used_memory for s in sites], dtype=f)
        self.free_gpu = self.cap_gpu - np.array([s.used_gpus for s in sites], dtype=f)
        self.running = np.array([s.running for s in sites], dtype=f)
        self.inv = [np.divide(1.0, c, out=np.zeros_like(c), where=c > 0)
                    for c in (self.cap_cpu, self.cap_mem, self.cap_gpu)]
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

    def static(self, job: PendingJob) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(code per site before capacity and health, its OK mask with health applied, locality)."""
        key = (job.sites, job.regions, job.datasets)
        hit = self._static.get(key)
        if hit is None:
            codes = np.full(self.n, OK, dtype=np.uint8)
            for name in job.datasets:
                codes = np.where(codes == OK, self.dataset(name), codes)
            if job.regions:
                codes = np.where(self.in_regions(job.regions), codes, Reason.NOT_IN_REGIONS).astype(np.uint8)
            if job.sites:
                allowed = np.zeros(self.n, dtype=bool)
                allowed[[self.index[s] for s in job.sites if s in self.index]] = True
                codes = np.where(allowed, codes, Reason.NOT_IN_SITES).astype(np.uint8)
            locality = np.zeros(self.n)
            for name in job.datasets:
                info = self.snapshot.catalog.get(name)
                if info is not None:
                    locality[[self.index[s] for s in info.sites if s in self.index]] += 1.0 / len(job.datasets)
            hit = self._static[key] = (codes, (codes == OK) & (self.health == OK), locality)
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

    def reasons(self, job: PendingJob, codes: np.ndarray) -> np.ndarray:
        """The first failing filter per site, in static_verdict's order, then capacity now."""
        never = (self.cap_cpu < job.cpus - EPS) | (self.cap_mem < job.memory - EPS) | (self.cap_gpu < job.gpus - EPS)
        out = np.where(self.health != OK, self.health, Reason.NO_FREE_CAPACITY).astype(np.uint8)
        if job.vetoed_by:
            vetoed = np.zeros(self.n, dtype=bool)
            vetoed[[self.index[s] for s in job.vetoed_by if s in self.index]] = True
            out = np.where(vetoed, Reason.VETOED, out)
        out = np.where(never, Reason.NEVER_FITS, out)
        return np.where(codes != OK, codes, out).astype(np.uint8)


def schedule(snapshot: Snapshot, pending: Sequence[PendingJob], now: float) -> ScheduleResult:
    """Place as many pending jobs as fit; give every other one a reason at every site."""
    del now  # decisions depend only on the snapshot for now; ages feed fair share later
    masks = _Masks(snapshot)
    decisions: list[Decision] = []
    unplaced: list[Unplaced] = []
    for job in order(pending):
        codes, ok, locality = masks.static(job)
        ok = ok & (masks.free_cpu >= job.cpus - EPS) & (masks.free_mem >= job.memory - EPS) \
            & (masks.free_gpu >= job.gpus - EPS)
        if job.vetoed_by:
            ok[[masks.index[s] for s in job.vetoed_by if s in masks.index]] = False
        candidates = np.flatnonzero(ok)
        if candidates.size == 0:
            reasons = masks.reasons(job, codes)
            unplaced.append(Unplaced(job.id, summarize(reasons), reasons.tobytes()))
            continue
        prefer = masks.prefer(job)
        scores = _score(masks, candidates, job, locality, prefer)
        best = int(np.argmax(scores))
        i = int(candidates[best])
        site = snapshot.sites[i]
        decisions.append(Decision(job_id=job.id, site=site.name, score=round(float(scores[best]), 4),
                                  reasons=_why(job, site, locality[i], prefer[i], masks, i, candidates.size),
                                  candidates=int(candidates.size)))
        masks.free_cpu[i] -= job.cpus
        masks.free_mem[i] -= job.memory
        masks.free_gpu[i] -= job.gpus
        masks.running[i] += 1
    return ScheduleResult(decisions=tuple(decisions), unplaced=tuple(unplaced))


def _score(m: _Masks, idx: np.ndarray, job: PendingJob, locality: np.ndarray, prefer: np.ndarray) -> np.ndarray:
    free = ((m.free_cpu[idx] - job.cpus) * m.inv[0][idx] + (m.free_mem[idx] - job.memory) * m.inv[1][idx]
            + (m.free_gpu[idx] - job.gpus) * m.inv[2][idx])
    dims = (m.inv[0][idx] > 0).astype(float) + (m.inv[1][idx] > 0) + (m.inv[2][idx] > 0)
    free_frac = np.divide(free, dims, out=np.ones_like(free), where=dims > 0)
    running = m.running[idx]
    return W_LOCALITY * locality[idx] + W_PREFER * prefer[idx] + W_FREE * free_frac - W_LOAD * running / (running + 4.0)


def _why(job: PendingJob, site: SiteView, locality: float, prefer: float, m: _Masks, i: int,
         candidates: int) -> tuple[str, ...]:
    reasons = []
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


def summarize(reasons: np.ndarray) -> str:
    """One line for an unplaced job from its reason codes."""
    if reasons.size == 0:
        return "no sites are registered"
    counts = np.bincount(reasons, minlength=len(Reason))
    parts = ", ".join(f"{n} {Reason(r).slug}" for r, n in enumerate(counts) if n)
    transient = _TRANSIENT[reasons]
    if transient.all():
        return f"waiting: no site can take it now ({parts})"
    if not transient.any():
        return f"no site may ever take it as things stand ({parts})"
    return f"no site can take it ({parts})"


def verdicts(unplaced: Unplaced, job: PendingJob, snapshot: Snapshot) -> tuple[Verdict, ...]:
    """Per-site verdicts, with their human reasons, for an unplaced job."""
    return tuple(describe(job, s, unplaced.reason_at(i), snapshot) for i, s in enumerate(snapshot.sites))
