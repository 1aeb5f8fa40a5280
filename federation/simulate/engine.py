"""Simulated time: arrivals, placements by a strategy, completions; nothing but the clock is fake.

The `topology` strategy is `policies.schedule` itself, fed the same Snapshot and GpuState
the federation builds. Every placement of every strategy is re-checked by an independent
auditor (GPU type, NVLink, site sovereignty) and counted as a violation if it breaks a rule.
"""
from __future__ import annotations

import heapq
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

import policies
from federation.simulate.baselines import strategies
from federation.simulate.metrics import Shapes, fragmentation
from federation.simulate.trace import SimJob, Workload
from policies.fgd import Demand
from policies.gpu_state import GpuState
from policies.gpus import MILLI, Binding, check_binding


@dataclass
class Sample:
    t: float
    used_gpus: float
    fragmented_gpus: float
    free_gpus: float
    pending: int
    never_placed: int = 0


@dataclass
class Outcome:
    strategy: str
    total_gpus: int
    placed: int = 0
    never_placed: int = 0
    violations: dict[str, int] = field(default_factory=dict)
    nvlink_required: int = 0
    nvlink_in_one_domain: int = 0
    waits: list[float] = field(default_factory=list)          # queueing delay of each GPU job placed
    samples: list[Sample] = field(default_factory=list)
    gpu_seconds_used: float = 0.0
    span: float = 0.0
    unallocated_at_full: float | None = None                   # inflation mode: GPUs left when demand = capacity
    violating_gpus: float = 0.0                                # GPUs held by placements that broke a rule
    decisions_per_s: float = 0.0


def catalog_of(w: Workload) -> dict[str, policies.DatasetInfo]:
    return {name: policies.DatasetInfo(name, cls, held) for name, (cls, held) in w.datasets.items()}


def snapshot_of(w: Workload, state: GpuState, used_cpus: np.ndarray, running: np.ndarray,
              rules: policies.Rules, catalog: dict[str, policies.DatasetInfo] | None = None) -> policies.Snapshot:
    sites = tuple(policies.SiteView(
        name=s.name, jurisdiction=s.jurisdiction, region=s.region, labels=s.labels, cpus=s.cpus, memory=s.memory,
        gpus=float(s.inventory.gpus), used_cpus=float(used_cpus[i]), running=int(running[i]))
        for i, s in enumerate(w.sites))
    return policies.Snapshot(sites, catalog_of(w) if catalog is None else catalog, rules, state)


def _pending(j: SimJob) -> policies.PendingJob:
    return policies.PendingJob(id=j.id, tenant=j.tenant, datasets=j.datasets, cpus=j.cpus, memory=0.0,
                               gpus=j.gpu.whole if j.gpu else 0.0, submitted_at=j.arrival, gpu=j.gpu)


class Auditor:
    """Checks each placement against the rules without the placement code's help."""

    def __init__(self, w: Workload, rules: policies.Rules) -> None:
        self.w = w
        self.rules = rules
        self.index = {s.name: i for i, s in enumerate(w.sites)}
        self.nodes = [{n.name: n for n in s.inventory.nodes} for s in w.sites]

    def check(self, job: SimJob, site: str, binding: Binding) -> str:
        s = self.w.sites[self.index[site]]
        for name in job.datasets:
            cls, held = self.w.datasets[name]
            rule = self.rules.classifications[cls]
            if rule.allowed_jurisdictions is not None and s.jurisdiction not in rule.allowed_jurisdictions:
                return "sovereignty"
            if any(s.labels.get(k) != v for k, v in rule.required_labels.items()):
                return "sovereignty"
            if site not in held and not rule.allow_staging:
                return "sovereignty"
        if job.gpu is not None:
            why = check_binding(s.inventory, job.gpu, binding)
            if why:
                return "nvlink" if "NVLink" in why else "gpu-type" if "GPU type" in why or "model" in why \
                    else "gpu-shape"
        return ""


@dataclass
class _Cluster:
    """What is held where while a replay runs: GPUs, CPUs, attempts, and when each job ends."""
    w: Workload
    state: GpuState
    used_cpus: np.ndarray
    running: np.ndarray
    index: dict[str, int]
    held: dict[str, tuple[int, Binding, float]] = field(default_factory=dict)
    ending: list[tuple[float, str]] = field(default_factory=list)

    @classmethod
    def of(cls, w: Workload) -> _Cluster:
        return cls(w, GpuState([s.inventory for s in w.sites]), np.zeros(len(w.sites)), np.zeros(len(w.sites)),
                   {s.name: i for i, s in enumerate(w.sites)})

    def hold(self, j: SimJob, site: str, binding: Binding, end: float | None) -> int:
        """Places `j` on `site`, to end at `end` (None: never); returns the site's index."""
        i = self.index[site]
        if binding:
            self.state.reserve(i, binding)
        self.used_cpus[i] += j.cpus
        self.running[i] += 1
        self.held[j.id] = (i, binding, j.cpus)
        if end is not None:
            heapq.heappush(self.ending, (end, j.id))
        return i

    def release_until(self, t: float) -> None:
        while self.ending and self.ending[0][0] <= t:
            _, jid = heapq.heappop(self.ending)
            i, binding, cpus = self.held.pop(jid)
            self.state.reserve(i, binding, +1)
            self.used_cpus[i] -= cpus
            self.running[i] -= 1


