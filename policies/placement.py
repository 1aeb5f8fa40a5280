"""Which site runs which job.

Hard filters first (job's site/region narrowing, data sovereignty, whole-site
capacity, site vetoes, site health and cordons, free capacity now), then a score
over the survivors (data locality, preference, free capacity left, load). Jobs go
in priority order, FIFO within a priority. Nothing here mutates its input.

Filters that depend only on (job constraints, site) are computed once per
distinct constraint set and cached for the call; free capacity is tracked in
NumPy arrays so one decision costs a few vector operations over all sites.
"""
from __future__ import annotations

from collections import Counter
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


def in_region(site_region: str, wanted: str) -> bool:
    """Regions nest by '-': 'eu' contains 'eu-west' and 'eu-west-1'."""
    return site_region == wanted or site_region.startswith(wanted + "-")


def _matches(site: SiteView, names: Iterable[str]) -> bool:
    return any(site.name == n or in_region(site.region, n) for n in names)


def static_verdict(job: PendingJob, site: SiteView, snapshot: Snapshot) -> tuple[Reason, str]:
    """Every filter that does not depend on what else is placed this cycle."""
    if job.sites and site.name not in job.sites:
        return Reason.NOT_IN_SITES, f"job allows only sites {', '.join(job.sites)}"
    if job.regions and not any(in_region(site.region, r) for r in job.regions):
        return Reason.NOT_IN_REGIONS, f"region {site.region} is not in {', '.join(job.regions)}"
    reason, detail = sovereignty_verdict(job.datasets, site, snapshot.catalog, snapshot.rules)
    if reason is not Reason.OK:
        return reason, detail
    if job.cpus > site.cpus + EPS or job.memory > site.memory + EPS or job.gpus > site.gpus + EPS:
        return Reason.NEVER_FITS, (f"needs {_fmt_req(job.cpus, job.memory, job.gpus)}, "
                                   f"site has {_fmt_req(site.cpus, site.memory, site.gpus)} in all")
    if site.name in job.vetoed_by:
        return Reason.VETOED, "the site refused this job earlier"
    if not site.connected:
        return Reason.OFFLINE, "site agent is not connected"
    if site.draining:
        return Reason.DRAINING, "site is draining"
    if site.cordoned:
        return Reason.CORDONED, "site is cordoned"
    return Reason.OK, ""


def _fmt_req(cpus: float, memory: float, gpus: float) -> str:
    gib = memory / 2**30
    return f"{cpus:g} cpus, {gib:.3g}Gi memory, {gpus:g} gpus"


class _Capacity:
    """Free capacity per site, updated as this cycle places jobs."""

    def __init__(self, sites: Sequence[SiteView]) -> None:
        self.cap = np.array([[s.cpus, s.memory, s.gpus] for s in sites], dtype=np.float64).reshape(-1, 3)
        used = np.array([[s.used_cpus, s.used_memory, s.used_gpus] for s in sites], dtype=np.float64).reshape(-1, 3)
        self.free = self.cap - used
        self.running = np.array([s.running for s in sites], dtype=np.float64)
        # Dimensions a site lacks count as fully free so they neither help nor hurt.
        self.inv_cap = np.divide(1.0, self.cap, out=np.zeros_like(self.cap), where=self.cap > 0)

    def fits(self, need: np.ndarray) -> np.ndarray:
        return np.all(self.free >= need - EPS, axis=1)

    def take(self, i: int, need: np.ndarray) -> None:
        self.free[i] -= need
        self.running[i] += 1


