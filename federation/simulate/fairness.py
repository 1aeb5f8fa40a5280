"""Many tenants on one federation, in simulated time: how fair, how long the wait, how much stopped.

Three ways to run the same workload:
- `federated`: ours. One fair share across every site (a queue per tenant, each owed an
  equal part of all GPUs), any site the job's data allows, reclaim by preemption.
- `fair-per-site`: each site runs fair share among its own tenants only (a tenant owns a
  home site and its jobs go there, or where their data must be), with the same reclaim.
- `fifo-per-site`: each site first come, first served, for its own tenants.
Tenants are drawn with a fixed seed and skewed (tenant k gets weight 1/(k+1)), so a few
submit most of the work. Arrivals are compressed to a stated peak load so there is
contention at the busiest times. The measures: Jain's index of each tenant's GPU time over its entitlement (the
equal split of the GPU time used, water-filled: a tenant that asked for less is entitled to
what it asked), mean and p99 queueing delay (finish - arrival - run time, so work lost to
preemption counts as waiting), and preemptions. Scheduling cycles run once a simulated minute.
"""
from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

import policies
from federation.collector import paused_gc
from federation.simulate.engine import catalog_of, snapshot_of
from federation.simulate.trace import SimJob, Workload
from policies.fairshare import Queue, Queues, Usage
from policies.gpu_state import GpuState
from policies.gpus import Binding
from policies.preemption import Running, Settings

STRATEGIES = ("federated", "fair-per-site", "fifo-per-site")
TENANTS = 8


@dataclass
class FairOutcome:
    strategy: str
    received: dict[str, float] = field(default_factory=dict)   # GPU-seconds per tenant
    asked: dict[str, float] = field(default_factory=dict)
    delays: list[float] = field(default_factory=list)
    preemptions: int = 0
    finished: int = 0
    unfinished: int = 0
    span: float = 0.0
    jain_samples: list[tuple[float, float]] = field(default_factory=list)   # (seconds it held, Jain's index)


def skewed_tenants(jobs: Sequence[SimJob], seed: int, tenants: int = TENANTS) -> list[SimJob]:
    rng = random.Random(seed)
    weights = [1 / (k + 1) for k in range(tenants)]
    names = [f"tenant-{k}" for k in range(tenants)]
    return [replace(j, tenant=rng.choices(names, weights)[0]) for j in jobs]


def smaller(w: Workload, keep_every: int) -> Workload:
    """The same sites with one GPU node in `keep_every` (the trace asks for fewer GPUs than it has)."""
    sites = tuple(replace(s, inventory=replace(s.inventory, nodes=s.inventory.nodes[::keep_every]),
                          cpus=s.cpus / keep_every, memory=s.memory / keep_every) for s in w.sites)
    return replace(w, sites=sites)


def compressed(jobs: Sequence[SimJob], gpus: int, load: float) -> tuple[list[SimJob], float, float]:
    """Arrivals divided (durations kept) until the most GPUs asked at once, were every job started
    on arrival, are `load` times `gpus` (a bisection on the divisor); the jobs, the divisor, and the
    load reached (less than `load` when even all jobs at once ask for less)."""
    t0 = min(j.arrival for j in jobs)
    arrive = np.array([j.arrival - t0 for j in jobs])
    size = np.array([j.gpu.whole if j.gpu else 0.0 for j in jobs])
    last = np.array([j.duration for j in jobs])

    def peak(speedup: float) -> float:
        start = arrive / speedup
        times = np.concatenate([start, start + last])
        steps = np.concatenate([size, -size])
        order = np.lexsort((steps, times))   # at equal times, ends before starts
        return float(np.cumsum(steps[order]).max(initial=0.0))

    lo, hi = 1.0, 1e7
    for _ in range(50):
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if peak(mid) < load * gpus else (lo, mid)
    return [replace(j, arrival=t0 + (j.arrival - t0) / hi) for j in jobs], hi, peak(hi) / gpus


def jain(values: Sequence[float]) -> float:
    x = np.asarray(values, dtype=float)
    return float(x.sum() ** 2 / (len(x) * (x ** 2).sum())) if len(x) and (x ** 2).sum() > 0 else 1.0


def entitlements(asked: dict[str, float], total: float) -> dict[str, float]:
    """Equal shares of `total`, water-filled: what a tenant does not ask for goes to the others."""
    left, out = total, {}
    open_ = sorted(asked, key=lambda t: asked[t])
    while open_:
        share = left / len(open_)
        t = open_[0]
        if asked[t] <= share:
            out[t] = asked[t]
            left -= asked[t]
            open_.pop(0)
        else:
            for t in open_:
                out[t] = share
            break
    return out