def run(w: Workload, rules: policies.Rules, strategy: str, *, inflation: bool = False, speedup: float = 1.0,
        samples: int = 300, seed: int = 7) -> Outcome:
    """Replay `w` in simulated time (arrivals divided by `speedup`, durations as recorded).
    With `inflation` (the FGD paper's method) jobs are drawn from the trace with replacement,
    never end, and get one try each, until the GPUs asked reach the cluster's GPUs."""
    place = strategies(Demand.of(j.gpu for j in w.jobs))[strategy]
    cluster = _Cluster.of(w)
    total = int(sum(s.inventory.gpus for s in w.sites))
    out = Outcome(strategy, total)
    audit = Auditor(w, rules)
    shapes = Shapes.of(w.jobs)
    catalog = catalog_of(w)
    pending: dict[str, SimJob] = {}
    jobs = inflate(w.jobs, total, seed) if inflation else [
        replace(j, arrival=j.arrival / speedup) for j in w.jobs]
    every = max(1, len(jobs) // samples)
    t0 = jobs[0].arrival if jobs else 0.0
    k, next_sample, busy, decided, last_t = 0, every, 0.0, 0, t0
    while k < len(jobs) or (cluster.ending and not inflation and pending):
        t = jobs[k].arrival if k < len(jobs) else cluster.ending[0][0]
        if cluster.ending and cluster.ending[0][0] <= t and not inflation:
            t = cluster.ending[0][0]
        out.gpu_seconds_used += (total - float(cluster.state.free.sum()) / MILLI) * (t - last_t)
        last_t = t
        if not inflation:
            cluster.release_until(t)
        if inflation:
            pending = {}
        while k < len(jobs) and jobs[k].arrival <= t:
            pending[jobs[k].id] = jobs[k]
            k += 1
        if not pending:
            continue
        started = time.perf_counter()
        result = place(snapshot_of(w, cluster.state, cluster.used_cpus, cluster.running, rules, catalog),
                       [_pending(j) for j in pending.values()], t)
        busy += time.perf_counter() - started
        decided += len(pending)
        for d in result.decisions:
            j = pending.pop(d.job_id)
            i = cluster.hold(j, d.site, d.binding, None if inflation else t + j.duration)
            _count_placement(out, audit, j, d, i, t)
        if inflation:
            out.never_placed += len(pending)
        if k >= next_sample:
            frag, free = fragmentation(cluster.state, shapes)
            out.samples.append(Sample(t, total - free, frag, free, len(pending), out.never_placed))
            next_sample += every
    if inflation:
        out.unallocated_at_full = float(cluster.state.free.sum()) / MILLI
    out.never_placed += 0 if inflation else len(pending)
    out.span = last_t - t0
    out.decisions_per_s = decided / busy if busy else 0.0
    return out


def _count_placement(out: Outcome, audit: Auditor, j: SimJob, d: policies.Decision, i: int, t: float) -> None:
    """Adds a placement at time `t` on site `i` to the outcome: any rule it broke, its wait, its NVLink shape."""
    out.placed += 1
    why = audit.check(j, d.site, d.binding)
    if why:
        out.violations[why] = out.violations.get(why, 0) + 1
        out.violating_gpus += j.gpu.whole if j.gpu else 0.0
    if j.gpu is not None:
        out.waits.append(t - j.arrival)
        if j.gpu.nvlink == "required" and j.gpu.count > 1:
            out.nvlink_required += 1
            nodes = audit.nodes[i]
            doms = {nodes[s.node].domains[g] for s in d.binding for g in s.gpus}
            out.nvlink_in_one_domain += len(doms) == 1 and "" not in doms


def inflate(jobs: Sequence[SimJob], total_gpus: int, seed: int) -> list[SimJob]:
    """Trace jobs drawn with replacement, one a second, until the GPUs they ask reach `total_gpus`."""
    rng = random.Random(seed)
    out: list[SimJob] = []
    asked = 0.0
    while asked < total_gpus and jobs:
        j = rng.choice(jobs)
        out.append(replace(j, id=f"{j.id}#{len(out)}", arrival=float(len(out))))
        asked += j.gpu.whole if j.gpu else 0.0
    return out


def run_all(w: Workload, rules: policies.Rules, strategies: Sequence[str], **kw) -> list[Outcome]:
    return [run(w, rules, s, **kw) for s in strategies]
