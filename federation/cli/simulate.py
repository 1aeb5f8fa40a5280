"""`fedctl simulate`: replay a trace through the placement code in simulated time."""
from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from federation.cli import render
from federation.cli.common import AddCommand, Subcommands, wants_json
from federation.errors import ConfigError

if TYPE_CHECKING:
    import policies
    from federation.simulate.trace import Workload


def cmd_simulate(args: argparse.Namespace) -> int:
    from federation.control.rules import rules_from_policy
    from federation.simulate import engine, report
    from federation.spec import load_policy

    if args.mode == "cost":
        return _simulate_cost(args)
    rules = rules_from_policy(load_policy(args.policy))
    w = _workload(args)
    missing = {c for _, (c, _) in w.datasets.items()} - set(rules.classifications)
    if missing:
        raise ConfigError(f"{args.policy}: no rule for classification(s) {', '.join(sorted(missing))}")
    if args.mode == "fairness":
        return _simulate_fairness(args, w, rules)
    if args.mode == "load":
        return _simulate_load(args, w, rules)
    modes = _modes(args, w)
    outcomes: dict[str, Sequence[engine.Outcome]] = {
        m: [engine.run(w, rules, s, inflation=m == "inflation", speedup=args.speedup, seed=args.seed)
            for s in args.strategy or DEFAULT_STRATEGIES[m]] for m in modes}
    results = {m: [report.summary(o) for o in runs] for m, runs in outcomes.items()}
    if args.plot:
        report.plot(outcomes, Path(args.plot))
    if wants_json(args):
        render.emit_json({"rules": w.rules, "jobs": len(w.jobs), "sites": [
            {"name": s.name, "jurisdiction": s.jurisdiction, "gpus": s.inventory.gpus} for s in w.sites],
            **{m: {"results": rows, "ratios": report.ratios(rows)} for m, rows in results.items()}})
        return 0
    _print_results(args, w, results)
    return 0


# Inflation compares packing, against FGD and best fit too; replays compare ours with the federations
# that do not see topology.
DEFAULT_STRATEGIES = {"inflation": ["topology", "topology-bestfit", "fgd", "best-fit", "blind", "round-robin"],
                      "replay": ["topology", "blind", "round-robin"]}


def _workload(args: argparse.Namespace) -> Workload:
    """The sites and jobs to replay: the trace's, or configured sites with a CSV of jobs."""
    from federation.simulate import trace
    if args.site_config:
        w = trace.configured([Path(p) for p in args.site_config])
    else:
        w = trace.alibaba(Path(args.trace), args.pods, args.sites, args.seed)
    if args.jobs:
        w = trace.csv_jobs(Path(args.jobs), w)
    elif args.site_config:
        raise ConfigError("--site-config: give the jobs to replay with --jobs FILE.csv")
    return w


def _modes(args: argparse.Namespace, w: Workload) -> list[str]:
    modes = ["replay", "inflation"] if args.mode == "both" else [args.mode]
    if not w.timed:
        if args.mode == "replay":
            raise ConfigError(f"--mode replay: the {args.pods} task list has no arrival times; use inflation")
        modes = ["inflation"]
    return modes


def _print_results(args: argparse.Namespace, w: Workload, results: dict[str, list[dict[str, Any]]]) -> None:
    from federation.simulate import report
    print(f"{len(w.jobs)} jobs on " + ", ".join(f"{s.name} ({s.jurisdiction}, {s.inventory.gpus} GPUs)"
                                               for s in w.sites))
    print(f"rules: {w.rules}")
    for m, rows in results.items():
        print(f"\n{m}:")
        print(report.table(rows))
        for name, r in report.ratios(rows).items():
            print(f"  {name}: " + ", ".join(f"{k} x{v}" for k, v in r.items()))
    if args.plot:
        print(f"\nplot: {args.plot}")


