"""Every GPU of the federation, what is free, and where a GPU request fits.

`GpuState` holds every GPU in flat arrays (free thousandths per GPU) plus per-site,
per-model summaries (whole GPUs free, most free in one NVLink domain, on one node, on one
shared GPU) that the scheduler filters on as vectors; `fit` then finds the exact block
inside one site, best fit by topology level, so big blocks stay whole (the general search
is `policies.gpu_fit`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from policies import fgd
from policies.drain import Drain
from policies.fgd import Demand
from policies.gpu_fit import SiteGpus, SiteLayout, closeness, fit_share, fit_whole, type_miss
from policies.gpus import MILLI, Binding, GpuRequest, Inventory, Miss, Slot, slice_of

HIST = 17     # block sizes counted exactly below this
NONE = 2 * HIST  # no block holds it


def _tightest(hist: np.ndarray) -> np.ndarray:
    """From counts of blocks by free size (last axis), the smallest size >= k present, per k."""
    sizes = np.where(hist > 0, np.arange(HIST), NONE)
    return np.minimum.accumulate(sizes[..., ::-1], axis=-1)[..., ::-1].astype(np.int8)


class GpuState:
    """Every GPU of the federation: static layout plus free thousandths per GPU.

    Sites are indexed as in the snapshot. `copy()` is cheap (a few array copies), so
    a scheduling cycle works on its own copy and never mutates the caller's state.
    """

    _pressed: tuple[Demand | None, np.ndarray | None] = (None, None)   # `fgd.pressure` of `demand`, when made

    def __init__(self, inventories: Sequence[Inventory]) -> None:
        models: dict[str, int] = {}
        site_of: list[int] = []
        node_of: list[int] = []
        local: list[int] = []
        model_of: list[int] = []
        memory_of: list[int] = []
        domain_of: list[int] = []
        self.sites: list[SiteLayout] = []
        node_count = 0
        for s, inv in enumerate(inventories):
            domains: dict[str, int] = {}
            start = len(site_of)
            node_start = []
            for node in inv.nodes:
                node_start.append(len(site_of))
                m = models.setdefault(node.model, len(models))
                for i, d in enumerate(node.domains):
                    site_of.append(s)
                    node_of.append(node_count)
                    local.append(i)
                    model_of.append(m)
                    memory_of.append(node.memory)
                    # A GPU without NVLink peers is a domain of its own.
                    domain_of.append(domains.setdefault(d, len(domains)) if d else -1 - len(site_of))
                node_count += 1
            site = SiteLayout(start, len(site_of), inv.nodes, tuple(node_start))
            site.names = {n.name: k for k, n in enumerate(inv.nodes)}
            self.sites.append(site)
        self.models = models
        self.model_names = list(models)
        self.site_of = np.array(site_of, dtype=np.int32)
        self.node_of = np.array(node_of, dtype=np.int32)
        self.local = np.array(local, dtype=np.int16)
        self.model_of = np.array(model_of, dtype=np.int16)
        self.memory_of = np.array(memory_of, dtype=np.int64)
        self.domain_of = np.array(domain_of, dtype=np.int64)
        # GPUs of spot nodes and sites with any: there a request refusing spot takes the general search.
        self.spot_of = np.array([n.spot for inv in inventories for n in inv.nodes for _ in n.domains], dtype=bool)
        self.spot_sites = np.bincount(self.site_of[self.spot_of], minlength=len(self.sites)) > 0
        self.free = np.full(len(site_of), MILLI, dtype=np.int32)
        self.demand: Demand | None = None   # the workload's asks: with them, FGD chooses inside a site
        self._index_groups(node_count)
        shape = (len(self.sites), max(1, len(models)))
        self.model_memory = np.zeros(shape[1], dtype=np.int64)
        for m in range(len(models)):
            self.model_memory[m] = int(self.memory_of[self.model_of == m].min())
        self.whole_free = np.zeros(shape, dtype=np.int32)
        self.max_domain = np.zeros(shape, dtype=np.int32)
        self.max_node = np.zeros(shape, dtype=np.int32)
        self.max_share = np.zeros(shape, dtype=np.int32)      # most free thousandths on one GPU
        self.shared_fit = np.zeros(shape, dtype=np.int32)     # most free on one already-shared GPU
        self.whole_any = np.zeros(shape[0], dtype=np.int32)   # the above, best over models
        self.domain_any = np.zeros(shape[0], dtype=np.int32)
        self.share_any = np.zeros(shape[0], dtype=np.int32)
        self.shared_any = np.zeros(shape[0], dtype=np.int32)
        self.whole_total = np.zeros(shape[0], dtype=np.int32)  # whole free GPUs of any model
        for s in range(len(self.sites)):
            self._summarize(s)
        self.capacity = (self.whole_free.copy(), self.max_domain.copy(), self.max_node.copy())

    def _index_groups(self, nodes: int) -> None:
        """Counters of whole free GPUs per node and per NVLink group (a domain's GPUs of one model),
        and each site's GPUs, nodes and groups per model, so one reservation updates a few numbers."""
        n = self.free.size
        key = (self.site_of.astype(np.int64) << 42) + ((self.domain_of + (1 << 33)) << 8) + self.model_of
        _, group = np.unique(key, return_inverse=True)
        self.group_of = group.reshape(-1).astype(np.int64)
        groups = int(self.group_of.max()) + 1 if n else 0
        self.group_gpus = np.argsort(self.group_of, kind="stable")
        self.group_ptr = np.searchsorted(self.group_of[self.group_gpus], np.arange(groups + 1))
        self.node_ptr = np.searchsorted(self.node_of, np.arange(nodes + 1))
        self.node_whole = np.bincount(self.node_of, minlength=nodes).astype(np.int32)
        self.group_whole = np.bincount(self.group_of, minlength=groups).astype(np.int32)
        self.by_model: list[dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]] = []
        for site in self.sites:
            mine: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
            gpus = np.arange(site.start, site.end)
            for m in np.unique(self.model_of[site.start:site.end]):
                g = gpus[self.model_of[site.start:site.end] == m]
                mine[int(m)] = (g, np.unique(self.node_of[g]), np.unique(self.group_of[g]))
            self.by_model.append(mine)
        # Per site and model, how many nodes (NVLink groups) have k whole GPUs free, k < HIST - 1,
        # and HIST - 1 or more: the tightest block that holds a request, as one vector lookup.
        sites, models = len(self.sites), max(1, len(self.models))
        firsts = self.node_ptr[:-1]
        self.node_key = (self.site_of[firsts].astype(np.int64), self.model_of[firsts].astype(np.int64))
        gfirst = self.group_gpus[self.group_ptr[:-1]]
        self.group_key = (self.site_of[gfirst].astype(np.int64), self.model_of[gfirst].astype(np.int64))
        self.node_hist = np.zeros((sites, models, HIST), dtype=np.int32)
        self.group_hist = np.zeros((sites, models, HIST), dtype=np.int32)
        np.add.at(self.node_hist, (*self.node_key, np.minimum(self.node_whole, HIST - 1)), 1)
        np.add.at(self.group_hist, (*self.group_key, np.minimum(self.group_whole, HIST - 1)), 1)
        self.node_hist_any = self.node_hist.sum(axis=1)
        self.group_hist_any = self.group_hist.sum(axis=1)
        self.node_tight, self.group_tight = _tightest(self.node_hist), _tightest(self.group_hist)
        self.node_tight_any, self.group_tight_any = _tightest(self.node_hist_any), _tightest(self.group_hist_any)

    def copy(self) -> GpuState:
        out = object.__new__(GpuState)
        out.__dict__.update(self.__dict__)
        for name in ("free", "whole_free", "max_domain", "max_node", "max_share", "shared_fit", "node_whole",
                     "group_whole", "whole_any", "domain_any", "share_any", "shared_any", "whole_total",
                     "node_hist", "group_hist", "node_hist_any", "group_hist_any", "node_tight", "group_tight",
                     "node_tight_any", "group_tight_any"):
            setattr(out, name, getattr(self, name).copy())
        return out

    # ---------------------------------------------------------------- bookkeeping

    def _summarize(self, s: int, models: Iterable[int] | None = None) -> None:
        """Recompute site s's per-model summaries from its counters (a few small reductions)."""
        mine = self.by_model[s]
        for m in (mine if models is None else models):
            gpus, nodes, groups = mine[m]
            f = self.free[gpus]
            counts = self.group_whole[groups]
            self.whole_free[s, m] = int(counts.sum())
            self.max_domain[s, m] = int(counts.max())
            self.max_node[s, m] = int(self.node_whole[nodes].max())
            self.max_share[s, m] = int(f.max())
            partial = f[(f < MILLI) & (f > 0)]
            self.shared_fit[s, m] = int(partial.max()) if partial.size else 0
        for m in (mine if models is None else models):
            self.node_tight[s, m] = _tightest(self.node_hist[s, m])
            self.group_tight[s, m] = _tightest(self.group_hist[s, m])
        self.node_tight_any[s] = _tightest(self.node_hist_any[s])
        self.group_tight_any[s] = _tightest(self.group_hist_any[s])
        self.whole_any[s] = self.whole_free[s].max()
        self.domain_any[s] = self.max_domain[s].max()
        self.share_any[s] = self.max_share[s].max()
        self.shared_any[s] = self.shared_fit[s].max()
        self.whole_total[s] = self.whole_free[s].sum()

    def reserve(self, s: int, binding: Binding, sign: int = -1) -> None:
        """Take (sign -1) or give back (+1) what a binding holds at site s."""
        site = self.sites[s]
        touched = set()
        for slot in binding:
            k = site.names.get(slot.node)
            if k is None:
                continue  # the node left the inventory; nothing to account
            base = site.node_start[k]
            for g in slot.gpus:
                if g >= site.nodes[k].gpus:
                    continue
                i = base + g
                before = self.free[i] == MILLI
                self.free[i] = min(MILLI, max(0, self.free[i] + sign * slot.milli))
                delta = int(self.free[i] == MILLI) - int(before)
                if delta:
                    self._count(self.node_whole, self.node_hist, self.node_hist_any, self.node_key,
                                int(self.node_of[i]), delta)
                    self._count(self.group_whole, self.group_hist, self.group_hist_any, self.group_key,
                                int(self.group_of[i]), delta)
                touched.add(int(self.model_of[i]))
        self._summarize(s, touched)

    @staticmethod
    def _count(whole: np.ndarray, hist: np.ndarray, hist_any: np.ndarray, key: tuple[np.ndarray, np.ndarray],
               j: int, delta: int) -> None:
        s, m = key[0][j], key[1][j]
        before, after = min(int(whole[j]), HIST - 1), min(int(whole[j]) + delta, HIST - 1)
        whole[j] += delta
        hist[s, m, before] -= 1
        hist[s, m, after] += 1
        hist_any[s, before] -= 1
        hist_any[s, after] += 1

    def tightness(self, req: GpuRequest, sel: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Per site, how snugly its tightest NVLink group (or node) holds `req`'s whole GPUs:
        1 when one has exactly that many free, less the more would be left, 0 when none holds it."""
        group = req.nvlink == "required"
        k = min(req.count, HIST - 1)
        if not req.models:
            tight = (self.group_tight_any if group else self.node_tight_any)[sel, k]
        else:
            ms = self.model_ids(req.models)
            table = self.group_tight if group else self.node_tight
            tight = table[sel, ms[0], k] if ms.size == 1 else table[sel][:, ms, k].min(axis=1)
        return np.where(tight < NONE, 1.0 - (tight - k) / HIST, 0.0)

    def model_of_binding(self, s: int, binding: Binding) -> str:
        """The GPU model a binding at site s holds (a binding never mixes models)."""
        site = self.sites[s]
        k = site.names.get(binding[0].node) if binding else None
        return "" if k is None else site.nodes[k].model

    def models_at(self, s: int) -> frozenset[str]:
        """The GPU models site s has."""
        return frozenset(self.model_names[m] for m in np.flatnonzero(self.capacity[0][s] > 0))

    def total(self, s: int) -> int:
        site = self.sites[s]
        return site.end - site.start

    def model_ids(self, models: frozenset[str]) -> np.ndarray:
        if not models:
            return np.arange(len(self.model_names), dtype=np.int64)
        return np.array([self.models[m] for m in models if m in self.models], dtype=np.int64)

    # ---------------------------------------------------------------- vector filters

    def may_fit(self, req: GpuRequest, capacity: bool = False) -> np.ndarray:
        """Per site: a necessary condition for `fit` (exact for the common shapes)."""
        n = len(self.sites)
        ms = self.model_ids(req.models)
        if ms.size == 0:
            return np.zeros(n, dtype=bool)
        if capacity:
            whole, domain, node = (c[:, ms] for c in self.capacity)
            share = np.where(whole > 0, MILLI, 0)
        else:
            whole, domain, node = self.whole_free[:, ms], self.max_domain[:, ms], self.max_node[:, ms]
            share = self.max_share[:, ms]
        mem_ok = self.model_memory[ms] >= req.memory
        if req.count:
            ok = whole >= req.count
            if req.nvlink == "required":
                ok &= domain >= req.count
            if req.per_node:
                ok &= node >= req.per_node
            return np.asarray((ok & mem_ok).any(axis=1))
        need = self.share_per_model(req, ms)
        return np.asarray((share >= need).any(axis=1))

    def fits_now(self, req: GpuRequest) -> tuple[np.ndarray, np.ndarray]:
        """Per site: (`may_fit` now, enough whole GPUs of a wanted model whatever their shape).
        One comparison on a per-site array for the common requests; `may_fit` otherwise. For a
        request that refuses spot, exact at the sites with spot nodes."""
        shaped, enough = self._fits_now(req)
        if req.spot or not self.spot_sites.any():
            return shaped, enough
        shaped, enough = shaped.copy(), enough.copy()
        ms = self.model_ids(req.models)
        for s in np.flatnonzero(self.spot_sites).tolist():
            a, b = self.sites[s].start, self.sites[s].end
            mine = ~self.spot_of[a:b] & np.isin(self.model_of[a:b], ms)
            shaped[s] = self.fit(s, req)[0] is not None
            enough[s] = int(np.count_nonzero(mine & (self.free[a:b] == MILLI))) >= req.count if req.count \
                else shaped[s]
        return shaped, enough

    def _fits_now(self, req: GpuRequest) -> tuple[np.ndarray, np.ndarray]:
        one = None
        if not req.models and not req.memory and not req.per_node:
            one = (self.whole_any, self.domain_any, self.share_any)
        elif len(req.models) == 1 and not req.memory and not req.per_node:
            m = self.models.get(next(iter(req.models)))
            if m is None:
                none = np.zeros(len(self.sites), dtype=bool)
                return none, none
            one = (self.whole_free[:, m], self.max_domain[:, m], self.max_share[:, m])
        if one is None:
            shaped = self.may_fit(req)
            if not req.count:
                return shaped, shaped
            ms = self.model_ids(req.models)
            return shaped, np.asarray((self.whole_free[:, ms] >= req.count).any(axis=1)) if ms.size else shaped
        whole, domain, share = one
        if not req.count:
            shaped = share >= req.share
            return shaped, shaped
        enough = whole >= req.count
        return (domain >= req.count if req.nvlink == "required" else enough), enough

    def share_per_model(self, req: GpuRequest, ms: np.ndarray) -> np.ndarray:
        if req.share:
            return np.full(ms.size, req.share)
        mem = self.model_memory[ms]
        return np.where(mem > 0, np.ceil(MILLI * req.memory / np.maximum(mem, 1)), MILLI + 1).astype(np.int64)

    # ---------------------------------------------------------------- exact fit

    def fit(self, s: int, req: GpuRequest, capacity: bool = False,
            drain: Drain | None = None) -> tuple[Binding | None, Miss | None]:
        """The best block for `req` at site s, or why there is none; with `drain`, among the common
        shapes, first on nodes the job keeps busy no longer than their other work."""
        no_spot = not req.spot and bool(self.spot_sites[s])
        if not capacity and not no_spot:
            fast = self._fit_fast(s, req, drain)
            if fast is not None:
                return fast, None
        site = self.sites[s]
        a, b = site.start, site.end
        free = np.full(b - a, MILLI, dtype=np.int32) if capacity else self.free[a:b]
        model = self.model_of[a:b]
        ms = self.model_ids(req.models)
        have = np.isin(model, ms) & (self.memory_of[a:b] >= (req.memory if req.count else 0))
        if no_spot and have.any():
            have &= ~self.spot_of[a:b]
            if not have.any():   # spot nodes come and go; an on-demand one may yet be added
                return None, Miss(False, "only spot nodes here have such GPUs; the job refuses spot", "capacity")
        if not have.any():
            return None, Miss(True, type_miss(site, req), "gpu-type")
        view = SiteGpus(site, free, self.node_of[a:b], self.domain_of[a:b], self.memory_of[a:b], self.local[a:b])
        best: tuple[tuple, Binding] | None = None
        miss: Miss | None = None
        for m in np.unique(model[have]):
            mine = have & (model == m)
            if req.count:
                got, why = fit_whole(view, mine, req)
            else:
                got, why = fit_share(view, mine, req)
            if got is not None:
                got = ((self._scarcity(s, int(m)), *got[0]), got[1])
                if best is None or got[0] < best[0]:
                    best = got
            elif miss is None or closeness(why) > closeness(miss):
                miss = why
        if best is not None:
            return best[1], None
        return None, miss

    def _fit_fast(self, s: int, req: GpuRequest, drain: Drain | None = None) -> Binding | None:
        """The common shapes from the counters: a share, a block inside one NVLink domain, or whole
        GPUs on one node. None sends the caller to the general search (which also explains misses)."""
        if req.per_node or req.colocate or (req.count and req.memory):
            return None
        best: tuple[tuple, Binding] | None = None
        got: tuple[tuple, Binding]
        for m in self.model_ids(req.models):
            entry = self.by_model[s].get(int(m))
            if entry is None:
                continue
            gpus, nodes, groups = entry
            if not req.count or (req.count == 1 and self.demand is not None):
                need = req.share or (slice_of(req.memory, int(self.model_memory[m])) if not req.count else MILLI)
                f = self.free[gpus]
                ok = np.flatnonzero(f >= need)
                if not ok.size:
                    continue
                # Best fit: the GPU with the least left, then the fullest node; with FGD, first the
                # GPU whose node fragments least; with a drain, before all, the node it keeps busy least.
                on = self.node_of[gpus[ok]]
                growth = self._growth(fgd.gpu_growth, gpus[ok], need)
                timed = self._timed(drain, on)
                i = int(np.lexsort([self.node_whole[on], f[ok], growth] + timed)[0])
                g = int(gpus[ok[i]])
                got = ((_at(timed, i), float(growth[i]), int(self.free[g]) - need, 0), (self._slot(s, [g], need),))
            elif req.nvlink == "required":
                counts = self.group_whole[groups]
                ok = np.flatnonzero(counts >= req.count)
                if not ok.size:
                    continue
                growth = self._growth(fgd.group_growth, groups[ok], req.count)
                # A domain that spans nodes is timed by its first node.
                timed = self._timed(drain, self.node_of[self.group_gpus[self.group_ptr[groups[ok]]]])
                i = int(np.lexsort([counts[ok], growth] + timed)[0])
                grp = int(groups[ok[i]])
                members = self.group_gpus[self.group_ptr[grp]:self.group_ptr[grp + 1]]
                chosen = members[self.free[members] == MILLI][:req.count]
                got = ((_at(timed, i), float(growth[i]), int(counts[ok[i]]), 0), self.slots(s, chosen))
            else:
                counts = self.node_whole[nodes]
                ok = np.flatnonzero(counts >= req.count)
                if not ok.size:
                    return None  # spread over nodes: the general search
                node = int(nodes[ok[np.argmin(counts[ok])]])   # best fit, not timed (`policies.drain`)
                on = np.arange(self.node_ptr[node], self.node_ptr[node + 1])
                on = on[self.free[on] == MILLI]
                # Inside the node: GPUs of the fullest NVLink group that still holds the ask, else the largest.
                sizes = self.group_whole[self.group_of[on]]
                holds = sizes >= req.count
                order = np.lexsort((on, -sizes, np.where(holds, sizes, 1 << 30)))
                chosen = np.sort(on[order][:req.count])
                split = len(set(self.group_of[chosen].tolist()))
                got = ((0.0, 0.0, int(counts[ok].min()) - req.count, split), self.slots(s, chosen))
            got = ((self._scarcity(s, int(m)), *got[0]), got[1])
            if best is None or got[0] < best[0]:
                best = got
        return None if best is None else best[1]

    def _growth(self, growth: Callable[..., np.ndarray | None], candidates: np.ndarray, need: int) -> np.ndarray:
        """FGD's rank of each candidate (`policies.fgd`), rounded so that float noise breaks no tie;
        all zero without a Demand (then best fit decides alone)."""
        got = growth(self, candidates, need, self.demand) if self.demand is not None else None
        return np.zeros(len(candidates)) if got is None else np.round(got, 6)

    @staticmethod
    def _timed(drain: Drain | None, nodes: np.ndarray) -> list[np.ndarray]:
        """The first sort key of candidates on `nodes`, when there is a drain to keep: how late
        each would make its node empty."""
        return [] if drain is None else [drain.late(nodes)]

    def _scarcity(self, s: int, m: int) -> tuple[float, int]:
        """Among the GPU models a job accepts, the least pressed by the workload goes first (`fgd.pressure`),
        then the one the site has most of: jobs that take any GPU leave the models others need."""
        if self._pressed[0] is not self.demand:
            self._pressed = (self.demand, None if self.demand is None else fgd.pressure(self, self.demand))
        pressed = self._pressed[1]
        return (0.0 if pressed is None else round(float(pressed[s, m]), 9)), -int(self.capacity[0][s, m])

    def _slot(self, s: int, flat: Sequence[int], milli: int = MILLI) -> Slot:
        site = self.sites[s]
        k = int(self.node_of[flat[0]]) - int(self.node_of[site.start])
        return Slot(site.nodes[k].name, tuple(int(self.local[g]) for g in flat), milli)

    def slots(self, s: int, flat: np.ndarray) -> Binding:
        """The binding that holds the flat GPUs `flat` of site s (sorted by node)."""
        out, start = [], 0
        for i in range(1, len(flat) + 1):
            if i == len(flat) or self.node_of[flat[i]] != self.node_of[flat[start]]:
                out.append(self._slot(s, flat[start:i].tolist()))
                start = i
        return tuple(out)


def _at(timed: list[np.ndarray], i: int) -> float:
    return float(timed[0][i]) if timed else 0.0
