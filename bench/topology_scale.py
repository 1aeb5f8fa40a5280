"""Topology-aware placement at federation scale: one full scheduling cycle.

The federation's in-memory state for N sites of 20 GPU nodes each (a mix of NVSwitch
8-GPU H100 nodes, 4-GPU A100 nodes in NVLink pairs, 8-GPU PCIe L4 nodes), about 70% of
the GPUs already held by running work, and P pending jobs (whole GPUs, shares, NVLink
blocks of 2/4/8, GPU types, sovereign datasets, CPU-only). Reports the cycle time,
decisions per second, memory of the state, and how each grows when sites and jobs double.

A cycle places at most `scheduler.max_placements_per_cycle` jobs (default 5,000) and the
next cycle follows at once; the baseline in the same run is one cycle without that limit,
and `drain` is every cycle it takes the limited scheduler to place all that one cycle places.
Decisions per second count jobs placed or refused with their reasons, not those deferred.

    python -m bench.topology_scale                 # 500/10k/50k, 1000/20k/100k, 2000/40k/200k
    python -m bench.topology_scale --sizes 1000    # only the target size
"""
from __future__ import annotations

import argparse
import gc
import itertools
import random
import statistics
import time
import tracemalloc
from dataclasses import replace

from bench.workload import federation
from federation.collector import paused_gc
from federation.spec.server import SchedulerSettings
from policies import (
    GpuNode,
    GpuRequest,
    GpuState,
    Inventory,
    PendingJob,
    Slot,
    Snapshot,
    schedule,
)
from policies.gpus import MILLI

LIMIT = SchedulerSettings().max_placements_per_cycle

GiB = 2**30
NODES_PER_SITE = 20
H100 = ("H100", 80 * GiB, lambda n: (f"{n}/nv",) * 8)
A100 = ("A100", 40 * GiB, lambda n: (f"{n}/p0",) * 2 + (f"{n}/p1",) * 2)
L4 = ("L4", 24 * GiB, lambda n: ("",) * 8)


def inventories(sites: int, rng: random.Random) -> list[Inventory]:
    out = []
    for s in range(sites):
        kinds = rng.choice([(H100, A100, L4), (H100,), (A100, L4), (L4,)])
        nodes = []
        for k in range(NODES_PER_SITE):
            model, memory, domains = kinds[k % len(kinds)]
            name = f"s{s}-n{k}"
            nodes.append(GpuNode(name, model, memory, domains(name), rack=f"r{k // 10}"))
        out.append(Inventory(tuple(nodes)))
    return out


def occupy(state: GpuState, invs: list[Inventory], rng: random.Random, fraction: float = 0.7) -> int:
    """Hold about `fraction` of every site's GPUs the way running work does: whole GPUs and shares."""
    held = 0
    for s, inv in enumerate(invs):
        slots = []
        for node in inv.nodes:
            for g in range(node.gpus):
                if rng.random() < fraction:
                    slots.append(Slot(node.name, (g,), MILLI if rng.random() < 0.8 else rng.choice([250, 500])))
                    held += 1
        state.reserve(s, tuple(slots))
    return held


SHAPES = [  # (weight, request)
    (30, GpuRequest(count=1)), (10, GpuRequest(count=1, models=frozenset({"L4"}))),
    (12, GpuRequest(share=250)), (8, GpuRequest(share=500, models=frozenset({"L4", "A100"}))),
    (12, GpuRequest(count=2, nvlink="required")), (6, GpuRequest(count=4, nvlink="required",
                                                                 models=frozenset({"H100"}))),
    (4, GpuRequest(count=8, nvlink="required", models=frozenset({"H100"}))),
    (3, GpuRequest(count=16, per_node=8, colocate="rack", models=frozenset({"H100"}))),
    (15, None),
]


def pending_jobs(base: list[PendingJob], rng: random.Random) -> list[PendingJob]:
    weights = [w for w, _ in SHAPES]
    out = []
    for j in base:
        req = rng.choices([r for _, r in SHAPES], weights)[0]
        out.append(PendingJob(id=j.id, tenant=j.tenant, datasets=j.datasets, cpus=j.cpus, memory=j.memory,
                              gpus=req.whole if req else 0.0, regions=j.regions, priority=j.priority,
                              submitted_at=j.submitted_at, gpu=req))
    return out


def timed(snapshot: Snapshot, pending: list[PendingJob], limit: int | None, repeat: int):
    """The median of `repeat` cycles over the same state (schedule does not mutate it), and a result."""
    times = []
    for _ in range(repeat):
        gc.collect()
        t = time.perf_counter()
        with paused_gc():  # as the federation runs a cycle
            result = schedule(snapshot, pending, 0.0, limit)
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def drain(snapshot: Snapshot, pending: list[PendingJob], limit: int) -> tuple[list[float], int]:
    """Cycles with the limit, each applying the last one's placements, until one places fewer than
    the limit: (each cycle's time, jobs placed in all)."""
    sites, state, index = list(snapshot.sites), snapshot.gpus.copy(), {s.name: i for i, s in enumerate(snapshot.sites)}
    by_id = {j.id: j for j in pending}
    times, placed = [], 0
    while True:
        gc.collect()
        t = time.perf_counter()
        with paused_gc():
            result = schedule(Snapshot(tuple(sites), snapshot.catalog, snapshot.rules, state), pending, 0.0, limit)
        times.append(time.perf_counter() - t)
        for d in result.decisions:
            i, job = index[d.site], by_id[d.job_id]
            state.reserve(i, d.binding)
            v = sites[i]
            sites[i] = replace(v, used_cpus=v.used_cpus + job.cpus, used_memory=v.used_memory + job.memory,
                               running=v.running + 1)
        placed += len(result.decisions)
        if len(result.decisions) < limit:
            return times, placed
        done = {d.job_id for d in result.decisions}
        pending = [j for j in pending if j.id not in done]


