"""The two baselines `fedctl simulate --mode cost` compares ours with: how a price-greedy
multi-cloud launcher and an ordered multi-cluster dispatcher would place the same jobs.

- `cheapest-first` (SkyPilot-like): each job, first come first served, goes to the cheapest
  (site, node type) that may take it, now or by launching a node; it prices a job by what it
  holds (CPUs and GPUs at the site's rates, on-prem at its amortised rate) and uses spot for a
  job that checkpoints (SkyPilot's `use_spot` is per task), on-demand for the others, on cloud
  capacity already up as on new nodes. Capacity already up is used only when it is not dearer
  than launching. (A CPU job on a cloud site's spare CPUs counts as on-demand.)
- `spill-over` (MultiKueue-like): on-prem if the job fits there now, else the EU cloud
  (capacity up, else a new on-demand node), else the US cloud; no spot, no prices.

Both filter sites by the sovereignty rules (MultiKueue dispatches by cluster labels, SkyPilot
by region constraints), so neither sends GDPR data out of the EU; the simulator's auditor
checks that independently. Every decision has the shape `policies.schedule` returns.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import policies
from policies.feasible import EPS, gpu_request, gpu_state
from policies.gpus import Binding, GpuRequest
from policies.model import Decision, PendingJob, Reason, SiteView
from policies.placement import order
from policies.pricing import NEVER, NodeType, Rates, fits_node
from policies.snapshot import Snapshot

Chooser = Callable[[Snapshot, Sequence[PendingJob], float], Sequence[Decision]]


def node_type_of(site: SiteView, node: str) -> NodeType | None:
    """The type of a node the simulator started (named site:type:k); None for an on-prem node."""
    parts = node.split(":")
    if site.elastic is None or len(parts) != 3:
        return None
    return next((t for t in site.elastic.node_types if t.name == parts[1]), None)


class _Room:
    """What is free during one cycle of a baseline: GPUs, CPUs per site, nodes each type may add."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.gpu = gpu_state(snapshot).copy()
        self.cpu = [s.cpus - s.used_cpus for s in snapshot.sites]
        self.left = [{t.name: s.elastic.addable(t) for t in s.elastic.node_types} if s.elastic else {}
                     for s in snapshot.sites]
        self._allowed: dict[tuple[str, ...], list[bool]] = {}

    def allowed(self, job: PendingJob, i: int) -> bool:
        """The jurisdiction / label filter both baselines are given."""
        hit = self._allowed.get(job.datasets)
        if hit is None:
            s = self.snapshot
            hit = self._allowed[job.datasets] = [policies.sovereignty_verdict(job.datasets, site, s.catalog, s.rules)[0]
                                                 is Reason.OK for site in s.sites]
        return hit[i]

    def now(self, i: int, job: PendingJob, req: GpuRequest | None) -> Binding | None:
        """The GPUs the job would hold at site i on capacity that is up; None: it does not fit now."""
        if self.cpu[i] < job.cpus - EPS:
            return None
        if req is None:
            return ()
        binding, _ = self.gpu.fit(i, req)
        return binding

    def decide(self, job: PendingJob, req: GpuRequest | None, i: int, binding: Binding, t: NodeType | None,
               price: float, why: str) -> Decision:
        site = self.snapshot.sites[i]
        if t is None:
            self.cpu[i] -= job.cpus
            if binding:
                self.gpu.reserve(i, binding)
            model = self.gpu.model_of_binding(i, binding) if binding else ""
            return Decision(job.id, site.name, 0.0, (why,), 1, binding, model, price)
        self.left[i][t.name] -= 1   # one node per job, as policies.schedule claims for GPU jobs
        return Decision(job.id, site.name, 0.0, (why,), 1, (), t.gpu_model if req else "", price, t.name, t.spot,
                        t.start_s)


def _rates(site: SiteView, spot: bool) -> Rates:
    p = site.pricing
    if p is None:
        return Rates()
    return p.spot if spot and p.spot is not None else p.on_demand


def _hourly(rates: Rates, job: PendingJob, req: GpuRequest | None, model: str) -> float:
    return rates.hourly(job.cpus, job.memory, req.whole if req else 0.0, model)


def cheapest_first(snapshot: Snapshot, pending: Sequence[PendingJob], now: float) -> list[Decision]:
    room = _Room(snapshot)
    out: list[Decision] = []
    for job in order(pending):
        req = gpu_request(job)
        use_spot = job.spot != NEVER
        best: tuple[tuple[float, int, float, int], Binding, NodeType | None] | None = None
        for i, site in enumerate(snapshot.sites):
            if not room.allowed(job, i):
                continue
            binding = room.now(i, job, req)
            node = node_type_of(site, binding[0].node) if binding else None
            if binding is not None and (node is None or node.spot == use_spot):   # use_spot holds on what is up too
                model = room.gpu.model_of_binding(i, binding) if binding else ""
                key = (_hourly(_rates(site, node is not None and node.spot), job, req, model), 0, 0.0, i)
                if best is None or key < best[0]:
                    best = (key, binding, None)
            for t in site.elastic.node_types if site.elastic else ():
                if t.spot != use_spot or room.left[i][t.name] <= 0 or not fits_node(t, job.cpus, job.memory, req):
                    continue
                key = (_hourly(_rates(site, t.spot), job, req, t.gpu_model), 1, t.start_s, i)
                if best is None or key < best[0]:
                    best = (key, (), t)
        if best is not None:
            (price, _, _, i), binding, node_type = best
            out.append(room.decide(job, req, i, binding, node_type, price, "cheapest per hour"))
    return out


def spill_over(snapshot: Snapshot, pending: Sequence[PendingJob], now: float) -> list[Decision]:
    room = _Room(snapshot)
    out: list[Decision] = []
    for job in order(pending):
        req = gpu_request(job)
        for i, site in enumerate(snapshot.sites):   # the order of the sites: on-prem, EU cloud, US cloud
            if not room.allowed(job, i):
                continue
            binding = room.now(i, job, req)
            if binding is not None:
                node = node_type_of(site, binding[0].node) if binding else None
                model = room.gpu.model_of_binding(i, binding) if binding else ""
                price = _hourly(_rates(site, node is not None and node.spot), job, req, model)
                out.append(room.decide(job, req, i, binding, None, price, "first site in order with room"))
                break
            t = next((t for t in (site.elastic.node_types if site.elastic else ())
                      if not t.spot and room.left[i][t.name] > 0 and fits_node(t, job.cpus, job.memory, req)), None)
            if t is not None:
                price = _hourly(_rates(site, False), job, req, t.gpu_model)
                out.append(room.decide(job, req, i, (), t, price, "first site in order that may add a node"))
                break
    return out


CHOOSERS: dict[str, Chooser] = {"cheapest-first": cheapest_first, "spill-over": spill_over}
