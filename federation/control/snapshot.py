"""The scheduler's view of the federation: pending jobs as the pure policy sees them, and the
snapshot of sites, data, live work and fair-share standing it decides on."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import replace

import policies
import policies.holds
from federation import queues
from federation.control.core import Core
from federation.gpus import request_of
from federation.jobs import Attempt, AttemptState, Job
from federation.sites import Capacity, SiteRecord, SiteState
from federation.spec import JobSpec, PolicyConfig
from federation.spec.array import parse_array
from federation.spec.common import Resources
from federation.spec.job import spot_of
from policies import fairshare, preemption, pricing
from policies.fgd import Demand
from policies.gpus import Inventory, synthesized
from policies.holds import Hold

PRIORITY = {"low": -1, "normal": 0, "high": 1}
SPOT = {"never": pricing.NEVER, "allow": pricing.ALLOW, "prefer": pricing.PREFER}


def pending_view(job: Job, queue: str | None = None, time_limit: float = 0.0) -> policies.PendingJob:
    """`time_limit`: the one its queue gives a job that declares none (`Core.time_limit`)."""
    return pending_view_of(job.spec, queue or job.queue, job.id, job.created_at, job.vetoed_by, job.gang_id,
                           time_limit)


def pending_view_of(spec: JobSpec, queue: str, job_id: str = "", submitted_at: float = 0.0,
                    vetoed_by: frozenset[str] = frozenset(), gang: str = "", time_limit: float = 0.0
                    ) -> policies.PendingJob:
    body = spec.spec
    return policies.PendingJob(
        id=job_id, tenant=spec.metadata.tenant, datasets=tuple(body.datasets), cpus=body.resources.cpus,
        memory=float(body.resources.memory), gpus=body.resources.gpus,
        regions=tuple(body.placement.regions), sites=tuple(body.placement.sites),
        prefer=tuple(body.placement.prefer), priority=PRIORITY[body.priority],
        submitted_at=submitted_at, vetoed_by=vetoed_by, gpu=request_of(body), queue=queue,
        gang=gang, gang_size=len(body.gang.parts) if gang and body.gang else 0,
        optimize_cost=body.placement.optimize == "cost", max_price=body.placement.max_price or 0.0,
        spot=SPOT[spot_of(body)], time_limit=body.time_limit or time_limit)


def gpu_inventory(site: SiteRecord) -> Inventory:
    """The site's GPU topology; a site that published only a total gets one node without NVLink."""
    if site.inventory.nodes:
        return site.inventory
    return synthesized(site.name, site.capacity.gpus)


def catalog(sites: list[SiteRecord], policy: PolicyConfig) -> dict[str, policies.DatasetInfo]:
    """Per dataset: its classification and the sites that hold it, as the policy says now (a site's
    record, from a registration under an older policy, may say otherwise)."""
    listed = policy.spec.datasets
    holders: dict[str, set[str]] = {}
    sizes: dict[str, float] = {}
    for site in sites:
        for d in site.datasets:
            entry = listed.get(d.name)
            if entry is not None and ("*" in entry.sites or site.name in entry.sites):
                holders.setdefault(d.name, set()).add(site.name)
                sizes[d.name] = max(sizes.get(d.name, 0.0), float(d.size))
    return {name: policies.DatasetInfo(name, listed[name].classification, frozenset(names), sizes.get(name, 0.0))
            for name, names in holders.items()}


def usage(live: Iterable[tuple[str, Resources]]) -> dict[str, tuple[Capacity, int]]:
    """Per site: resources in use by its live attempts (given as (site, resources asked)), and how many there are."""
    by_site: dict[str, tuple[Capacity, int]] = {}
    for site, r in live:
        in_use, n = by_site.get(site, (Capacity(), 0))
        by_site[site] = (in_use + Capacity(r.cpus, r.memory, r.gpus), n + 1)
    return by_site


def running_views(live_views: list[tuple[Attempt, policies.PendingJob]], index: dict[str, int]
                  ) -> tuple[preemption.Running, ...]:
    return tuple(preemption.Running(view, a.number, index[a.site], a.binding, a.gpu_model, a.started_at,
                                    bool(a.stop_requested_at))
                 for a, view in live_views if a.site in index)


def waiting(job: Job) -> policies.holds.Waiting:
    body = job.spec.spec
    return policies.holds.Waiting(
        id=job.id, tenant=job.tenant, name=job.spec.metadata.name, submitted_at=job.created_at,
        after=tuple(body.dependencies.all()), singleton=body.singleton, array_id=job.array_id,
        array_index=job.array_index, throttle=parse_array(body.array).throttle if job.array_id and body.array else None)


