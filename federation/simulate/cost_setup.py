"""The cost simulation's world: its settings, jobs from the trace, the on-prem site and two cloud regions
(see `federation.simulate.cost`), and what a run returns."""
from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import policies
from federation.errors import ConfigError
from federation.simulate import fairness, trace
from policies.gpus import GpuNode, GpuRequest
from policies.pricing import ALLOW, NEVER, NodeType, Pricing, Rates

GiB = 2**30

ONPREM, EU, US = "onprem-de", "cloud-eu", "cloud-us"
GDPR = "eu-patients"
RULES = policies.Rules({"gdpr-personal": policies.ClassificationRule(policies.expand_jurisdictions(["EU"]))})
CATALOG = {GDPR: policies.DatasetInfo(GDPR, "gdpr-personal", frozenset({ONPREM, EU}))}
STRATEGIES = ("ours", "ours-cost", "onprem-only", "cheapest-first", "spill-over")
OURS = ("ours", "ours-cost")
# Cloud node shapes: (name, CPUs, GPUs, GPU model, GPU memory, one NVLink domain); models are the trace's.
SHAPES = (("cpu", 64, 0, "", 0, False), ("t4x4", 48, 4, "T4", 16 * GiB, False),
          ("v100x8", 96, 8, "V100M32", 32 * GiB, True))



@dataclass(frozen=True)
class CostConfig:
    onprem_share: float = 0.005       # of the trace's GPU nodes: one in every round(1 / share)
    onprem_gpu_hour: float = 0.60     # amortised purchase, power and staff, per GPU-hour
    onprem_cpu_hour: float = 0.01
    cpu_hour: float = 0.04            # cloud on-demand, US
    gpu_hour: Mapping[str, float] = field(default_factory=lambda: {"T4": 0.50, "V100M32": 3.40})
    spot_ratio: float = 0.33          # spot price / on-demand price
    eu_markup: float = 1.12           # EU prices / US prices
    start_delay: float = 180.0        # seconds from asking for an on-demand node to its first job; spot x 4/3
    idle_timeout: float = 600.0       # an idle cloud node is released after this
    max_nodes: int = 8                # per node type and region
    spot_rate: float = 0.05           # interruptions per spot node-hour
    checkpoint_share: float = 0.5     # of jobs; those accept spot
    checkpoint_every: float = 600.0
    gdpr_share: float = 0.3           # of jobs: read EU personal data
    jobs_cap: int = 2000              # the trace's last N jobs
    load: float = 2.0                 # arrivals compressed until the most GPUs asked at once are this x on-prem's
    speedup: float = 1.0              # and then divided by this
    cycle_s: float = 10.0             # at most one scheduling cycle per this many simulated seconds
    seed: int = 7


@dataclass(frozen=True)
class CostJob:
    id: str
    arrival: float
    duration: float
    cpus: float
    gpu: GpuRequest | None
    checkpoint: bool = False
    gdpr: bool = False

    @property
    def whole(self) -> float:
        return self.gpu.whole if self.gpu else 0.0


@dataclass(frozen=True)
class CostWorkload:
    onprem: tuple[GpuNode, ...]
    onprem_cpus: float
    jobs: tuple[CostJob, ...]
    rules: str


@dataclass(frozen=True)
class CostSite:
    view: policies.SiteView                # place and prices; capacity filled in each cycle
    nodes: tuple[GpuNode, ...] = ()        # on-prem: its fixed nodes
    types: tuple[NodeType, ...] = ()       # cloud: the nodes it may start


def from_trace(folder: Path, pods: str, cfg: CostConfig) -> CostWorkload:
    w = trace.alibaba(folder, pods, 1, cfg.seed)
    if not w.timed:
        raise ConfigError(f"--mode cost: the {pods} task list has no arrival times")
    nodes = w.sites[0].inventory.nodes
    k = max(1, round(1 / cfg.onprem_share)) if cfg.onprem_share > 0 else len(nodes) + 1
    chosen = nodes[::k] if cfg.onprem_share > 0 else ()
    jobs = w.jobs[-cfg.jobs_cap:] if cfg.jobs_cap > 0 else w.jobs
    t0 = jobs[0].arrival if jobs else 0.0
    gpus = sum(n.gpus for n in chosen)
    speedup, reached = 1.0, 0.0
    if cfg.load > 0 and gpus and jobs:
        _, speedup, reached = fairness.compressed(jobs, gpus, cfg.load)
    speedup *= cfg.speedup
    rng = random.Random(cfg.seed)
    out = []
    for j in jobs:
        gdpr, ckpt = rng.random() < cfg.gdpr_share, rng.random() < cfg.checkpoint_share
        out.append(CostJob(j.id, (j.arrival - t0) / speedup, j.duration, j.cpus, j.gpu, ckpt, gdpr))
    models = Counter(n.model for n in chosen)
    rules = (f"the Alibaba 2023 GPU trace ({pods}): its last {len(out)} tasks, arrivals from the first of them "
             f"divided by {speedup:.3g} (the most GPUs asked at once, were every job started on arrival: "
             f"{reached:.2f}x on-prem's {gpus}), durations as recorded (tasks still running at the trace's end end "
             f"there). "
             f"onprem-de (DE): GPU node i (file order) for i mod {k} == 0: "
             + ", ".join(f"{n} x {m}" for m, n in sorted(models.items()))
             + f" nodes; jobs drawn with seed {cfg.seed}: {cfg.gdpr_share:.0%} read GDPR data (held on-prem and in "
             f"cloud-eu), {cfg.checkpoint_share:.0%} checkpoint every {cfg.checkpoint_every:g}s and accept spot")
    return CostWorkload(chosen, w.sites[0].cpus * len(chosen) / max(1, len(nodes)), tuple(out), rules)