class _Constraints:
    """Static verdicts, locality and preference per distinct job constraint set."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.sites = snapshot.sites
        self._static: dict[tuple, tuple[np.ndarray, list[tuple[Reason, str]], np.ndarray]] = {}
        self._prefer: dict[tuple, np.ndarray] = {}

    def static(self, job: PendingJob) -> tuple[np.ndarray, list[tuple[Reason, str]], np.ndarray]:
        key = (job.datasets, job.regions, job.sites, job.vetoed_by,
               job.cpus, job.memory, job.gpus)
        hit = self._static.get(key)
        if hit is None:
            verdicts = [static_verdict(job, s, self.snapshot) for s in self.sites]
            ok = np.array([v[0] is Reason.OK for v in verdicts], dtype=bool)
            locality = np.array([self._locality(job, s) for s in self.sites], dtype=np.float64)
            hit = self._static[key] = (ok, verdicts, locality)
        return hit

    def _locality(self, job: PendingJob, site: SiteView) -> float:
        if not job.datasets:
            return 0.0
        catalog = self.snapshot.catalog
        held = sum(1 for d in job.datasets if d in catalog and site.name in catalog[d].sites)
        return held / len(job.datasets)

    def prefer(self, job: PendingJob) -> np.ndarray:
        hit = self._prefer.get(job.prefer)
        if hit is None:
            hit = self._prefer[job.prefer] = np.array(
                [1.0 if job.prefer and _matches(s, job.prefer) else 0.0 for s in self.sites])
        return hit


def order(pending: Iterable[PendingJob]) -> list[PendingJob]:
    """Scheduling order: higher priority first, then earlier submission, then id."""
    return sorted(pending, key=lambda j: (-j.priority, j.submitted_at, j.id))


def schedule(snapshot: Snapshot, pending: Sequence[PendingJob], now: float) -> ScheduleResult:
    """Place as many pending jobs as fit; explain every one that does not."""
    del now  # decisions depend only on the snapshot for now; ages feed fair share later
    sites = snapshot.sites
    capacity = _Capacity(sites)
    constraints = _Constraints(snapshot)
    decisions: list[Decision] = []
    unplaced: list[Unplaced] = []

    for job in order(pending):
        need = np.array([job.cpus, job.memory, job.gpus], dtype=np.float64)
        ok, verdicts, locality = constraints.static(job)
        candidates = np.flatnonzero(ok & capacity.fits(need))
        if candidates.size == 0:
            unplaced.append(_explain_unplaced(job, sites, verdicts, capacity, need))
            continue
        prefer = constraints.prefer(job)
        scores = _score(capacity, candidates, need, locality, prefer)
        best = int(np.argmax(scores))
        site_index = int(candidates[best])
        decisions.append(Decision(
            job_id=job.id,
            site=sites[site_index].name,
            score=round(float(scores[best]), 4),
            reasons=_why(job, sites[site_index], locality[site_index], prefer[site_index], candidates.size),
            candidates=int(candidates.size),
        ))
        capacity.take(site_index, need)

    return ScheduleResult(decisions=tuple(decisions), unplaced=tuple(unplaced))


def _score(capacity: _Capacity, idx: np.ndarray, need: np.ndarray, locality: np.ndarray,
           prefer: np.ndarray) -> np.ndarray:
    free_after = (capacity.free[idx] - need) * capacity.inv_cap[idx]
    has = capacity.inv_cap[idx] > 0
    free_frac = np.where(has, free_after, 1.0).mean(axis=1)
    running = capacity.running[idx]
    return (W_LOCALITY * locality[idx] + W_PREFER * prefer[idx] + W_FREE * free_frac
            - W_LOAD * running / (running + 4.0))


def _why(job: PendingJob, site: SiteView, locality: float, prefer: float, candidates: int) -> tuple[str, ...]:
    reasons = []
    if job.datasets:
        if locality >= 1.0:
            reasons.append(f"holds {', '.join(job.datasets)}")
        elif locality > 0:
            reasons.append("holds part of the job's data; the rest may be staged here")
        else:
            reasons.append("data may be staged here under the policy")
        reasons.append(f"{site.jurisdiction} is allowed for the job's data")
    if prefer:
        reasons.append("in placement.prefer")
    reasons.append(f"best score of {candidates} eligible site{'s' if candidates != 1 else ''}")
    return tuple(reasons)


def _explain_unplaced(job: PendingJob, sites: Sequence[SiteView], verdicts: list[tuple[Reason, str]],
                      capacity: _Capacity, need: np.ndarray) -> Unplaced:
    out = []
    for i, site in enumerate(sites):
        reason, detail = verdicts[i]
        if reason is Reason.OK:
            free = capacity.free[i]
            reason = Reason.NO_FREE_CAPACITY
            detail = (f"needs {_fmt_req(*need)}, free now {_fmt_req(*np.maximum(free, 0))}")
        out.append(Verdict(site=site.name, reason=reason, detail=detail))
    return Unplaced(job_id=job.id, summary=summarize(out), verdicts=tuple(out))


def summarize(verdicts: Sequence[Verdict]) -> str:
    if not verdicts:
        return "no sites are registered"
    counts = Counter(v.reason for v in verdicts)
    parts = ", ".join(f"{n} {r.slug}" for r, n in sorted(counts.items()))
    if all(v.reason.transient for v in verdicts):
        return f"waiting: no site can take it now ({parts})"
    if not any(v.reason.transient for v in verdicts):
        return f"no site may ever take it as things stand ({parts})"
    return f"no site can take it ({parts})"