def measure(sites: int, jobs: int, held_fraction: float, seed: int = 1, repeat: int = 3) -> dict:
    """The cycle with and without the placement limit, and the drain, over one state."""
    rng = random.Random(seed)
    gc.collect()
    tracemalloc.start()
    snapshot, base = federation(sites, jobs, seed=seed, nodes_per_site=NODES_PER_SITE)
    invs = inventories(sites, rng)
    t = time.perf_counter()
    state = GpuState(invs)
    build_s = time.perf_counter() - t
    held = occupy(state, invs, rng, held_fraction)
    pending = pending_jobs(base, rng)
    # Running work holds the same share of every site's CPUs as of its GPUs.
    sites_now = tuple(replace(v, used_cpus=v.cpus * held_fraction) for v in snapshot.sites)
    snapshot = Snapshot(sites_now, snapshot.catalog, snapshot.rules, state)
    state_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    cycle_s, result = timed(snapshot, pending, LIMIT, repeat)
    # What explaining every unplaced job costs on top: its per-site reasons and summary line.
    t = time.perf_counter()
    for u in result.unplaced:
        _ = u.reasons
    explain_s = time.perf_counter() - t
    unlimited_s, whole = timed(snapshot, pending, None, repeat)
    drain_times, drained = drain(snapshot, pending, LIMIT)
    return {"sites": sites, "nodes": sites * NODES_PER_SITE, "gpus": int(state.free.size), "held": held,
            "pending": jobs, "placed": len(result.decisions), "cycle_s": cycle_s,
            "decisions_per_s": (jobs - result.deferred) / cycle_s, "deferred": result.deferred,
            "explain_s": explain_s, "state_build_s": build_s, "state_mib": state_bytes / 2**20,
            "unlimited_s": unlimited_s, "unlimited_placed": len(whole.decisions), "drain_cycles": len(drain_times),
            "drain_s": sum(drain_times), "drain_max_s": max(drain_times), "drained": drained}


SCENARIOS = {
    # A federation with a backlog: running work holds 97% of GPUs and CPUs, what is pending waits
    # for capacity. This is the steady state a 100,000-job queue implies.
    "backlog": 0.97,
    # A burst: 30% of every site just came free (a new generation of sites joined, a large
    # tenant's work ended), so tens of thousands of jobs are placed in one cycle.
    "burst": 0.70,
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="*", default=[500, 1000, 2000], help="site counts (jobs = 100 x)")
    p.add_argument("--scenario", choices=list(SCENARIOS), action="append")
    p.add_argument("--repeat", type=int, default=3, help="cycles timed per size; the median is reported")
    args = p.parse_args()
    for scenario in args.scenario or list(SCENARIOS):
        rows = [measure(s, 100 * s, SCENARIOS[scenario], repeat=args.repeat) for s in args.sizes]
        print(f"\n{scenario} ({SCENARIOS[scenario]:.0%} of GPUs and CPUs held; at most {LIMIT} placed a cycle):")
        print(f"{'sites':>6} {'nodes':>7} {'gpus':>8} {'pending':>8} {'placed':>7} {'defer':>6} {'cycle_s':>8} "
              f"{'dec/s':>8} {'placed/s':>8} {'explain_s':>9} {'state_MiB':>9} {'build_s':>7} | "
              f"{'no-limit':>8} {'placed':>7} | "
              f"{'drain':>5} {'in_s':>6} {'max_s':>6} {'placed':>7}")
        for r in rows:
            print(f"{r['sites']:>6} {r['nodes']:>7} {r['gpus']:>8} {r['pending']:>8} {r['placed']:>7} "
                  f"{r['deferred']:>6} {r['cycle_s']:>8.2f} {r['decisions_per_s']:>8.0f} "
                  f"{r['placed'] / r['cycle_s']:>8.0f} "
                  f"{r['explain_s']:>9.2f} {r['state_mib']:>9.0f} {r['state_build_s']:>7.2f} | "
                  f"{r['unlimited_s']:>8.2f} {r['unlimited_placed']:>7} | {r['drain_cycles']:>5} "
                  f"{r['drain_s']:>6.2f} {r['drain_max_s']:>6.2f} {r['drained']:>7}")
        for a, b in itertools.pairwise(rows):
            print(f"doubling {a['sites']}->{b['sites']} sites and {a['pending']}->{b['pending']} jobs: "
                  f"cycle x{b['cycle_s'] / a['cycle_s']:.2f}, decisions/s "
                  f"x{b['decisions_per_s'] / a['decisions_per_s']:.2f}, memory x{b['state_mib'] / a['state_mib']:.2f}")
        target = next((r for r in rows if r["sites"] == 1000), None)
        if target:
            print(f"target (1000 sites / 20000 nodes / 100000 pending): cycle {target['cycle_s']:.2f}s vs 2s "
                  f"(ratio {target['cycle_s'] / 2:.2f}), {target['decisions_per_s']:.0f} decisions/s vs 5000 "
                  f"(ratio {target['decisions_per_s'] / 5000:.2f}), state {target['state_mib']:.0f} MiB vs 2048 "
                  f"(ratio {target['state_mib'] / 2048:.3f}); one cycle without the limit "
                  f"{target['unlimited_s']:.2f}s (limited/unlimited {target['cycle_s'] / target['unlimited_s']:.2f}), "
                  f"draining what it places takes {target['drain_cycles']} cycles, {target['drain_s']:.2f}s "
                  f"(x{target['drain_s'] / target['unlimited_s']:.2f})")


if __name__ == "__main__":
    main()
