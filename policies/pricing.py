"""What a site costs and what it could add: prices per hour of what a job holds, and the nodes
an elastic site's autoscaler may still start.

A job can start at a site *now* (free capacity), or on a *new node* of an on-demand or a spot
node type after that type's start delay. `Costs` holds, as arrays over the sites, the rates and
the room still to grow, so a cycle prices every site for a job in a few vector operations;
what one placement takes from the room to grow is taken here too (`took`).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from policies.gpus import GpuRequest

GIB = float(2**30)
NOW, ON_DEMAND, SPOT = 0, 1, 2          # how a job starts at a site
NEVER, ALLOW, PREFER = 0, 1, 2          # a job's spot: never | allow | prefer
STAGING_BYTES_S = 100e6                 # what copying data between sites is taken to move a second (WAN)


@dataclass(frozen=True, slots=True)
class Rates:
    cpu_hour: float = 0.0
    memory_gib_hour: float = 0.0
    gpu_hour: Mapping[str, float] = field(default_factory=dict)

    def hourly(self, cpus: float, memory: float, gpus: float, model: str = "") -> float:
        """Per hour for these resources; GPUs of an unpriced (or unknown) model at the dearest rate."""
        gpu = 0.0
        if gpus:
            rates = self.gpu_hour
            gpu = rates.get(model, max(rates.values(), default=0.0)) * gpus
        return self.cpu_hour * cpus + self.memory_gib_hour * memory / GIB + gpu


@dataclass(frozen=True, slots=True)
class Pricing:
    on_demand: Rates
    spot: Rates | None = None
    egress_gb: float = 0.0
    currency: str = "USD"


@dataclass(frozen=True, slots=True)
class NodeType:
    name: str
    cpus: float
    memory: float
    max: int
    gpus: int = 0
    gpu_model: str = ""
    gpu_memory: float = 0.0
    min: int = 0
    spot: bool = False
    start_s: float = 120.0


@dataclass(frozen=True, slots=True)
class Elastic:
    node_types: tuple[NodeType, ...]
    idle_timeout_s: float = 300.0
    up: Mapping[str, int] = field(default_factory=dict)   # nodes of each type alive now, as the site reports
    # Nodes of each type claimed by GPU attempts placed on a node to add that have not started yet:
    # until their node is up, it is not in `up`, and no other job may claim it.
    claimed: Mapping[str, int] = field(default_factory=dict)

    def addable(self, t: NodeType) -> int:
        return max(0, t.max - self.up.get(t.name, 0) - self.claimed.get(t.name, 0))


def gpu_price(rates: Rates, allowed: frozenset[str], present: Iterable[str]) -> float:
    """One GPU an hour for a job that allows `allowed` models (empty: any) at a site whose GPUs (and
    nodes it may add) are of the models `present`: the cheapest it could get there. A model without
    a price costs the dearest rate, as does a site with none of the allowed models."""
    dearest = max(rates.gpu_hour.values(), default=0.0)
    return min((rates.gpu_hour.get(m, dearest) for m in present if not allowed or m in allowed), default=dearest)


def gpu_units(req: GpuRequest | None) -> float:
    """GPUs a request is priced for: a share of one, or one whole GPU for a slice sized by memory."""
    if req is None:
        return 0.0
    return req.whole if req.whole > 0 else 1.0


def fits_node(t: NodeType, cpus: float, memory: float, req: GpuRequest | None) -> bool:
    """Whether one node of type t holds the job."""
    if cpus > t.cpus + 1e-9 or memory > t.memory + 1e-9:
        return False
    if req is None:
        return True
    if not t.gpus or (req.models and t.gpu_model not in req.models) or t.gpu_memory < req.memory:
        return False
    return req.count <= t.gpus if req.count else True


class Costs:
    """Per-site rates and room to grow, for one cycle. Kind k of growth: 0 on-demand, 1 spot.

    The node types of every site are padded into (types, sites) arrays, so whether a job fits a
    node a site may still add is one vector expression, not a loop over sites (and reductions over
    the types run along the short axis, fast in numpy)."""

    def __init__(self, sites: Sequence, present: Sequence[frozenset[str]] = ()) -> None:
        n = len(sites)
        # The GPU models each site has or may add: what a job there is priced for.
        self.present = [frozenset(p) | frozenset(t.gpu_model for t in (s.elastic.node_types if s.elastic else ())
                                                 if t.gpu_model)
                        for s, p in zip(sites, present or [frozenset()] * n, strict=True)]
        self.known = frozenset().union(*self.present) if self.present else frozenset()
        self.n = n
        self.priced = np.array([s.pricing is not None for s in sites], dtype=bool)
        self.rates = [s.pricing.on_demand if s.pricing else Rates() for s in sites]
        # Spot prices count only where the site has spot nodes to add.
        self.spot_rates = [s.pricing.spot if s.pricing and s.pricing.spot and has_spot_nodes(s) else None
                           for s in sites]
        self.has_spot = np.array([r is not None for r in self.spot_rates], dtype=bool)
        self.cpu = np.array([[r.cpu_hour if r else 0.0 for r in rs] for rs in (self.rates, self.spot_rates)])
        self.mem = np.array([[r.memory_gib_hour if r else 0.0 for r in rs] for rs in (self.rates, self.spot_rates)])
        self.types: list[tuple[NodeType, ...]] = [s.elastic.node_types if s.elastic else () for s in sites]
        self.elastic = any(self.types)
        self.grows = np.array([bool(t) for t in self.types], dtype=bool)   # an elastic site, per site
        width = max((len(t) for t in self.types), default=0)
        self.t_cpu, self.t_mem, self.t_gpus, self.t_gpu_mem, self.t_left, self.t_start, self.t_price = (
            np.zeros((width, n)) for _ in range(7))
        self.t_spot = np.zeros((width, n), dtype=bool)
        self.t_model = np.full((width, n), "", dtype=object)
        self.grow_cpu, self.grow_mem = np.zeros((2, n)), np.zeros((2, n))
        for i, (site, types) in enumerate(zip(sites, self.types, strict=True)):
            for j, t in enumerate(types):
                left = site.elastic.addable(t)
                self.t_cpu[j, i], self.t_mem[j, i], self.t_gpus[j, i] = t.cpus, t.memory, t.gpus
                self.t_gpu_mem[j, i], self.t_left[j, i], self.t_spot[j, i] = t.gpu_memory, left, t.spot
                self.t_model[j, i], self.t_start[j, i] = t.gpu_model, t.start_s
                self.t_price[j, i] = node_price(t, site.pricing)
                self.grow_cpu[int(t.spot), i] += left * t.cpus
                self.grow_mem[int(t.spot), i] += left * t.memory
        self._gpu_rate: dict[tuple[bool, frozenset[str]], np.ndarray] = {}
        self._hourly: dict[tuple, np.ndarray] = {}
        self._nodes: dict[tuple, tuple[np.ndarray, np.ndarray, int]] = {}
        self._claimed: list[int] = []   # sites where t_left changed, in order
        self._shapes: dict[tuple, np.ndarray] = {}
        self._taken: dict[str, tuple[int, int, float, float, int, float, bool]] = {}
        self.leftover = np.zeros((width, n))   # CPUs left on the last node of each type opened this cycle

    def gpu_rate(self, models: frozenset[str]) -> np.ndarray:
        """(2, n): one GPU of the allowed models an hour, on demand and spot (inf: no spot); see `gpu_price`.
        Keyed by the allowed models any site has, so made-up model names make no new work."""
        key = (bool(models), models & self.known)
        hit = self._gpu_rate.get(key)
        if hit is None:
            allowed = key[1] if models else frozenset()
            hit = np.full((2, self.n), np.inf)
            hit[0] = 0.0
            for k, rs in enumerate((self.rates, self.spot_rates)):
                for i, r in enumerate(rs):
                    if r is not None:
                        hit[k, i] = gpu_price(r, allowed, self.present[i]) if allowed or not models else \
                            max(r.gpu_hour.values(), default=0.0)
            self._gpu_rate[key] = hit
        return hit

    def price_at(self, i: int, kind: int, cpus: float, memory: float, req: GpuRequest | None, model: str) -> float:
        """The job's price an hour at site i on what it is given: free capacity (`kind` NOW) or a new
        node of `kind`, with GPUs of `model` (the bound GPUs', or the new node's)."""
        rates = (self.spot_rates[i] if kind == SPOT else self.rates[i])
        if rates is None:
            return 0.0
        return rates.hourly(cpus, memory, gpu_units(req), model) if req is not None else \
            rates.hourly(cpus, memory, 0.0)

    def hourly(self, cpus: float, memory: float, req: GpuRequest | None) -> np.ndarray:
        """(2, n): the job's price per hour at each site, on demand and on spot (inf: no spot); read-only."""
        key = (cpus, memory, req)
        hit = self._hourly.get(key)
        if hit is None:
            hit = self.cpu * cpus + self.mem * (memory / GIB)
            if req is not None:
                hit = hit + self.gpu_rate(req.models) * gpu_units(req)
            hit[1] = np.where(self.has_spot, hit[1], np.inf)
            hit.flags.writeable = False
            self._hourly[key] = hit
        return hit

    def _shape_ok(self, cpus: float, memory: float, req: GpuRequest | None) -> np.ndarray:
        """(types, sites): one node of the type holds the job."""
        key = (cpus, memory, req)
        hit = self._shapes.get(key)
        if hit is None:
            hit = (self.t_cpu >= cpus - 1e-9) & (self.t_mem >= memory - 1e-9)
            if req is not None:
                gpu = (self.t_gpus > 0) & (self.t_gpu_mem >= req.memory)
                if req.count:
                    gpu &= self.t_gpus >= req.count
                if req.models:
                    gpu &= np.isin(self.t_model, list(req.models))
                hit &= gpu
            self._shapes[key] = hit
        return hit

    def node_fits(self, cpus: float, memory: float, req: GpuRequest | None, static: bool = False) -> np.ndarray:
        """(2, n): a node of some type of that kind holds the job (and, unless static, one is still addable)."""
        if static:
            ok = self._shape_ok(cpus, memory, req)
            return np.stack([(ok & ~self.t_spot).any(axis=0), (ok & self.t_spot).any(axis=0)])
        return self._addable(cpus, memory, req)[0]

    def start_delay(self, cpus: float, memory: float, req: GpuRequest | None) -> np.ndarray:
        """(2, n): the shortest start of an addable node of each kind that holds the job (inf: none)."""
        return self._addable(cpus, memory, req)[1]

    def _addable(self, cpus: float, memory: float, req: GpuRequest | None) -> tuple[np.ndarray, np.ndarray]:
        """(fits, delay) of `node_fits` and `start_delay`, kept per job shape; the rows of sites where a
        node was claimed since are brought up to date when next asked for."""
        key = (cpus, memory, req)
        hit = self._nodes.get(key)
        if hit is None:
            fits, delay = np.zeros((2, self.n), dtype=bool), np.full((2, self.n), np.inf)
            self._fill(key, fits, delay, slice(None))
            self._nodes[key] = (fits, delay, len(self._claimed))
            return fits, delay
        fits, delay, seen = hit
        if seen < len(self._claimed):
            rows = set(self._claimed[seen:])
            if len(rows) > 8:
                self._fill(key, fits, delay, np.array(sorted(rows)))
            else:   # the usual case, a site or two: cheaper in Python than as arrays
                for i in rows:
                    self._fill_row(key, fits, delay, i)
            self._nodes[key] = (fits, delay, len(self._claimed))
        return fits, delay

    def _fill(self, key: tuple, fits: np.ndarray, delay: np.ndarray, rows: np.ndarray | slice) -> None:
        """The rows' fits and start delays per kind: the delay of the type `node_for` would add (the
        cheapest, then the fastest to start)."""
        ok = self._shape_ok(*key)[:, rows] & ((self.t_left[:, rows] > 0) | (self.leftover[:, rows] >= key[0] - 1e-9))
        spot, start, price = self.t_spot[:, rows], self.t_start[:, rows], self.t_price[:, rows]
        for k, mask in enumerate((ok & ~spot, ok & spot)):
            fits[k, rows] = mask.any(axis=0)
            if not mask.shape[0]:
                delay[k, rows] = np.inf
                continue
            cost = np.where(mask, price, np.inf)
            cheapest = mask & (cost == cost.min(axis=0))
            delay[k, rows] = np.where(cheapest, start, np.inf).min(axis=0)

    def _fill_row(self, key: tuple, fits: np.ndarray, delay: np.ndarray, i: int) -> None:
        """`_fill` of one row."""
        shape_ok, left = self._shape_ok(*key)[:, i].tolist(), self.t_left[:, i].tolist()
        leftover, price = self.leftover[:, i].tolist(), self.t_price[:, i].tolist()
        best = [(np.inf, np.inf), (np.inf, np.inf)]   # per kind: (price, start) of the cheapest addable type
        found = [False, False]
        for j, t in enumerate(self.types[i]):
            if shape_ok[j] and (left[j] > 0 or leftover[j] >= key[0] - 1e-9):
                k, cand = int(t.spot), (price[j], t.start_s)
                if not found[k] or cand < best[k]:
                    best[k], found[k] = cand, True
        for k in (0, 1):
            fits[k, i], delay[k, i] = found[k], best[k][1]

    def growth(self, cpus: float, memory: float, req: GpuRequest | None, free_cpu: np.ndarray,
               free_mem: np.ndarray) -> np.ndarray:
        """(2, n): the job fits at each site on nodes still to be added of each kind."""
        if not self.elastic:
            return np.zeros((2, self.n), dtype=bool)
        room = (free_cpu + self.grow_cpu >= cpus - 1e-9) & (free_mem + self.grow_mem >= memory - 1e-9)
        return room & self.node_fits(cpus, memory, req)

    def node_for(self, kind: int, i: int, cpus: float, memory: float, req: GpuRequest | None) -> int:
        """The column of the node type of `kind` at site i to add for the job: of those that hold it, the
        cheapest node, then the fastest to start; -1: none."""
        best, key = -1, (np.inf, np.inf, np.inf)
        for j, t in enumerate(self.types[i]):
            room = req is None and self.leftover[j, i] >= cpus - 1e-9   # on a node opened this cycle
            if t.spot == (kind == SPOT) and (self.t_left[j, i] > 0 or room) and fits_node(t, cpus, memory, req) \
                    and (not room, self.t_price[j, i], t.start_s) < key:
                best, key = j, (not room, self.t_price[j, i], t.start_s)
        return best

    def took(self, job_id: str, i: int, kind: int, cpus: float, memory: float, free_cpu: float, free_mem: float,
             req: GpuRequest | None) -> tuple[float, float]:
        """A job placed at site i on growth of `kind` (`free_*`: the site's free capacity before it):
        the CPUs and memory it takes from what is free, the rest from the room to grow."""
        k = kind - ON_DEMAND
        cpu_free, mem_free = min(cpus, max(0.0, free_cpu)), min(memory, max(0.0, free_mem))
        self.grow_cpu[k, i] -= cpus - cpu_free
        self.grow_mem[k, i] -= memory - mem_free
        j = self.node_for(kind, i, cpus, memory, req)
        before = float(self.leftover[j, i]) if j >= 0 else 0.0
        if j >= 0 and (req is not None or before < cpus - cpu_free - 1e-9):
            # A GPU job claims a node of its own (new nodes' GPUs are not bound ahead); a CPU job
            # opens one when the last node of the type opened this cycle has too little left.
            self.t_left[j, i] -= 1
            self.leftover[j, i] = 0.0 if req is not None else self.t_cpu[j, i] - (cpus - cpu_free)
            opened = True
        else:
            if j >= 0:
                self.leftover[j, i] -= cpus - cpu_free
            opened = False
        if j >= 0 and not self.t_left[j, i]:
            self._claimed.append(i)   # the type's last node: whether it is addable now hangs on its leftover
        self._taken[job_id] = (k, i, cpus - cpu_free, memory - mem_free, j, before, opened)
        return cpu_free, mem_free

    def gave_back(self, job_id: str) -> tuple[float, float]:
        """Undo `took` for a job (a gang part rolled back): the CPUs and memory that came from growth."""
        taken = self._taken.pop(job_id, None)
        if taken is None:
            return 0.0, 0.0
        k, i, cpu, mem, j, before, opened = taken
        self.grow_cpu[k, i] += cpu
        self.grow_mem[k, i] += mem
        if j >= 0:
            self.leftover[j, i] = before
            self._claimed.append(i)
        if opened:
            self.t_left[j, i] += 1
        return cpu, mem


def node_price(t: NodeType, pricing: Pricing | None) -> float:
    """What one node of type t costs an hour at the site's prices (0 for a site without)."""
    rates = (pricing.spot if t.spot else pricing.on_demand) if pricing is not None else None
    return 0.0 if rates is None else rates.hourly(t.cpus, t.memory, t.gpus, t.gpu_model)


def has_spot_nodes(site: object) -> bool:
    elastic = getattr(site, "elastic", None)
    return elastic is not None and any(t.spot for t in elastic.node_types)


def largest_node(site: object) -> tuple[float, float]:
    """The CPUs and memory of the largest node type an elastic site may add; (0, 0) for a fixed site."""
    elastic = getattr(site, "elastic", None)
    if elastic is None:
        return 0.0, 0.0
    return (max((t.cpus for t in elastic.node_types), default=0.0),
            max((t.memory for t in elastic.node_types), default=0.0))