def _simulate_fairness(args: argparse.Namespace, w: Workload, rules: policies.Rules) -> int:
    from dataclasses import replace

    from federation.simulate import fairness
    w = fairness.smaller(w, args.keep_every)
    gpus = sum(s.inventory.gpus for s in w.sites)
    jobs, speedup, load = fairness.compressed(fairness.skewed_tenants(w.jobs, args.seed, args.tenants), gpus,
                                              args.load)
    w = replace(w, jobs=tuple(sorted(jobs, key=lambda j: (j.arrival, j.id))))
    rows = [fairness.summary(fairness.run(w, rules, s, min_runtime=args.min_runtime))
            for s in args.strategy or fairness.STRATEGIES]
    setup = (f"{len(w.jobs)} jobs of {args.tenants} tenants (seed {args.seed}, tenant k drawn with weight 1/(k+1)) on "
             f"{gpus} GPUs (one GPU node in {args.keep_every} of each site); arrivals divided by {speedup:.3g} for a "
             f"peak load of {load:.2f}x (asked {args.load:g}x: GPUs asked at once over GPUs held); preemption after "
             f"{args.min_runtime:g}s of runtime")
    if wants_json(args):
        render.emit_json({"setup": setup, "rules": w.rules, "results": rows, "ratios": fairness.ratios(rows)})
        return 0
    print(setup)
    render.table(["STRATEGY", "JAIN(TIME)", "JAIN(ALL)", "DELAY-MEAN-S", "DELAY-P99-S", "PREEMPTIONS", "FINISHED",
                  "GPU-HOURS"],
                 [[r["strategy"], r["jain_over_time"], r["jain_gpu_share_vs_entitlement"], r["queue_delay_s"]["mean"],
                   r["queue_delay_s"]["p99"], r["preemptions"], r["finished"], r["gpu_hours"]] for r in rows])
    for name, r in fairness.ratios(rows).items():
        print(f"  {name}: " + ", ".join(f"{k} x{v}" for k, v in r.items()))
    return 0


def _simulate_load(args: argparse.Namespace, w: Workload, rules: policies.Rules) -> int:
    from dataclasses import replace

    from federation.simulate import fairness, load, trace
    if not w.jobs:
        raise ConfigError(f"--mode load: the {args.pods} task list has no tasks")
    if args.draws is not None and args.draws < 2:
        raise ConfigError(f"--draws: {args.draws} is fewer than 2 jobs")
    w = fairness.smaller(w, args.keep_every)
    timing = "its run time"
    if not w.timed:
        w = replace(w, jobs=tuple(load.timed_like(w.jobs, trace.alibaba(Path(args.trace)).jobs, args.seed)))
        timing = "a run time drawn from the default list's jobs of its size"
    nodes = [n for site in w.sites for n in site.inventory.nodes]
    gpus = sum(n.gpus for n in nodes)
    draws = args.draws or 3 * len(w.jobs)
    out: dict[str, dict] = {}
    for share in _levels(args.utilisation):
        at = load.steady(w.jobs, nodes, share, draws, args.seed)
        rows = [load.summary(load.run(replace(w, jobs=tuple(at.jobs)), rules, s))
                for s in args.strategy or load.STRATEGIES]
        out[f"{share:g}"] = {"mean_gap_s": round(at.gap, 3), "reached": round(at.load, 3),
                             "busiest_gpus": at.busiest, "on_all_gpus": round(at.on_all, 3), "results": rows,
                             "ratios": load.ratios(rows)}
    setup = (f"{draws} jobs drawn from the {len(w.jobs)} of the list (seed {args.seed}), each with {timing}, on "
             f"{gpus} GPUs (one GPU node in {args.keep_every} of each site); Poisson arrivals at the rate that "
             "offers the stated share of the busiest GPUs (those some jobs' asks fit only on, else all); time "
             f"limits = run times; backfill depth {load.DEPTH}")
    if wants_json(args):
        render.emit_json({"setup": setup, "rules": w.rules, "loads": out})
        return 0
    print(setup)
    for level, got in out.items():
        print(f"\noffered load {level} (reached {got['reached']:g} on the busiest {got['busiest_gpus']} GPUs, "
              f"{got['on_all_gpus']:g} on all; one arrival every {got['mean_gap_s']:.4g}s):")
        render.table(["STRATEGY", "UTIL", "STARTED", "NEVER", "DELAY-P50-S", "DELAY-P99-S", "8+GPU-P50-S",
                      "8+GPU-P99-S", "8+GPU-MAX-S", "8+GPU-JOBS"],
                     [[r["strategy"], r["gpu_utilisation"], r["started"], r["never_started"],
                       r["queue_delay_s"]["p50"], r["queue_delay_s"]["p99"], r["by_size"]["8+"]["p50"],
                       r["by_size"]["8+"]["p99"], r["largest_jobs_max_delay_s"], r["by_size"]["8+"]["jobs"]]
                      for r in got["results"]])
        for name, r in got["ratios"].items():
            print(f"  {name}: " + ", ".join(f"{k} x{v}" if k != "utilisation_points" else f"{k} {v:+g}"
                                          for k, v in r.items()))
    return 0


