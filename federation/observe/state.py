"""Metrics read from the federation's state when Prometheus scrapes: jobs, sites, queues, the
last scheduling cycle and the audit chain. Nothing here is kept up to date between scrapes."""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import policies
from federation.control import ControlPlane
from federation.spec.common import Resources
from policies import fairshare

log = logging.getLogger("federation.observe")
MAX_MODELS = 32      # GPU models a site's series name; a site that reports more gets one "other" series


class StateCollector(Collector):
    def __init__(self, control: ControlPlane) -> None:
        self.control = control

    def collect(self) -> Iterator[Metric]:
        # One part failing (an unreadable row) leaves the others, and the audit alarm, to be scraped.
        for part in (self._jobs, self._sites, self._cycle, self._audit):
            try:
                yield from list(part())
            except Exception:
                log.exception("metrics: a collector failed")

    def _audit(self) -> Iterator[Metric]:
        watch = self.control.audit_watch
        if watch.signer is None:
            return
        seq, broken = watch.state(self.control.store)
        yield GaugeMetricFamily("fedctl_audit_chain_verified", "1 while every audit record verified so far follows "
                                "the one before it and carries the federation's signature; 0 once one does not",
                                value=0.0 if broken else 1.0)
        yield GaugeMetricFamily("fedctl_audit_records_verified", "Audit records verified so far", value=seq)
        yield GaugeMetricFamily("fedctl_audit_records", "Audit records in the store (the newest's number): it never "
                                "goes down", value=self.control.store.audit_head()[0])

    def _jobs(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("fedctl_jobs", "Jobs in the store, by state, tenant and queue",
                                 labels=["state", "tenant", "queue"])
        for state, tenant, queue, n in self.control.store.job_counts():
            jobs.add_metric([state.value, tenant, queue], n)
        yield jobs

    def _sites(self) -> Iterator[Metric]:
        core = self.control.core
        now = core.clock()
        info = GaugeMetricFamily("fedctl_site_info", "1 per site, with where it is and its state",
                                 labels=["site", "jurisdiction", "region", "state"])
        up = GaugeMetricFamily("fedctl_site_connected", "1 while the site's heartbeats arrive", labels=["site"])
        lost = GaugeMetricFamily("fedctl_site_lost", "1 once the site's lease expired", labels=["site"])
        age = GaugeMetricFamily("fedctl_site_heartbeat_age_seconds", "Since the site's last heartbeat",
                                labels=["site"])
        capacity = GaugeMetricFamily("fedctl_site_capacity", "What the site has, by resource (cpus, memory_bytes, "
                                     "gpus)", labels=["site", "resource"])
        free = GaugeMetricFamily("fedctl_site_free", "What the site has that no live attempt holds, by resource",
                                 labels=["site", "resource"])
        gpus = GaugeMetricFamily("fedctl_site_gpus", "GPUs at the site by model", labels=["site", "model"])
        gpus_free = GaugeMetricFamily("fedctl_site_gpus_free", "GPUs at the site by model that no live attempt holds",
                                      labels=["site", "model"])
        running = GaugeMetricFamily("fedctl_site_running_attempts", "Live attempts at the site", labels=["site"])
        live = self.control.store.live_use()
        held = _gpus_held(live)
        for s in self.control.views.site_statuses(live=live):
            r = s.record
            info.add_metric([r.name, r.jurisdiction, r.region, r.state.value], 1)
            up.add_metric([r.name], float(s.connected))
            lost.add_metric([r.name], float(s.lost))
            age.add_metric([r.name], max(0.0, now - r.last_heartbeat))
            for resource, total, used in (("cpus", r.capacity.cpus, s.allocated.cpus),
                                          ("memory_bytes", r.capacity.memory, s.allocated.memory),
                                          ("gpus", r.capacity.gpus, s.allocated.gpus)):
                capacity.add_metric([r.name, resource], total)
                free.add_metric([r.name, resource], max(0.0, total - used))
            by_model: dict[str, int] = defaultdict(int)
            for node in r.inventory.nodes:
                if node.gpus:
                    model = node.model or "unknown"
                    by_model[model if model in by_model or len(by_model) < MAX_MODELS else "other"] += node.gpus
            for model, n in sorted(by_model.items()):
                gpus.add_metric([r.name, model], n)
                gpus_free.add_metric([r.name, model], max(0.0, n - held.get((r.name, model), 0.0)))
            running.add_metric([r.name], s.running)
        yield from (info, up, lost, age, capacity, free, gpus, gpus_free, running)

    def _cycle(self) -> Iterator[Metric]:
        last = self.control.cycle.last
        waiting = GaugeMetricFamily("fedctl_pending_jobs", "Jobs waiting at the last cycle, by what holds them",
                                    labels=["reason"])
        for reason, n in sorted(last.waiting.items()):
            waiting.add_metric([reason], n)
        yield waiting
        yield from _queues(last.observed)


def _gpus_held(live: list[tuple[str, str, Resources]]) -> dict[tuple[str, str], float]:
    held: dict[tuple[str, str], float] = defaultdict(float)
    for site, model, resources in live:
        if model:
            held[(site, model)] += resources.gpus
    return held


def _queues(observed) -> Iterator[Metric]:
    """Each queue's fair-share standing as the last cycle saw it, before it placed anything."""
    share = GaugeMetricFamily("fedctl_queue_share", "A queue's standing: its dominant use over what it deserves "
                              "(tier 0), else its share of the federation over its weight", labels=["queue"])
    tier = GaugeMetricFamily("fedctl_queue_tier", "0 below its deserved share, 1 over it, 2 over it with weight 0",
                             labels=["queue"])
    pending = GaugeMetricFamily("fedctl_queue_pending_jobs", "Jobs the last cycle could place, by queue",
                                labels=["queue"])
    if observed is not None and observed.snapshot.queues is not None:
        views = list(observed.views.values())
        ledger = fairshare.Ledger(observed.snapshot.queues, policies.placement.totals(observed.snapshot), views)
        counts: dict[str, int] = defaultdict(int)
        for v in views:
            counts[v.queue] += 1
        for q in observed.snapshot.queues.queues:
            factors = ledger.factors(q.name)
            share.add_metric([q.name], factors.ratio)
            tier.add_metric([q.name], factors.tier)
            pending.add_metric([q.name], counts[q.name])
    yield from (share, tier, pending)
