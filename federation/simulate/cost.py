"""`fedctl simulate --mode cost`: an on-prem site and two elastic cloud regions in simulated time,
and what each way of placing jobs buys.

Sites (`sites_for`): `onprem-de` (DE) holds one in every k of the trace's GPU nodes
(k = 1 / onprem_share), paid for whether used or not: its amortised price times its capacity
times the simulated span is sunk and reported apart. `cloud-eu` (FR) and `cloud-us` (US)
start nodes on demand: a CPU, a 4 x T4 (no NVLink) and an 8 x V100 (one NVLink domain) node
type, each on-demand and spot; EU prices `eu_markup` above US, spot at `spot_ratio` of
on-demand; a node is ready `start_delay` after it is asked for (spot a third later), billed
from the ask until it is released `idle_timeout` after its last job, or until a spot
interruption (exponential, `spot_rate` per node-hour, seeded) takes it and sends its jobs
back to the queue. A job that checkpoints (a seeded `checkpoint_share`; those accept spot)
resumes from its last checkpoint, one that does not from zero. A seeded `gdpr_share` of jobs
reads GDPR data held on-prem and in the EU cloud: they may run only there.

Every strategy runs the same loop (arrivals, a scheduling cycle every `cycle_s` at most
while anything changed, nodes starting, jobs ending, idle nodes released, spot nodes lost);
only the choice differs. `ours` is `policies.schedule` (optimize time), `ours-cost` the same
with every job asking to optimize cost, `onprem-only` the same with only the on-prem site;
`cheapest-first` and `spill-over` are in `cost_baselines`. A job the choice puts on a new
node joins a node of that type still starting if it has room (as Ray's autoscaler packs
pending demand), else a node is started. Each placement is re-checked against the data
rules by an auditor independent of the placement code. Queueing delay = end - arrival -
recorded duration: waiting, node starts, and work redone after an interruption.
"""
from __future__ import annotations

import heapq
import math
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import policies
from federation.collector import paused_gc
from federation.simulate.cost_baselines import CHOOSERS, Chooser
from federation.simulate.cost_setup import (
    CATALOG,
    GDPR,
    ONPREM,
    RULES,
    SHAPES,
    Bill,
    CostConfig,
    CostJob,
    CostOutcome,
    CostSite,
    CostWorkload,
    pending_job,
    sites_for,
)
from policies.gpu_state import GpuState
from policies.gpus import MILLI, Binding, GpuNode, Inventory, Slot
from policies.pricing import NEVER, Elastic, NodeType


class _Node:
    """A cloud node: asked for at `launched`, ready at `ready_at`, gone at `end`."""

    def __init__(self, name: str, site: int, t: NodeType, price: float, launched: float, nvlink: bool) -> None:
        self.name, self.site, self.type, self.price, self.launched = name, site, t, price, launched
        self.ready_at, self.ready = launched + t.start_s, False
        self.end: float | None = None
        self.free = [MILLI] * t.gpus
        self.free_cpus = float(t.cpus)
        self.jobs: set[str] = set()
        self.waiting: list[_Run] = []
        self.idle_stamp = 0
        self.inv = GpuNode(name, t.gpu_model, int(t.gpu_memory), (f"{name}/nv" if nvlink else "",) * t.gpus,
                           spot=t.spot)

    def room(self, j: CostJob) -> Binding | None:
        """The GPUs `j` would take here (first fit; shares packed onto a shared GPU first); None: no room."""
        if self.free_cpus < j.cpus - 1e-9:
            return None
        if j.gpu is None:
            return ()
        if j.gpu.count:
            picks = [g for g, f in enumerate(self.free) if f == MILLI][: j.gpu.count]
            return (Slot(self.name, tuple(picks)),) if len(picks) == j.gpu.count else None
        fits = sorted((f == MILLI, g) for g, f in enumerate(self.free) if f >= j.gpu.share)
        return (Slot(self.name, (fits[0][1],), j.gpu.share),) if fits else None

    def hold(self, binding: Binding, cpus: float, sign: int = -1) -> None:
        self.free_cpus += sign * cpus
        for slot in binding:
            for g in slot.gpus:
                self.free[g] += sign * slot.milli


