"""What a site costs and what it could add: prices per hour of what a job holds, and the nodes
an elastic site's autoscaler may still start.

A job can start at a site *now* (free capacity), or on a *new node* of an on-demand or a spot
node type after that type's start delay. `Costs` holds, as arrays over the sites, the rates and
the room still to grow, so a cycle prices every site for a job in a few vector operations;
what one placement takes from the room to grow is taken here too (`took`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from policies.gpus import GpuRequest

GIB = float(2**30)
NOW, ON_DEMAND, SPOT = 0, 1, 2          # how a job starts at a site
KINDS = ("now", "a new on-demand node", "a new spot node")
NEVER, ALLOW, PREFER = 0, 1, 2          # a job's spot: never | allow | prefer
STAGING_BYTES_S = 100e6                 # what copying data between sites is taken to move a second (WAN)


@dataclass(frozen=True, slots=True)
class Rates:
    cpu_hour: float = 0.0
    memory_gib_hour: float = 0.0
    gpu_hour: Mapping[str, float] = field(default_factory=dict)

    def hourly(self, cpus: float, memory: float, gpus: float, model: str = "") -> float:
        """Per hour for these resources; GPUs of an unpriced (or unknown) model at the dearest known rate."""
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

    def addable(self, t: NodeType) -> int:
        return max(0, t.max - self.up.get(t.name, 0))


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

    The node types of every site are padded into (sites, types) arrays, so whether a job fits a
    node a site may still add is one vector expression, not a loop over sites."""

    def __init__(self, sites: Sequence) -> None:
        n = len(sites)
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
            np.zeros((n, width)) for _ in range(7))
        self.t_spot = np.zeros((n, width), dtype=bool)
        self.t_model = np.full((n, width), "", dtype=object)
        self.grow_cpu, self.grow_mem = np.zeros((2, n)), np.zeros((2, n))
        for i, (site, types) in enumerate(zip(sites, self.types, strict=True)):
            for j, t in enumerate(types):
                left = site.elastic.addable(t)
                self.t_cpu[i, j], self.t_mem[i, j], self.t_gpus[i, j] = t.cpus, t.memory, t.gpus
                self.t_gpu_mem[i, j], self.t_left[i, j], self.t_spot[i, j] = t.gpu_memory, left, t.spot
                self.t_model[i, j], self.t_start[i, j] = t.gpu_model, t.start_s
                self.t_price[i, j] = node_price(t, site.pricing)
                self.grow_cpu[int(t.spot), i] += left * t.cpus
                self.grow_mem[int(t.spot), i] += left * t.memory
        self._gpu_rate: dict[frozenset[str], np.ndarray] = {}
        self._hourly: dict[tuple, np.ndarray] = {}
        self._nodes: dict[tuple, tuple[np.ndarray, np.ndarray, int]] = {}
        self._claimed: list[int] = []   # sites where t_left changed, in order
        self._shapes: dict[tuple, np.ndarray] = {}
        self._taken: dict[str, tuple[int, int, float, float, int]] = {}

    def gpu_rate(self, models: frozenset[str]) -> np.ndarray:
        """(2, n): the cheapest price of one GPU of the allowed models, on demand and spot (inf: no spot)."""
        hit = self._gpu_rate.get(models)
        if hit is None:
            hit = np.full((2, self.n), np.inf)
            for k, rs in enumerate((self.rates, self.spot_rates)):
                for i, r in enumerate(rs):
                    if r is not None:
                        hit[k, i] = min((p for m, p in r.gpu_hour.items() if not models or m in models), default=0.0)
                    elif k == 0:
                        hit[k, i] = 0.0
            self._gpu_rate[models] = hit
        return hit

    def hourly(self, cpus: float, memory: float, req: GpuRequest | None) -> np.ndarray:
        """(2, n): the job's price per hour at each site, on demand and on spot (inf: no spot); read-only."""
        key = (cpus, memory, req)
        hit = self._hourly.get(key)
        if hit is None:
            hit = self.cpu * cpus + self.mem * (memory / GIB)
            if req is not None:
                hit = hit + self.gpu_rate(req.models) * req.whole
            hit[1] = np.where(self.has_spot, hit[1], np.inf)
            hit.flags.writeable = False
            self._hourly[key] = hit
        return hit

    def _shape_ok(self, cpus: float, memory: float, req: GpuRequest | None) -> np.ndarray:
        """(sites, types): one node of the type holds the job."""
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
            return np.stack([(ok & ~self.t_spot).any(axis=1), (ok & self.t_spot).any(axis=1)])
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
            self._fill(key, fits, delay, np.unique(self._claimed[seen:]))
            self._nodes[key] = (fits, delay, len(self._claimed))
        return fits, delay

    def _fill(self, key: tuple, fits: np.ndarray, delay: np.ndarray, rows: np.ndarray | slice) -> None:
        """The rows' fits and start delays per kind: the delay of the type `node_for` would add."""
        ok = self._shape_ok(*key)[rows] & (self.t_left[rows] > 0)
        spot, start, price = self.t_spot[rows], self.t_start[rows], self.t_price[rows]
        for k, mask in enumerate((ok & ~spot, ok & spot)):
            any_ = mask.any(axis=1)
            fits[k, rows] = any_
            if mask.shape[1]:
                col = _cheapest(mask, price, start)
                delay[k, rows] = np.where(any_, start[np.arange(col.size), col], np.inf)

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
        best, key = -1, (np.inf, np.inf)
        for j, t in enumerate(self.types[i]):
            if t.spot == (kind == SPOT) and self.t_left[i, j] > 0 and fits_node(t, cpus, memory, req) \
                    and (self.t_price[i, j], t.start_s) < key:
                best, key = j, (self.t_price[i, j], t.start_s)
        return best

    def took(self, job_id: str, i: int, kind: int, cpus: float, memory: float, free_cpu: float, free_mem: float,
             req: GpuRequest | None) -> tuple[float, float]:
        """A job placed at site i on growth of `kind` (`free_*`: the site's free capacity before it):
        the CPUs and memory it takes from what is free, the rest from the room to grow."""
        k = kind - ON_DEMAND
        cpu_free, mem_free = min(cpus, max(0.0, free_cpu)), min(memory, max(0.0, free_mem))
        self.grow_cpu[k, i] -= cpus - cpu_free
        self.grow_mem[k, i] -= memory - mem_free
        j = self.node_for(kind, i, cpus, memory, req) if req is not None else -1
        if j >= 0:   # a GPU job claims a node of its own: new nodes' GPUs are not bound ahead
            self.t_left[i, j] -= 1
            self._claimed.append(i)
        self._taken[job_id] = (k, i, cpus - cpu_free, memory - mem_free, j)
        return cpu_free, mem_free

    def gave_back(self, job_id: str) -> tuple[float, float]:
        """Undo `took` for a job (a gang part rolled back): the CPUs and memory that came from growth."""
        taken = self._taken.pop(job_id, None)
        if taken is None:
            return 0.0, 0.0
        k, i, cpu, mem, j = taken
        self.grow_cpu[k, i] += cpu
        self.grow_mem[k, i] += mem
        if j >= 0:
            self.t_left[i, j] += 1
            self._claimed.append(i)
        return cpu, mem


def node_price(t: NodeType, pricing: Pricing | None) -> float:
    """What one node of type t costs an hour at the site's prices (0 for a site without)."""
    rates = (pricing.spot if t.spot else pricing.on_demand) if pricing is not None else None
    return 0.0 if rates is None else rates.hourly(t.cpus, t.memory, t.gpus, t.gpu_model)


def _cheapest(mask: np.ndarray, price: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Per row, the column of the cheapest (then fastest) type the mask allows; any column where none."""
    return np.lexsort((np.where(mask, start, np.inf), np.where(mask, price, np.inf)), axis=1)[:, 0]


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
