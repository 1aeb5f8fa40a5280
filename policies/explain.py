"""Explanations: why a job went where it did, and why every other site could not take it.

The cycle keeps reason codes per site (`Reason`); the per-site arrays and the one-line
summary of an unplaced job are built here, lazily, from what the cycle already holds, and
`describe` / `verdicts` turn codes into the human reasons `fedctl explain` shows.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from policies.feasible import EPS, OK, Masks, fmt_resources, gpu_request, gpu_state, static_verdict
from policies.gpus import Binding, GpuRequest
from policies.model import PendingJob, Reason, SiteView, Unplaced, Verdict
from policies.pricing import PREFER, NodeType, fits_node, node_price
from policies.snapshot import Snapshot

DEFERRED = int(Reason.DEFERRED)
# (summary, reasons) of an unplaced job, computed when first asked for.
Parts = Callable[[], tuple[str, bytes]]


def describe(job: PendingJob, site: SiteView, reason: Reason, snapshot: Snapshot) -> Verdict:
    """The human reason behind a code `schedule` returned."""
    if reason is Reason.NO_FREE_CAPACITY and site.elastic is not None:
        return Verdict(site.name, reason, f"needs {fmt_resources(job.cpus, job.memory, job.gpus)}; not free now, "
                                          "and no node the site may still add holds it")
    if reason in (Reason.NO_FREE_CAPACITY, Reason.FRAGMENTED):
        req = gpu_request(job)
        if reason is Reason.FRAGMENTED and req is not None:
            _, miss = gpu_state(snapshot).fit(snapshot.sites.index(site), req)
            detail = miss.detail if miss is not None else "the shape was taken by a job placed earlier this cycle"
            return Verdict(site.name, reason, f"needs {req.shape()}: {detail}")
        free = fmt_resources(max(0.0, site.cpus - site.used_cpus), max(0.0, site.memory - site.used_memory),
                             max(0.0, site.gpus - site.used_gpus))
        return Verdict(site.name, reason, f"needs {fmt_resources(job.cpus, job.memory, job.gpus)}; "
                                          f"not free now (free at the start of the cycle: {free})")
    if reason is Reason.RESERVED:
        return Verdict(site.name, reason, "it would fit, but would still run when a job ahead of it, which reserved "
                                          "this site, is due to start (backfill: a time_limit that ends before it, "
                                          "or a smaller ask, lets it start now)")
    if reason is Reason.GANG:
        return Verdict(site.name, reason, "another part of the job's gang cannot be placed now; see the summary")
    if reason is Reason.QUEUE_LIMIT:
        return Verdict(site.name, reason, "the job's queue (or a parent) is at its limit here; see the summary")
    if reason is Reason.DEFERRED:
        return Verdict(site.name, reason, "not considered this cycle: its placement limit went to jobs ahead "
                                          "of this one; the next cycle starts at once")
    return Verdict(site.name, reason, static_verdict(job, site, snapshot)[1])


def unplaced_parts(masks: Masks, job: PendingJob, req: GpuRequest | None, now: np.ndarray,
                   topology: list[int]) -> Parts:
    """(summary, reasons) of an unplaced job, computed once when first asked for. The static
    codes depend only on the snapshot, `now` is the capacity at the moment the job was refused."""
    done: list[tuple[str, bytes]] = []

    def parts() -> tuple[str, bytes]:
        if not done:
            reasons = masks.reasons(job, req, now, topology)
            done.append((summarize(reasons), reasons.tobytes()))
        return done[0]
    return parts


def noting(parts: Parts, note: str) -> Parts:
    """`parts` with `note` after its summary."""
    def noted() -> tuple[str, bytes]:
        summary, reasons = parts()
        return f"{summary}; {note}", reasons
    return noted


def held_parts(masks: Masks, job: PendingJob, code: int, summary: str = "") -> Parts:
    """(summary, reasons) of a job not tried at the sites (DEFERRED, QUEUE_LIMIT): its static codes,
    `code` wherever nothing static excludes it."""
    def parts() -> tuple[str, bytes]:
        reasons = masks.reasons(job, gpu_request(job), np.full(masks.n, code, dtype=np.uint8))
        return summary or summarize(reasons), reasons.tobytes()
    return parts


def site_codes(masks: Masks, job: PendingJob, req: GpuRequest | None, now: np.ndarray, topology: list[int],
               eligible: np.ndarray) -> Callable[[], bytes]:
    """The per-site codes of a placed job, computed when asked for (explain, the store)."""
    def codes() -> bytes:
        out = masks.reasons(job, req, now, topology)
        out[eligible] = OK
        return out.tobytes()
    return codes


def why(job: PendingJob, req: GpuRequest | None, site: SiteView, locality: float, prefer: float, m: Masks,
        i: int, candidates: int, binding: Binding, node: str = "", delay: float = 0.0, price: float = 0.0
        ) -> tuple[str, ...]:
    reasons = []
    if node:
        reasons.append(f"starts on a new {node} node the site adds (about {delay:.0f} s)")
    stage_cost, stage_s = m.staging(job.datasets)
    if stage_s[i]:
        currency = site.pricing.currency if site.pricing else ""
        cost = f", {stage_cost[i]:.4g} {currency} of egress" if stage_cost[i] else ""
        reasons.append(f"its data is copied here first (about {stage_s[i]:.0f} s{cost})")
    if site.pricing is not None:
        kind = "spot " if node and _spot(site, node) else ""
        goal = "; optimized for cost" if job.optimize_cost else ""
        reasons.append(f"{price:.4g} {site.pricing.currency}/h at the site's {kind}prices{goal}")
    if binding and req is not None:
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


def quote(job: PendingJob, site: SiteView) -> str:
    """What the job would cost an hour at a site and when it would start, from the snapshot alone
    (for sites it was eligible at but not sent to); "" for a site without prices or growth."""
    if site.pricing is None and site.elastic is None:
        return ""
    req = gpu_request(job)
    free = site.cpus - site.used_cpus >= job.cpus - EPS and site.memory - site.used_memory >= job.memory - EPS \
        and (req is None or site.gpus - site.used_gpus >= req.whole - EPS)
    p = site.pricing
    rates, start = (p.on_demand if p else None), "starts now"
    if not free and site.elastic is not None:
        fitting = [t for t in site.elastic.node_types if site.elastic.addable(t) and (job.spot or not t.spot)
                   and fits_node(t, job.cpus, job.memory, req)]
        if fitting:
            def rank(t: NodeType) -> tuple[bool, float, float]:   # as `scoring.offers` chooses
                soon, cheap = t.start_s, node_price(t, p)
                return not (t.spot and job.spot == PREFER), *((cheap, soon) if job.optimize_cost else (soon, cheap))
            t = min(fitting, key=rank)
            rates = (p.spot if t.spot else p.on_demand) if p else None
            start = f"starts on a new {t.name} node in about {t.start_s:.0f} s"
    if rates is None:
        return start
    gpus = req.whole if req is not None else 0.0
    gpu = min((v for m, v in rates.gpu_hour.items() if req is None or not req.models or m in req.models),
              default=0.0)
    price = rates.hourly(job.cpus, job.memory, 0.0) + gpu * gpus
    return f"{price:.4g} {p.currency if p else ''}/h, {start}"


def _spot(site: SiteView, node: str) -> bool:
    return site.elastic is not None and any(t.spot for t in site.elastic.node_types if t.name == node)


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


def verdicts(unplaced: Unplaced, job: PendingJob, snapshot: Snapshot, limit: int | None = None) -> tuple[Verdict, ...]:
    """Per-site verdicts, with their human reasons, for an unplaced job (of its first `limit` sites)."""
    return tuple(describe(job, s, unplaced.reason_at(i), snapshot) for i, s in enumerate(snapshot.sites[:limit]))