def _levels(text: str) -> list[float]:
    try:
        levels = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--utilisation: {text!r} is not a list of numbers (e.g. 0.7,0.9,1.1)") from None
    if not levels or any(not 0 < x <= 5 for x in levels):
        raise ConfigError(f"--utilisation: {text!r}: each share of the GPUs must be above 0 and at most 5")
    return levels


def _simulate_cost(args: argparse.Namespace) -> int:
    from federation.simulate import cost, cost_report, cost_setup
    cfg = cost_setup.CostConfig(onprem_share=args.onprem_share, spot_rate=args.spot_rate, start_delay=args.start_delay,
                          idle_timeout=args.idle_timeout, max_nodes=args.max_nodes, jobs_cap=args.jobs_cap,
                          load=args.load, speedup=args.speedup, seed=args.seed)
    for name, value in (("--onprem-share", cfg.onprem_share), ("--spot-rate", cfg.spot_rate),
                        ("--start-delay", cfg.start_delay), ("--idle-timeout", cfg.idle_timeout)):
        if value < 0 or (name == "--onprem-share" and value > 1):
            raise ConfigError(f"{name}: {value:g} is out of range")
    if args.speedup <= 0:
        raise ConfigError(f"--speedup: {args.speedup:g} must be above 0")
    w = cost_setup.from_trace(Path(args.trace), args.pods, cfg)
    chosen = [s for s in args.strategy or cost_setup.STRATEGIES if s in cost_setup.STRATEGIES]
    if not chosen:
        raise ConfigError(f"--mode cost: --strategy is one of {', '.join(cost_setup.STRATEGIES)}")
    rows = [cost_report.summary(cost.run(w, s, cfg)) for s in chosen]
    if args.plot:
        cost_report.plot(rows, Path(args.plot))
    sites = cost_setup.sites_for(w, cfg)
    against = {name: cost_report.dominance(rows, name) for name in cost_setup.OURS if name in chosen}
    site_lines = cost_setup.describe(sites, cfg)
    if wants_json(args):
        render.emit_json({"workload": w.rules, "jobs": len(w.jobs), "sites": site_lines, "results": rows,
                          "against_ours": against, "notes": cost_report.notes(rows)})
        return 0
    print(f"{len(w.jobs)} jobs: {w.rules}")
    for line in site_lines:
        print(f"  {line}")
    render.table(["STRATEGY", "DONE", "CLOUD-$", "TOTAL-$", "GPU-H-BOUGHT", "NODES", "DELAY-P50-S", "DELAY-P99-S",
                  "SPOT-INTERRUPTS", "LOST-GPU-H", "SPOT-UNASKED", "VIOLATIONS", "NVLINK-MISSES"],
                 [[r["strategy"], f"{r['done']}/{r['jobs']}", f"{r['cloud_spend']:.0f}", f"{r['total_cost']:.0f}",
                   f"{r['gpu_hours_bought']:.0f}", r["nodes_launched"], r["queue_delay_s"]["p50"],
                   r["queue_delay_s"]["p99"], r["spot_interruptions"], f"{r['lost_gpu_hours']:.1f}", r["spot_unasked"],
                   r["violations"], r["nvlink_misses"]] for r in rows])
    print("TOTAL-$ adds on-prem's sunk cost (amortised price x capacity x span) to CLOUD-$")
    for ours, against_ours in against.items():
        for name, d in against_ours.items():
            print(f"  {name} against {ours}: {'cheaper' if d['cheaper'] else 'not cheaper'}, "
                  f"{'no slower' if d['no_slower'] else 'slower'} at p50 and p99"
                  + (f": DOMINATES {ours}" if d["dominates"] else
                     ": cheaper, at a delay within 5% of it" if d["dominates_within_5pct"] else ""))
    for line in cost_report.notes(rows):
        print(f"note: {line}")
    if args.plot:
        print(f"\nplot: {args.plot}")
    return 0


