"""Ranking: a score for each site that may take a job; the best one is tried first.

Data locality, preference, CPU and memory left, load, and for GPU jobs: spread across
sites (emptier in the models the job accepts wins; elastic sites pack, so idle nodes go),
pack inside them (the tightest NVLink group or node that holds the job), shared GPUs before
whole ones for fractional jobs. With prices: `offers` and `economics` (start delay, price).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from policies.feasible import Masks
from policies.gpus import GpuRequest
from policies.model import PendingJob
from policies.pricing import NEVER, NOW, ON_DEMAND, PREFER, SPOT

W_LOCALITY = 4.0   # all of the job's data already at the site
W_PREFER = 2.0     # the site or its region is in placement.prefer
W_FREE = 1.0       # mean fraction of capacity still free after placing
W_LOAD = 0.5       # attempts already running there, saturating
W_SHARED = 2.0     # a shared-GPU job fits on a GPU that is already shared
W_NVLINK = 1.0     # a job that prefers one NVLink domain can have it here
W_TIGHT = 2.0      # the site's tightest NVLink group / node holding the job leaves least free
W_DELAY = 10.0     # a site that must add a node first ranks below every one that starts it now
W_COST = 8.0       # optimize cost: the cheapest node to add wins over locality and load
W_PRICE = 4.0      # the cheaper site, above spreading and load
W_PAID = 3.0       # capacity an elastic site has is paid by the hour, and work there keeps its nodes up
W_WAIT = 1.0       # optimize cost: the sooner of equally priced ones
DELAY_SCALE = 60.0  # seconds at which a start delay counts half


def best_first(scores: np.ndarray) -> Iterator[int]:
    """Positions in `scores`, best first, while any is eligible (not -inf); the full order is
    computed only when the best site's exact GPU fit fails."""
    first = int(np.argmax(scores))
    yield first
    for i in np.argsort(-scores, kind="stable"):
        if scores[i] == -np.inf:
            return
        if i != first:
            yield int(i)


def score(m: Masks, sel: np.ndarray | slice, job: PendingJob, req: GpuRequest | None, locality: np.ndarray,
          prefer: np.ndarray) -> np.ndarray:
    """Scores of the sites `sel` picks (an index array, or slice(None) for all of them)."""
    # The mean fraction of CPUs and memory left free after placing, and the data and preference terms.
    spread = m.free_frac[sel] - _kept(m, ("taking", job.cpus, job.memory),
                                      lambda: job.cpus * m.per_cpu + job.memory * m.per_byte)[sel]
    total = _kept(m, ("affinity", job.datasets, job.prefer),
                  lambda: W_LOCALITY * locality + W_PREFER * prefer)[sel] - W_LOAD * m.load[sel]
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
        spread = spread + free
        if req.count:
            total += W_TIGHT * g.tightness(req, sel)
        if req.count and req.nvlink == "preferred":
            total += W_NVLINK * g.fits_now(GpuRequest(count=req.count, models=req.models, nvlink="required",
                                                     spot=req.spot))[0][sel]
        elif not req.count:
            if req.share and not req.models:
                shared = g.shared_any[sel] >= req.share
            else:
                ms = g.model_ids(req.models)
                shared = np.asarray((g.shared_fit[sel][:, ms] >= g.share_per_model(req, ms)).any(axis=1))
            # Else on a node already partly used, so untouched nodes stay whole.
            total += W_SHARED * shared + W_TIGHT * (~shared) * g.tightness(GpuRequest(count=1, models=req.models), sel)
    if m.costs.elastic:   # elastic sites pack instead: an emptier node is one that could be let go
        spread *= _kept(m, ("packing",), lambda: np.where(m.costs.grows, -1.0, 1.0))[sel]
    return total + W_FREE * spread


def _kept(m: Masks, key: tuple, make: Callable[[], np.ndarray]) -> np.ndarray:
    """One of the scorer's per-cycle arrays, made on first use (`Masks.scoring`)."""
    hit = m.scoring.get(key)
    if hit is None:
        hit = m.scoring[key] = make()
    return hit


def offers(m: Masks, sel: np.ndarray | slice, job: PendingJob, req: GpuRequest | None, grow: np.ndarray | None
           ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray]:
    """Per selected site: how the job would start there (pricing.NOW, ON_DEMAND or SPOT), after how
    many seconds, at what price per hour. Free capacity first, always: it costs nothing extra to
    start. Else (`grow`: (2, n) fits on a new on-demand / spot node) on a new node: the sooner
    (optimize time) or the cheaper (optimize cost) kind, spot first for a job that prefers it.
    Without `grow`, every site starts it now: (None, None, price)."""
    price = m.costs.hourly(job.cpus, job.memory, req)[:, sel]
    if grow is None:
        return None, None, price[0]
    fits = m.free_now(job, req)[0][sel]
    delay = m.costs.start_delay(job.cpus, job.memory, req)[:, sel]
    od, sp = grow[0][sel], grow[1][sel]
    if job.spot == NEVER:   # free_later took spot growth away
        kind = np.where(fits, NOW, ON_DEMAND)
        return kind, np.where(fits, 0.0, delay[0]), price[0]
    if job.spot == PREFER:
        spot_first = np.ones_like(sp)
    elif job.optimize_cost:
        spot_first = (price[1] < price[0]) | ((price[1] == price[0]) & (delay[1] < delay[0]))
    else:
        spot_first = (delay[1] < delay[0]) | ((delay[1] == delay[0]) & (price[1] < price[0]))
    use_spot = sp & (spot_first | ~od) & ~fits
    kind = np.where(fits, NOW, np.where(use_spot, SPOT, ON_DEMAND))
    return kind, np.where(fits, 0.0, np.where(use_spot, delay[1], delay[0])), np.where(use_spot, price[1], price[0])


def economics(m: Masks, sel: np.ndarray | slice, job: PendingJob, kind: np.ndarray | None, delay: np.ndarray | None,
              price: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """The score's part for start delay and price over the sites scored, from `offers`; prices are
    compared among the `eligible` ones only, so no site the job cannot use moves the scale. Data staged
    to a site counts: its egress as an hour's price, its copy as a start delay."""
    if job.datasets:
        stage_cost, stage_s = m.staging(job.datasets)
        price = price + stage_cost[sel]
        delay = stage_s[sel] if delay is None else delay + stage_s[sel]
    finite = price[eligible if kind is None else eligible & np.isfinite(price)]   # on-demand prices are finite
    top = float(np.maximum.reduce(finite, initial=0.0))
    share = price / top if top > 0 else np.zeros_like(price)   # the job's share of a site's price, 0..1
    wait = None if delay is None else 1.0 - DELAY_SCALE / (delay + DELAY_SCALE)   # 1 where the delay is infinite
    if kind is None:   # every site starts it now, on capacity it has
        out = -W_PRICE * share - _kept(m, ("paid",), lambda: W_PAID * m.costs.grows)[sel]
        return out if wait is None else out - (W_WAIT if job.optimize_cost else W_DELAY) * wait
    assert wait is not None
    later = kind != NOW
    paid = W_PAID * (~later & m.costs.grows[sel])
    if not job.optimize_cost:
        return -W_DELAY * (later + wait) - W_PRICE * share - paid
    # Capacity a site has adds nothing to the bill (it is paid for, or owned): it goes first, the
    # cheaper of such sites first; else the cheapest node to add, the sooner of equals.
    return -W_DELAY * later - W_COST * np.where(later, share, 0.0) - W_PRICE * np.where(later, 0.0, share) \
        - W_WAIT * wait - paid

