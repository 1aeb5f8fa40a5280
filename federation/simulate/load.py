"""A loaded federation, in simulated time, and how long jobs wait by their size.

The load is steady and stated: FGD's method draws the list's tasks at random (with replacement,
seeded) and here they arrive as a Poisson process whose rate makes the offered GPU load a stated
share of the busiest GPUs (say 70%, 90%, 110%; `steady`): the GPU-seconds the jobs ask inside the
arrival window (work that would run past its end not counted) over the GPU-seconds the GPUs hold
in it, a job counting against the nodes its ask fits on. The trace's own arrival times are bursty
(the default list's last quarter arrives in one burst after a quiet spell): compressing them to
any share fills the federation only during the burst. A list without times takes run times
drawn from the default list's, by job size (`timed_like`). FGD's workload (`policies.fgd.Demand`)
is the list's asks.

- `ours`: `policies.schedule` over every site, as the federation runs it: whatever fits starts.
- `ours-reserve`: the same with backfill (`policies.backfill`, depth DEPTH): the first jobs that
  cannot start reserve the site where they start soonest, the jobs behind them start there only if
  they end before or take what the reservation will not need, and GPU jobs go to the nodes they
  keep busy no longer than their other work (`policies.drain`).
- `fifo-per-site`: each job goes to its tenant's site (or where its data must stay) and each site
  starts its jobs strictly first come, first served: the first that does not fit holds back the
  ones behind it.

Every job declares a time limit of its run time (an exact estimate: users who ask for more
make reservations later, not wrong). Cycles run at each arrival and end, at most once a simulated
minute. The measures: GPU utilisation while jobs arrive, queueing delay (start - arrival) at p50,
p95, p99 overall and by the GPUs a job asks, and the largest jobs' worst wait.
"""
from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

import policies
from federation.collector import paused_gc
from federation.simulate.engine import catalog_of, snapshot_of
from federation.simulate.trace import SimJob, Workload
from federation.spec.server import BACKFILL_DEPTH
from policies.fgd import Demand
from policies.gpu_state import GpuState
from policies.gpus import MILLI, Binding, GpuNode, GpuRequest, Inventory
from policies.preemption import Running

STRATEGIES = ("ours", "ours-reserve", "fifo-per-site")
DEPTH = BACKFILL_DEPTH
SIZES = ("cpu", "share", "1", "2-4", "8+")   # by the GPUs a job asks
WAIT = frozenset({policies.Reason.NO_FREE_CAPACITY, policies.Reason.FRAGMENTED, policies.Reason.RESERVED})


@dataclass
class LoadOutcome:
    strategy: str
    waits: dict[str, list[float]] = field(default_factory=dict)   # size -> queueing delays of started jobs
    gpu_seconds: float = 0.0
    span: float = 0.0
    total_gpus: int = 0
    never_started: int = 0


def size_of(j: SimJob) -> str:
    g = j.gpu.whole if j.gpu else 0.0
    return "cpu" if g == 0 else "share" if g < 1 else "1" if g == 1 else "2-4" if g <= 4 else "8+"


@dataclass
class _Cluster:
    state: GpuState
    used_cpus: np.ndarray
    running: np.ndarray
    live: dict[str, tuple[SimJob, int, Binding, float]] = field(default_factory=dict)
    ends: list[tuple[float, str]] = field(default_factory=list)

    def start(self, job: SimJob, i: int, binding: Binding, t: float) -> None:
        if binding:
            self.state.reserve(i, binding)
        self.used_cpus[i] += job.cpus
        self.running[i] += 1
        self.live[job.id] = (job, i, binding, t)
        heapq.heappush(self.ends, (t + job.duration, job.id))

    def finish_until(self, t: float) -> None:
        while self.ends and self.ends[0][0] <= t:
            _, jid = heapq.heappop(self.ends)
            job, i, binding, _ = self.live.pop(jid)
            self.state.reserve(i, binding, +1)
            self.used_cpus[i] -= job.cpus
            self.running[i] -= 1


@dataclass(frozen=True)
class Steady:
    jobs: list[SimJob]
    gap: float        # mean seconds between arrivals
    load: float       # offered to the busiest GPUs: `load` asked, less when even all jobs at once offer less
    on_all: float     # offered to all GPUs
    busiest: int      # how many GPUs the busiest are