def register(sub: Subcommands, add: AddCommand) -> None:
    sp = add(sub, "simulate", cmd_simulate, "replay a trace through the placement code in simulated time")
    sp.add_argument("--trace", default=os.environ.get("FEDCTL_TRACE", "../shared/traces/alibaba-gpu-v2023"),
                    help="folder with the Alibaba 2023 GPU trace's csv files")
    sp.add_argument("--pods", default="default",
                    help="the trace's task list: default, gpuspec33, multigpu50, or a path to a csv of its format")
    sp.add_argument("--sites", type=int, default=4, help="split the trace's nodes into this many sites (1-4)")
    sp.add_argument("--site-config", action="append", help="a Site YAML with gpu_nodes (repeatable); needs --jobs")
    sp.add_argument("--jobs", help="a CSV of jobs: id,arrival_s,duration_s,cpus,gpus,gpu_type,nvlink,dataset,tenant")
    sp.add_argument("--policy", default="configs/policy.yaml")
    sp.add_argument("--mode", choices=["replay", "inflation", "both", "fairness", "cost", "load"], default="both",
                    help="replay: trace times; inflation: draw jobs until GPUs asked = GPUs (FGD's method); "
                         "fairness: tenants on a contended federation, against per-site scheduling; "
                         "cost: an on-prem site and two elastic cloud regions, what each strategy buys; "
                         "load: the list's jobs drawn at random, arriving at the rate that offers --utilisation, "
                         "waits by job size with and without reservations")
    sp.add_argument("--speedup", type=float, default=1.0,
                    help="divide arrival times by this (more load; cost: after --load)")
    sp.add_argument("--strategy", action="append",
                    choices=["topology", "topology-bestfit", "fgd", "best-fit", "blind", "round-robin", "federated",
                             "fair-per-site", "fifo-per-site",
                             "ours", "ours-cost", "onprem-only", "cheapest-first", "spill-over", "ours-reserve"])
    sp.add_argument("--utilisation", default="0.7,0.9,1.1",
                    help="load: the GPU work offered, as shares of the GPUs held (comma-separated)")
    sp.add_argument("--draws", type=int, help="load: jobs to draw from the list (default: three times its tasks)")
    sp.add_argument("--tenants", type=int, default=8, help="fairness: tenants to draw")
    sp.add_argument("--load", type=float, default=2.0,
                    help="fairness, cost: most GPUs asked at once over GPUs held (cost: on-prem's)")
    sp.add_argument("--keep-every", type=int, default=4, help="fairness, load: keep one GPU node in this many")
    sp.add_argument("--min-runtime", type=float, default=600.0, help="fairness: seconds before work may be preempted")
    sp.add_argument("--onprem-share", type=float, default=0.005,
                    help="cost: the share of the trace's GPU nodes on-prem (one in every 1/share)")
    sp.add_argument("--spot-rate", type=float, default=0.05, help="cost: spot interruptions per spot node-hour")
    sp.add_argument("--start-delay", type=float, default=180.0,
                    help="cost: seconds until a new on-demand node runs jobs (spot: a third more)")
    sp.add_argument("--idle-timeout", type=float, default=600.0, help="cost: seconds before an idle node is released")
    sp.add_argument("--max-nodes", type=int, default=8, help="cost: most nodes of each type in each cloud region")
    sp.add_argument("--jobs-cap", type=int, default=2000, help="cost: replay the trace's last N tasks")
    sp.add_argument("--seed", type=int, default=7)
    sp.add_argument("--plot", help="write a PNG here")