@dataclass
class _Cluster:
    """What is held where while a fairness run goes on: GPUs, CPUs, the attempts running, when each ends."""
    out: FairOutcome
    state: GpuState
    used_cpus: np.ndarray
    running: np.ndarray
    # id -> job, site, binding, start, attempt
    live: dict[str, tuple[SimJob, int, Binding, float, int]] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    ends: list[tuple[float, str, int]] = field(default_factory=list)

    @classmethod
    def of(cls, w: Workload, out: FairOutcome) -> _Cluster:
        return cls(out, GpuState([s.inventory for s in w.sites]), np.zeros(len(w.sites)), np.zeros(len(w.sites)))

    def next_end(self) -> float:
        return self.ends[0][0] if self.ends else float("inf")

    def start(self, job: SimJob, i: int, binding: Binding, t: float) -> None:
        if binding:
            self.state.reserve(i, binding)
        self.used_cpus[i] += job.cpus
        self.running[i] += 1
        self.attempts[job.id] = self.attempts.get(job.id, 0) + 1
        self.live[job.id] = (job, i, binding, t, self.attempts[job.id])
        heapq.heappush(self.ends, (t + job.duration, job.id, self.attempts[job.id]))

    def stop(self, jid: str, now: float) -> SimJob:
        """Ends an attempt (finished or preempted) and credits its tenant with the GPU time it held."""
        job, i, binding, start, _ = self.live.pop(jid)
        self.state.reserve(i, binding, +1)
        self.used_cpus[i] -= job.cpus
        self.running[i] -= 1
        received = self.out.received
        received[job.tenant] = received.get(job.tenant, 0.0) + (job.gpu.whole if job.gpu else 0) * (now - start)
        return job

    def finish_until(self, t: float) -> None:
        while self.ends and self.ends[0][0] <= t:
            _, jid, attempt = heapq.heappop(self.ends)
            if jid in self.live and self.live[jid][4] == attempt:
                job = self.stop(jid, t)
                self.out.finished += 1
                self.out.delays.append(t - job.arrival - job.duration)

    def usage(self) -> dict[str, Usage]:
        """GPUs each tenant's queue holds now."""
        usage: dict[str, dict[str, float]] = {}
        for job, _, _, _, _ in self.live.values():
            u = usage.setdefault(job.tenant, {"gpus": 0.0})
            u["gpus"] += job.gpu.whole if job.gpu else 0.0
        return {q: Usage(running=u) for q, u in usage.items()}


def run(w: Workload, rules: policies.Rules, strategy: str, *, min_runtime: float = 600.0,
        budget: int = 10, cycle_s: float = 60.0) -> FairOutcome:
    """Scheduling cycles every `cycle_s` of simulated time (or at the next event, if later)."""
    tenants = sorted({j.tenant for j in w.jobs})
    home = {t: k % len(w.sites) for k, t in enumerate(tenants)}
    queues = _queues(w, tenants, home, strategy)
    settings = None if strategy == "fifo-per-site" else Settings(True, min_runtime, budget, True)
    catalog = catalog_of(w)
    index = {s.name: i for i, s in enumerate(w.sites)}
    view = _viewer(home, w, strategy)
    out = FairOutcome(strategy)
    for j in w.jobs:
        out.asked[j.tenant] = out.asked.get(j.tenant, 0.0) + (j.gpu.whole if j.gpu else 0.0) * j.duration
    cluster = _Cluster.of(w, out)
    pending: dict[str, SimJob] = {}
    jobs, k = list(w.jobs), 0
    t = jobs[0].arrival if jobs else 0.0
    t0 = t
    last = -float("inf")
    while k < len(jobs) or cluster.ends:
        t = max(min(jobs[k].arrival if k < len(jobs) else float("inf"), cluster.next_end()), last + cycle_s)
        last = t
        cluster.finish_until(t)
        while k < len(jobs) and jobs[k].arrival <= t:
            pending[jobs[k].id] = jobs[k]
            k += 1
        if not pending:
            continue
        waiting = [view(j) for j in pending.values()]
        running = tuple(Running(view(job), a, i, b, "", start) for job, i, b, start, a in cluster.live.values())
        snapshot = replace(snapshot_of(w, cluster.state, cluster.used_cpus, cluster.running, rules, catalog),
                           queues=replace(queues, usage=cluster.usage()), running=running, preemption=settings)
        with paused_gc():
            result = policies.schedule(snapshot, waiting, t)
        for d in result.decisions:
            cluster.start(pending.pop(d.job_id), index[d.site], d.binding, t)
        for p in result.preemptions:
            if p.job_id in cluster.live:
                pending[p.job_id] = cluster.stop(p.job_id, t)
                out.preemptions += 1
        nxt = max(last + cycle_s, min(jobs[k].arrival if k < len(jobs) else float("inf"), cluster.next_end()))
        if nxt < float("inf"):
            out.jain_samples.append((nxt - t, _instant_jain(cluster.live.values(), pending.values(), tenants)))
        if k >= len(jobs) and not cluster.ends and pending:
            break  # what is left can never start (its home site cannot hold it)
    out.unfinished = len(pending) + len(cluster.live)
    out.span = t - t0
    return out