def steady(jobs: Sequence[SimJob], nodes: Sequence[GpuNode], load: float, draws: int, seed: int) -> Steady:
    """`draws` jobs drawn from `jobs`, arriving as a Poisson process at the rate that offers `load`
    to the busiest GPUs of `nodes` (a bisection on the mean gap). GPUs are busiest by the work only
    they can run: a job counts against the GPUs of the nodes its ask fits on (2-8 GPUs in one NVLink
    domain: the NVLink nodes alone), so no kind of node is offered more than `load` while another
    idles; on a list where every ask fits most nodes, the busiest are all GPUs."""
    rng = np.random.default_rng(seed)
    picked = [jobs[int(k)] for k in rng.integers(0, len(jobs), draws)] if jobs else []
    size = np.array([j.gpu.whole if j.gpu else 0.0 for j in picked])
    run_s = np.array([j.duration for j in picked])
    unit = np.cumsum(np.concatenate([[0.0], rng.exponential(1.0, max(0, draws - 1))]))[:draws]
    span = float(unit[-1]) if draws else 0.0
    held = _held(nodes, [j.gpu for j in picked])

    def offered(gap: float) -> np.ndarray:
        asked = size * np.minimum(run_s, gap * (span - unit))
        return np.array([float(asked[mask].sum()) / (gpus * gap * span) if span else 0.0 for gpus, mask in held])
    lo, hi = 1e-6, 1e9
    for _ in range(100):
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if offered(mid).max() > load else (lo, mid)
    out = [replace(j, id=f"{j.id}#{k}", arrival=float(unit[k] * hi)) for k, j in enumerate(picked)]
    loads = offered(hi)
    return Steady(out, hi, float(loads.max()), float(loads[0]), held[int(loads.argmax())][0])


def _held(nodes: Sequence[GpuNode], asks: Sequence[GpuRequest | None]) -> list[tuple[int, np.ndarray]]:
    """(GPUs, which asks count against them) for all GPUs first, then for the nodes each distinct ask
    fits on when empty, with every ask that fits only within them."""
    kinds: dict[tuple, list[GpuNode]] = {}
    for n in nodes:   # nodes alike in model, memory and NVLink domains fit the same asks
        shape = tuple(sorted(Counter(d or f"alone{i}" for i, d in enumerate(n.domains)).values()))
        kinds.setdefault((n.model, n.memory, shape), []).append(n)
    fits = {a: frozenset(k for k, alike in kinds.items() if GpuState([Inventory((alike[0],))]).fit(0, a)[0])
            for a in set(asks) if a is not None}
    everything = frozenset(kinds)
    within = [fits.get(a, frozenset()) or everything if a is not None else frozenset() for a in asks]
    out = [(sum(n.gpus for n in nodes), np.array([a is not None for a in asks], dtype=bool))]
    for kind_set in sorted(set(fits.values()) - {everything, frozenset()}, key=sorted):
        gpus = sum(n.gpus for k in kind_set for n in kinds[k])
        out.append((gpus, np.array([bool(w) and w <= kind_set for w in within], dtype=bool)))
    return out


def timed_like(jobs: Sequence[SimJob], reference: Sequence[SimJob], seed: int) -> list[SimJob]:
    """`jobs` with run times drawn from those of `reference`'s jobs of the same size."""
    rng = np.random.default_rng(seed)
    by_size: dict[str, list[float]] = {}
    for j in reference:
        by_size.setdefault(size_of(j), []).append(j.duration)
    every = [d for ds in by_size.values() for d in ds]
    return [replace(j, duration=float(rng.choice(by_size.get(size_of(j)) or every))) for j in jobs]


def run(w: Workload, rules: policies.Rules, strategy: str, cycle_s: float = 60.0) -> LoadOutcome:
    total = int(sum(s.inventory.gpus for s in w.sites))
    out = LoadOutcome(strategy, total_gpus=total)
    cluster = _Cluster(GpuState([s.inventory for s in w.sites]), np.zeros(len(w.sites)), np.zeros(len(w.sites)))
    cluster.state.demand = Demand.of(j.gpu for j in w.jobs)   # FGD's workload, as the control plane's live jobs
    catalog, index = catalog_of(w), {s.name: i for i, s in enumerate(w.sites)}
    homes = _homes(w) if strategy == "fifo-per-site" else {}
    views = {j.id: _view(j, homes.get(j.id, "")) for j in w.jobs}
    backfill = policies.BackfillSettings(DEPTH) if strategy == "ours-reserve" else None
    pending: dict[str, SimJob] = {}
    jobs, k, last = list(w.jobs), 0, -float("inf")
    t = t0 = jobs[0].arrival if jobs else 0.0
    arrived = jobs[-1].arrival if jobs else 0.0
    while k < len(jobs) or cluster.ends:
        nxt = max(min(jobs[k].arrival if k < len(jobs) else float("inf"),
                      cluster.ends[0][0] if cluster.ends else float("inf")), last + cycle_s)
        if t < arrived:
            out.gpu_seconds += (total - float(cluster.state.free.sum()) / MILLI) * (min(nxt, arrived) - t)
        t = last = nxt
        cluster.finish_until(t)
        while k < len(jobs) and jobs[k].arrival <= t:
            pending[jobs[k].id] = jobs[k]
            k += 1
        if not pending:
            continue
        snapshot = replace(snapshot_of(w, cluster.state, cluster.used_cpus, cluster.running, rules, catalog),
                           running=tuple(Running(views[j.id], 1, i, b, "", s) for j, i, b, s in cluster.live.values()),
                           backfill=backfill)
        with paused_gc():
            decisions = (_fifo(snapshot, [views[j] for j in pending], t) if homes
                         else policies.schedule(snapshot, [views[j] for j in pending], t).decisions)
        for d in decisions:
            job = pending.pop(d.job_id)
            cluster.start(job, index[d.site], d.binding, t)
            out.waits.setdefault(size_of(job), []).append(t - job.arrival)
        if k >= len(jobs) and not cluster.ends:
            break   # what is left can never start
    out.never_started = len(pending)
    out.span = arrived - t0
    return out