def budget_holds(core: Core, pending: list[Job], now: float) -> dict[str, Hold]:
    """Per pending job whose queue (or a parent) has spent its cost_per_day, why it waits."""
    if not queues.budgets(core.policy):
        return {}
    parents = {q.name: q.parent for q in core.tree}
    spent = queues.over_budget(core.store.usage_records(since=now - queues.DAY), core.policy, parents, now)
    return {j.id: Hold(policies.Reason.QUEUE_LIMIT, spent[j.queue]) for j in pending if j.queue in spent}


def holds(core: Core, pending: list[Job], live: list[tuple[Attempt, Job]]) -> dict[str, Hold]:
    """Per pending job held back by a dependency, a singleton or its array's limit, why."""
    candidates = [waiting(j) for j in pending
                  if j.spec.spec.dependencies.all() or j.spec.spec.singleton or j.array_id]
    if not candidates:
        return {}
    refs = {ref for w in candidates for _, ref in w.after}
    states = core.store.dependency_states(refs) if refs else {}
    active_names = Counter((j.tenant, j.spec.metadata.name) for _, j in live)
    active_arrays = Counter(j.array_id for _, j in live if j.array_id)
    return policies.holds.holds(candidates, states, active_names, active_arrays)


def preemption_settings(core: Core, now: float) -> preemption.Settings | None:
    p = core.policy.spec.preemption
    if not p.enabled:
        return None
    budget = min(p.max_per_cycle, max(0, p.max_per_hour - core.store.stops_since(now - 3600)))
    return preemption.Settings(True, p.min_runtime, budget, p.reclaim)


def queue_usage(core: Core, live_views: list[tuple[Attempt, policies.PendingJob]], now: float) -> fairshare.Queues:
    """The policy's queues with what each has in use now (`live_views`: live attempts and their
    jobs' views) and its decayed past use."""
    half_life = core.policy.spec.fair_share.half_life
    running: dict[str, dict[str, float]] = {}
    for attempt, view in live_views:
        into = running.setdefault(view.queue, {})
        for dim, v in fairshare.demand(view, attempt.gpu_model).items():
            into[dim] = into.get(dim, 0.0) + v
    # Past use older than ten half-lives weighs under 0.1%.
    records = core.store.usage_records(since=now - 10 * half_life)
    return fairshare.Queues(core.tree, queues.fair_share_usage(records, running, now, half_life),
                            core.policy.spec.fair_share.history_weight)


def observe(core: Core, now: float, live: list[tuple[Attempt, Job]] | None = None) -> policies.Snapshot:
    """The snapshot the pure scheduler decides on, read from the store."""
    live = core.store.live_attempts() if live is None else live
    in_use = usage((a.site, j.spec.spec.resources) for a, j in live)
    records = core.store.list_sites()
    gpus = policies.GpuState([gpu_inventory(s) for s in records])
    index = {s.name: i for i, s in enumerate(records)}
    for attempt, _ in live:
        if attempt.binding and attempt.site in index:
            gpus.reserve(index[attempt.site], attempt.binding)
    # FGD inside sites measures fragmentation against the asks of the work running now.
    gpus.demand = Demand.of(request_of(job.spec.spec) for _, job in live)
    claimed = Counter((a.site, a.node_type) for a, job in live
                      if a.node_type and a.state is AttemptState.ASSIGNED and request_of(job.spec.spec) is not None)
    sites = []
    for s in records:
        used, running = in_use.get(s.name, (Capacity(), 0))
        elastic = s.elastic and replace(s.elastic, claimed={t.name: claimed[(s.name, t.name)]
                                                            for t in s.elastic.node_types})
        sites.append(policies.SiteView(
            name=s.name, jurisdiction=s.jurisdiction, region=s.region, labels=s.labels,
            cpus=s.capacity.cpus, memory=float(s.capacity.memory), gpus=s.capacity.gpus,
            used_cpus=used.cpus, used_memory=float(used.memory), used_gpus=used.gpus, running=running,
            connected=core.connected(s, now),
            cordoned=s.state is SiteState.CORDONED, draining=s.state is SiteState.DRAINING,
            pricing=s.pricing, elastic=elastic or None))
    live_views = [(a, pending_view(job, time_limit=core.expected_run(job, a.started_at, now))) for a, job in live]
    return policies.Snapshot(sites=tuple(sites), catalog=catalog(records, core.policy), rules=core.rules, gpus=gpus,
                             queues=queue_usage(core, live_views, now), running=running_views(live_views, index),
                             preemption=preemption_settings(core, now))