def _viewer(home: dict[str, int], w: Workload, strategy: str) -> Callable[[SimJob], policies.PendingJob]:
    """A job's view for the scheduler; it never changes, so each is made once."""
    views: dict[str, policies.PendingJob] = {}

    def view(j: SimJob) -> policies.PendingJob:
        got = views.get(j.id)
        if got is None:
            got = views[j.id] = _view(j, home, w, strategy)
        return got
    return view


def _instant_jain(live, pending, tenants: list[str]) -> float:
    """Jain's index now over tenants that want GPUs: each one's GPUs over its water-filled equal share
    of the GPUs in use. 1.0 when nobody waits: without contention every allocation is fair."""
    held = dict.fromkeys(tenants, 0.0)
    want = dict.fromkeys(tenants, 0.0)
    for job, *_ in live:
        g = job.gpu.whole if job.gpu else 0.0
        held[job.tenant] += g
        want[job.tenant] += g
    waiting = False
    for job in pending:
        if job.gpu:
            want[job.tenant] += job.gpu.whole
            waiting = True
    if not waiting:
        return 1.0
    owed = entitlements({t: v for t, v in want.items() if v > 0}, sum(held.values()))
    return jain([held[t] / e for t, e in owed.items() if e > 0])


def summary(o: FairOutcome) -> dict:
    owed = entitlements({t: a for t, a in o.asked.items() if a > 0}, sum(o.received.values()))
    shares = {t: o.received.get(t, 0.0) / e for t, e in owed.items() if e > 0}
    delays = np.array(o.delays) if o.delays else np.zeros(1)
    weights = np.array([w for w, _ in o.jain_samples]) if o.jain_samples else np.ones(1)
    values = np.array([v for _, v in o.jain_samples]) if o.jain_samples else np.ones(1)
    over_time = float((weights * values).sum() / weights.sum()) if weights.sum() else 1.0
    return {"strategy": o.strategy, "jain_over_time": round(over_time, 4),
            "jain_gpu_share_vs_entitlement": round(jain(list(shares.values())), 4),
            "share_of_entitlement": {t: round(v, 3) for t, v in sorted(shares.items())},
            "queue_delay_s": {"mean": round(float(delays.mean()), 1),
                              "p99": round(float(np.percentile(delays, 99)), 1)},
            "preemptions": o.preemptions, "finished": o.finished, "unfinished": o.unfinished,
            "gpu_hours": round(sum(o.received.values()) / 3600, 1)}


def ratios(rows: Sequence[dict]) -> dict[str, dict[str, float]]:
    """Ours against each baseline: Jain's index (higher is fairer), delays (lower is better)."""
    ours = next((r for r in rows if r["strategy"] == "federated"), None)
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        if ours is None or r is ours:
            continue
        entry = {"jain_over_time": round(ours["jain_over_time"] / r["jain_over_time"], 3),
                 "jain_overall": round(ours["jain_gpu_share_vs_entitlement"] / r["jain_gpu_share_vs_entitlement"], 3)}
        for key in ("mean", "p99"):
            if r["queue_delay_s"][key]:
                entry[f"delay_{key}"] = round(ours["queue_delay_s"][key] / r["queue_delay_s"][key], 3)
        out[f"federated/{r['strategy']}"] = entry
    return out


def _queues(w: Workload, tenants: list[str], home: dict[str, int], strategy: str) -> Queues:
    gpus = [s.inventory.gpus for s in w.sites]
    if strategy == "federated":
        owed = {t: sum(gpus) / len(tenants) for t in tenants}
    else:
        at = [sum(1 for t in tenants if home[t] == i) for i in range(len(w.sites))]
        owed = {t: gpus[home[t]] / at[home[t]] for t in tenants}
    if strategy == "fifo-per-site":
        return Queues((Queue("default"),), {}, 0.0)
    return Queues(tuple(Queue(t, deserved={"gpus": owed[t]}) for t in tenants), {}, 0.0)


def _view(j: SimJob, home: dict[str, int], w: Workload, strategy: str) -> policies.PendingJob:
    sites: tuple[str, ...] = ()
    queue = "default" if strategy == "fifo-per-site" else j.tenant
    if strategy != "federated":
        # Its tenant's site, unless its data may only be processed where the data is.
        held = set().union(*(w.datasets[d][1] for d in j.datasets)) if j.datasets else set()
        sites = (w.sites[home[j.tenant]].name,) if not held or w.sites[home[j.tenant]].name in held else \
            (sorted(held)[0],)
    return policies.PendingJob(id=j.id, tenant=j.tenant, datasets=j.datasets, cpus=j.cpus, memory=0.0,
                               gpus=j.gpu.whole if j.gpu else 0.0, submitted_at=j.arrival, gpu=j.gpu,
                               sites=sites, queue=queue)