def _fifo(snapshot: policies.Snapshot, waiting: list[policies.PendingJob], t: float) -> list[policies.Decision]:
    """Each site's jobs strictly in arrival order: the first that cannot start holds the rest back."""
    out: list[policies.Decision] = []
    gpus = snapshot.gpus.copy() if snapshot.gpus is not None else None   # the cluster's own is taken on start
    snapshot = replace(snapshot, gpus=gpus)
    by_site: dict[str, list[policies.PendingJob]] = {}
    for job in sorted(waiting, key=lambda j: (j.submitted_at, j.id)):
        by_site.setdefault(job.sites[0], []).append(job)
    for queue in by_site.values():
        for job in queue:
            result = policies.schedule(snapshot, [job], t)
            if not result.decisions:
                if result.unplaced[0].reasons[0] in WAIT:
                    break
                continue   # it can never start at its site: a FIFO scheduler would refuse it, not wait on it
            d = result.decisions[0]
            out.append(d)
            i = snapshot.sites.index(next(s for s in snapshot.sites if s.name == d.site))
            if d.binding and gpus is not None:
                gpus.reserve(i, d.binding)
            sites = list(snapshot.sites)
            sites[i] = replace(sites[i], used_cpus=sites[i].used_cpus + job.cpus)
            snapshot = replace(snapshot, sites=tuple(sites))
    return out


def _homes(w: Workload) -> dict[str, str]:
    """Each job's site under per-site FIFO: its tenant's, unless its data must be processed elsewhere."""
    names = [s.name for s in w.sites]
    out = {}
    for j in w.jobs:
        home = names[sum(map(ord, j.tenant)) % len(names)]
        held = set().union(*(w.datasets[d][1] for d in j.datasets)) if j.datasets else set()
        out[j.id] = home if not held or home in held else sorted(held)[0]
    return out


def _view(j: SimJob, home: str) -> policies.PendingJob:
    return policies.PendingJob(id=j.id, tenant=j.tenant, datasets=j.datasets, cpus=j.cpus, memory=0.0,
                               gpus=j.gpu.whole if j.gpu else 0.0, submitted_at=j.arrival, gpu=j.gpu,
                               sites=(home,) if home else (), time_limit=j.duration)


def summary(o: LoadOutcome) -> dict:
    every = [w for ws in o.waits.values() for w in ws]

    def pct(values: list[float]) -> dict[str, float]:
        a = np.array(values) if values else np.zeros(1)
        return {p: round(float(np.percentile(a, q)), 1) for p, q in (("p50", 50), ("p95", 95), ("p99", 99))}
    return {"strategy": o.strategy,
            "gpu_utilisation": round(o.gpu_seconds / o.span / o.total_gpus, 4) if o.span and o.total_gpus else None,
            "started": len(every), "never_started": o.never_started, "queue_delay_s": pct(every),
            "by_size": {name: {"jobs": len(o.waits.get(name, [])), **pct(o.waits.get(name, []))} for name in SIZES},
            "largest_jobs_max_delay_s": round(max(o.waits.get("8+", [0.0])), 1)}


def ratios(rows: Sequence[dict]) -> dict[str, dict[str, float]]:
    """With reservations against without and against per-site FIFO: the largest jobs' p99 wait and
    the utilisation given up for it."""
    by = {r["strategy"]: r for r in rows}
    ours = by.get("ours-reserve")
    out: dict[str, dict[str, float]] = {}
    for name in ("ours", "fifo-per-site"):
        other = by.get(name)
        if ours is None or other is None:
            continue
        entry: dict[str, float] = {
            "utilisation_points": round(100 * ((ours["gpu_utilisation"] or 0) - (other["gpu_utilisation"] or 0)), 2)}
        if other["by_size"]["8+"]["p99"]:
            entry["p99_delay_8plus"] = round(ours["by_size"]["8+"]["p99"] / other["by_size"]["8+"]["p99"], 3)
        out[f"ours-reserve/{name}"] = entry
    return out