@dataclass(eq=False)
class _Run:
    job: CostJob
    pending: policies.PendingJob
    left: float
    attempt: int = 0
    start: float | None = None
    site: int = -1
    node: _Node | None = None
    binding: Binding = ()


ARRIVE, FINISH, READY, INTERRUPT, IDLE, CYCLE = range(6)   # order of events at one instant


class _Sim:
    def __init__(self, w: CostWorkload, strategy: str, cfg: CostConfig,
                 sites: Sequence[CostSite] | None = None) -> None:
        self.cfg, self.strategy = cfg, strategy
        self.sites = tuple(sites) if sites is not None else sites_for(w, cfg, clouds=strategy != "onprem-only")
        self.index = {s.view.name: i for i, s in enumerate(self.sites)}
        self.choose: Chooser = CHOOSERS.get(strategy) or (lambda s, p, t: policies.schedule(s, p, t).decisions)
        cost = strategy == "ours-cost"
        self.runs = {j.id: _Run(j, pending_job(j, cost), j.duration) for j in w.jobs}
        self.out = CostOutcome(strategy, len(w.jobs))
        self.rng = random.Random(cfg.seed)
        self.events: list[tuple[float, int, int, Any]] = []
        self.seq = 0
        self.pending: dict[str, _Run] = {}
        self.nodes: list[dict[str, _Node]] = [{} for _ in self.sites]   # alive (starting or ready) per site
        self.launched = [0] * len(self.sites)
        self.used = [0.0] * len(self.sites)
        self.running = [0] * len(self.sites)
        self.bound: dict[str, tuple[int, Binding]] = {}
        self.state: GpuState | None = None
        self.changed, self.cycle_at = False, -1.0
        self.last_end = 0.0

    def push(self, t: float, kind: int, what: Any) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, kind, self.seq, what))

    def run(self) -> CostOutcome:
        started = time.perf_counter()
        for r in self.runs.values():
            self.push(r.job.arrival, ARRIVE, r)
        t = 0.0
        while self.events:
            t, kind, _, what = heapq.heappop(self.events)
            if kind == CYCLE:
                self.cycle(t)
            elif kind == ARRIVE:
                self.pending[what.job.id] = what
                self.changed = True
            elif kind == FINISH:
                self.finish(what[0], what[1], t)
            elif kind == READY:
                self.ready(what, t)
            elif kind == INTERRUPT:
                self.interrupt(what, t)
            elif kind == IDLE and what[0].end is None and not what[0].jobs and what[1] == what[0].idle_stamp:
                self.release(what[0], t)
            if self.changed and self.pending and self.cycle_at < t:
                c = self.cfg.cycle_s
                self.cycle_at = math.ceil(t / c) * c if c > 0 else t
                self.push(self.cycle_at, CYCLE, None)
        for site in self.nodes:     # none should be left: idle nodes are released
            for node in list(site.values()):
                self.release(node, t)
        o = self.out
        o.span = self.last_end
        s = self.sites[0]
        if s.view.name == ONPREM and s.view.pricing is not None:
            o.onprem_cost = s.view.pricing.on_demand.hourly(s.view.cpus, 0.0, 0.0) * o.span / 3600 + sum(
                s.view.pricing.on_demand.hourly(0.0, 0.0, n.gpus, n.model) for n in s.nodes) * o.span / 3600
        o.wall_s = time.perf_counter() - started
        return o

    # ------------------------------------------------------------ the cycle

    def snapshot(self) -> policies.Snapshot:
        if self.state is None:
            self.state = GpuState([Inventory(s.nodes if not s.types else tuple(
                n.inv for n in self.nodes[i].values() if n.ready)) for i, s in enumerate(self.sites)])
            for i, binding in self.bound.values():
                if binding:
                    self.state.reserve(i, binding)
        views = []
        for i, s in enumerate(self.sites):
            v = replace(s.view, used_cpus=self.used[i], running=self.running[i])
            if s.types:
                ready = [n.type for n in self.nodes[i].values() if n.ready]
                up = Counter(n.type.name for n in self.nodes[i].values())
                v = replace(v, cpus=float(sum(t.cpus for t in ready)), memory=float(sum(t.memory for t in ready)),
                            gpus=float(sum(t.gpus for t in ready)),
                            elastic=Elastic(s.types, self.cfg.idle_timeout, dict(up)))
            views.append(v)
        return policies.Snapshot(tuple(views), CATALOG, RULES, self.state)

    def cycle(self, t: float) -> None:
        self.changed = False
        if not self.pending:
            return
        self.out.cycles += 1
        with paused_gc():
            decisions = self.choose(self.snapshot(), [r.pending for r in self.pending.values()], t)
        for d in decisions:
            self.apply(d, t)

    def apply(self, d: policies.Decision, t: float) -> None:
        r = self.pending.get(d.job_id)
        if r is None:
            return
        i = self.index[d.site]
        site = self.sites[i]
        if not d.node_type:
            node = self.cloud_node(i, d.binding, r.job, r.pending.spot != NEVER) if site.types else None
            binding = d.binding
        else:
            t_ = next(x for x in site.types if x.name == d.node_type)
            node = next((n for n in self.nodes[i].values()
                         if n.type is t_ and not n.ready and n.room(r.job) is not None), None)
            if node is None:
                if sum(n.type is t_ for n in self.nodes[i].values()) >= t_.max:
                    return          # no room to grow after all: it stays pending
                node = self.launch(i, t_, t)
            binding = node.room(r.job) or ()
        del self.pending[d.job_id]
        self.audit(r.job, i, node, binding)
        if site.types:
            self.out.to_cloud += 1
            self.out.to_cloud_onprem_fits += self.onprem_fits(r)
            self.out.spot_unasked += node is not None and node.type.spot and r.pending.spot == NEVER
        if node is not None:
            node.hold(binding, r.job.cpus)
            node.jobs.add(r.job.id)
        r.site, r.node, r.binding = i, node, binding
        if node is not None and not node.ready:
            node.waiting.append(r)
        else:
            self.start(r, t)

    def onprem_fits(self, r: _Run) -> bool:
        """Whether the job could have started on-prem at this point of the cycle."""
        if self.sites[0].types or self.state is None or self.used[0] + r.job.cpus > self.sites[0].view.cpus + 1e-9:
            return False
        if r.job.gpu is None:
            return True
        return self.state.fit(0, r.job.gpu)[0] is not None

    def cloud_node(self, i: int, binding: Binding, j: CostJob, spot: bool) -> _Node | None:
        """The ready node a job placed on a cloud site's capacity runs on: its GPUs', or for a CPU job the
        node with most free CPUs (CPU nodes first; on-demand ones for a job that refuses spot, as the
        agent's label selector asks of Ray); None for a job that holds nothing where nothing is up."""
        nodes = self.nodes[i]
        if binding:
            return nodes[binding[0].node]
        ready = [n for n in nodes.values() if n.ready and (spot or not n.type.spot)]
        return max(ready, key=lambda n: (n.free_cpus >= j.cpus, not n.type.gpus, n.free_cpus), default=None)

    def audit(self, j: CostJob, i: int, node: _Node | None, binding: Binding) -> None:
        """Independent of the placement code: the job's data may be processed at the site (its
        classification allows the site's jurisdiction, and the site holds the data or it may be
        staged), and GPUs it wants in one NVLink domain are in one."""
        site = self.sites[i].view
        for name in (GDPR,) if j.gdpr else ():
            info = CATALOG[name]
            rule = RULES.classifications[info.classification]
            allowed = rule.allowed_jurisdictions
            if (allowed is not None and site.jurisdiction not in allowed) or \
                    (site.name not in info.sites and not rule.allow_staging):
                self.out.violations += 1
                break
        if j.gpu is not None and j.gpu.nvlink == "required" and j.gpu.count > 1:
            by_name = {n.name: n for n in self.sites[i].nodes} | ({node.name: node.inv} if node else {})
            doms = {by_name[s.node].domains[g] for s in binding for g in s.gpus if s.node in by_name}
            self.out.nvlink_misses += len(doms) != 1 or "" in doms

    # ------------------------------------------------------------ jobs and nodes

    def start(self, r: _Run, t: float) -> None:
        r.start = t
        r.attempt += 1
        self.used[r.site] += r.job.cpus
        self.running[r.site] += 1
        self.bound[r.job.id] = (r.site, r.binding)
        if self.state is not None and r.binding:
            self.state.reserve(r.site, r.binding)
        self.push(t + r.left, FINISH, (r.job.id, r.attempt))

    def stop(self, r: _Run, t: float) -> None:
        """`r` stops running (ended, or its node is gone): what it held is free again."""
        if r.start is not None:
            name = self.sites[r.site].view.name
            self.out.gpu_hours_used[name] = self.out.gpu_hours_used.get(name, 0.0) + r.job.whole * (t - r.start) / 3600
            self.used[r.site] -= r.job.cpus
            self.running[r.site] -= 1
            del self.bound[r.job.id]
            if self.state is not None and r.binding:
                self.state.reserve(r.site, r.binding, +1)
        node = r.node
        if node is not None:
            node.hold(r.binding, r.job.cpus, +1)
            node.jobs.discard(r.job.id)
            if not node.jobs and node.end is None:
                node.idle_stamp += 1
                self.push(t + self.cfg.idle_timeout, IDLE, (node, node.idle_stamp))
        r.start, r.node, r.binding = None, None, ()
        self.changed = True

    def finish(self, job_id: str, attempt: int, t: float) -> None:
        r = self.runs[job_id]
        if r.attempt != attempt or r.start is None:
            return      # an attempt lost to an interruption
        self.stop(r, t)
        self.out.done += 1
        self.out.delays.append(t - r.job.arrival - r.job.duration)
        self.last_end = max(self.last_end, t)

    def launch(self, i: int, t_: NodeType, t: float) -> _Node:
        site = self.sites[i].view
        assert site.pricing is not None
        rates = site.pricing.spot if t_.spot and site.pricing.spot else site.pricing.on_demand
        self.launched[i] += 1
        nvlink = next(s[5] for s in SHAPES if t_.name.startswith(s[0] + "-"))
        node = _Node(f"{site.name}:{t_.name}:{self.launched[i]}", i, t_,
                     rates.hourly(t_.cpus, 0.0, t_.gpus, t_.gpu_model), t, nvlink)
        self.nodes[i][node.name] = node
        self.push(node.ready_at, READY, node)
        if t_.spot and self.cfg.spot_rate > 0:
            self.push(t + self.rng.expovariate(self.cfg.spot_rate) * 3600, INTERRUPT, node)
        return node

    def ready(self, node: _Node, t: float) -> None:
        if node.end is not None:
            return
        node.ready, self.state, self.changed = True, None, True
        for r in node.waiting:
            self.start(r, t)
        node.waiting = []

    def interrupt(self, node: _Node, t: float) -> None:
        if node.end is not None:
            return
        self.out.interruptions += 1
        every = self.cfg.checkpoint_every
        for job_id in list(node.jobs):
            r = self.runs[job_id]
            if r.start is not None:
                ran = t - r.start
                kept = math.floor(ran / every) * every if r.job.checkpoint and every > 0 else 0.0
                r.left -= kept
                self.out.lost_gpu_hours += r.job.whole * (ran - kept) / 3600
            self.stop(r, t)
            r.attempt += 1      # its pending end is void
            self.pending[job_id] = r
            self.out.requeued += 1
        node.waiting = []
        self.release(node, t)

    def release(self, node: _Node, t: float) -> None:
        node.end = t
        del self.nodes[node.site][node.name]
        if node.ready:
            self.state = None
        self.changed = True
        bill = Bill(self.sites[node.site].view.name, node.type.name, node.launched, t, node.price, node.type.gpus)
        self.out.bills.append(bill)
        self.out.cloud_spend += bill.cost
        self.out.gpu_hours_bought += (t - node.launched) / 3600 * node.type.gpus


def run(w: CostWorkload, strategy: str, cfg: CostConfig, sites: Sequence[CostSite] | None = None) -> CostOutcome:
    return _Sim(w, strategy, cfg, sites).run()