def sites_for(w: CostWorkload, cfg: CostConfig, clouds: bool = True) -> tuple[CostSite, ...]:
    rates = Rates(cpu_hour=cfg.onprem_cpu_hour, gpu_hour={n.model: cfg.onprem_gpu_hour for n in w.onprem})
    onprem = CostSite(policies.SiteView(ONPREM, "DE", "eu-central", {}, w.onprem_cpus, w.onprem_cpus * 4 * GiB,
                                        float(sum(n.gpus for n in w.onprem)), pricing=Pricing(rates)), w.onprem)
    if not clouds:
        return (onprem,)
    out = [onprem]
    for name, jurisdiction, region, markup in ((EU, "FR", "eu-west", cfg.eu_markup), (US, "US", "us-east", 1.0)):
        od = Rates(cpu_hour=cfg.cpu_hour * markup, gpu_hour={m: p * markup for m, p in cfg.gpu_hour.items()})
        spot = Rates(cpu_hour=od.cpu_hour * cfg.spot_ratio,
                     gpu_hour={m: p * cfg.spot_ratio for m, p in od.gpu_hour.items()})
        types = tuple(NodeType(f"{shape}-{'spot' if spot_ else 'od'}", cpus, cpus * 4 * GiB, cfg.max_nodes, gpus,
                               model, memory, spot=spot_, start_s=cfg.start_delay * (4 / 3 if spot_ else 1))
                      for spot_ in (False, True) for shape, cpus, gpus, model, memory, _ in SHAPES)
        out.append(CostSite(policies.SiteView(name, jurisdiction, region, {}, 0.0, 0.0, 0.0,
                                              pricing=Pricing(od, spot)), types=types))
    return tuple(out)


def describe(sites: Sequence[CostSite], cfg: CostConfig) -> list[str]:
    """A line per site: where it is, what it has or may add, at what price per hour."""
    out = []
    for s in sites:
        v, p = s.view, s.view.pricing
        assert p is not None
        if not s.types:
            out.append(f"{v.name} ({v.jurisdiction}): {sum(n.gpus for n in s.nodes):g} GPUs, {v.cpus:.0f} CPUs, "
                       f"amortised {cfg.onprem_gpu_hour:g}/GPU-h, {cfg.onprem_cpu_hour:g}/CPU-h (sunk)")
            continue
        kinds = [(p.on_demand, False, "on-demand")] + ([(p.spot, True, "spot")] if p.spot else [])
        prices = "; ".join(f"{label} " + ", ".join(
            f"{t.name.rsplit('-', 1)[0]} {r.hourly(t.cpus, 0.0, t.gpus, t.gpu_model):.2f}/h"
            for t in s.types if t.spot == spot) for r, spot, label in kinds)
        out.append(f"{v.name} ({v.jurisdiction}): up to {cfg.max_nodes} of each node type, {prices}; start "
                   f"{cfg.start_delay:g}s (spot {cfg.start_delay * 4 / 3:g}s), idle release {cfg.idle_timeout:g}s, "
                   f"spot lost {cfg.spot_rate:g}/node-h")
    return out


def pending_job(j: CostJob, optimize_cost: bool = False) -> policies.PendingJob:
    return policies.PendingJob(id=j.id, tenant="default", datasets=(GDPR,) if j.gdpr else (), cpus=j.cpus,
                               gpus=j.whole, submitted_at=j.arrival, gpu=j.gpu, optimize_cost=optimize_cost,
                               spot=ALLOW if j.checkpoint else NEVER)



@dataclass
class Bill:
    site: str
    node_type: str
    launched: float
    end: float
    price: float          # per hour
    gpus: int

    @property
    def cost(self) -> float:
        return (self.end - self.launched) / 3600 * self.price


@dataclass
class CostOutcome:
    strategy: str
    jobs: int
    done: int = 0
    cloud_spend: float = 0.0
    onprem_cost: float = 0.0
    gpu_hours_bought: float = 0.0         # cloud GPUs held by nodes, launch to release
    gpu_hours_used: dict[str, float] = field(default_factory=dict)   # by site: GPU-hours jobs ran there
    delays: list[float] = field(default_factory=list)
    interruptions: int = 0                # spot nodes lost
    requeued: int = 0                     # jobs sent back to the queue by them
    lost_gpu_hours: float = 0.0           # work done since the last checkpoint (or all of it), lost
    violations: int = 0                   # placements that break a data rule
    to_cloud: int = 0                     # placements on a cloud site
    to_cloud_onprem_fits: int = 0         # of those, while the job fitted on-prem then
    nvlink_misses: int = 0                # NVLink-bound jobs that got GPUs without one NVLink domain
    spot_unasked: int = 0                 # jobs that refuse spot (no checkpoint) placed on a spot node
    bills: list[Bill] = field(default_factory=list)
    span: float = 0.0
    cycles: int = 0
    wall_s: float = 0.0
