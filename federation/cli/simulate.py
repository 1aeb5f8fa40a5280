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

    rules = rules_from_policy(load_policy(args.policy))
    w = _workload(args)
    missing = {c for _, (c, _) in w.datasets.items()} - set(rules.classifications)
    if missing:
        raise ConfigError(f"{args.policy}: no rule for classification(s) {', '.join(sorted(missing))}")
    if args.mode == "fairness":
        return _simulate_fairness(args, w, rules)
    modes = _modes(args, w)
    strategies = args.strategy or ["topology", "blind", "round-robin"]
    outcomes: dict[str, Sequence[engine.Outcome]] = {
        m: [engine.run(w, rules, s, inflation=m == "inflation", speedup=args.speedup, seed=args.seed)
            for s in strategies] for m in modes}
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


def register(sub: Subcommands, add: AddCommand) -> None:
    sp = add(sub, "simulate", cmd_simulate, "replay a trace through the placement code in simulated time")
    sp.add_argument("--trace", default=os.environ.get("FEDCTL_TRACE", "../shared/traces/alibaba-gpu-v2023"),
                    help="folder with the Alibaba 2023 GPU trace's csv files")
    sp.add_argument("--pods", default="default", choices=["default", "gpuspec33", "multigpu50"],
                    help="which of the trace's task lists")
    sp.add_argument("--sites", type=int, default=4, help="split the trace's nodes into this many sites (1-4)")
    sp.add_argument("--site-config", action="append", help="a Site YAML with gpu_nodes (repeatable); needs --jobs")
    sp.add_argument("--jobs", help="a CSV of jobs: id,arrival_s,duration_s,cpus,gpus,gpu_type,nvlink,dataset,tenant")
    sp.add_argument("--policy", default="configs/policy.yaml")
    sp.add_argument("--mode", choices=["replay", "inflation", "both", "fairness"], default="both",
                    help="replay: trace times; inflation: draw jobs until GPUs asked = GPUs (FGD's method); "
                         "fairness: tenants on a contended federation, against per-site scheduling")
    sp.add_argument("--speedup", type=float, default=1.0, help="divide arrival times by this (more load)")
    sp.add_argument("--strategy", action="append",
                    choices=["topology", "blind", "round-robin", "federated", "fair-per-site", "fifo-per-site"])
    sp.add_argument("--tenants", type=int, default=8, help="fairness: tenants to draw")
    sp.add_argument("--load", type=float, default=2.0, help="fairness: most GPUs asked at once over GPUs held")
    sp.add_argument("--keep-every", type=int, default=4, help="fairness: keep one GPU node in this many")
    sp.add_argument("--min-runtime", type=float, default=600.0, help="fairness: seconds before work may be preempted")
    sp.add_argument("--seed", type=int, default=7)
    sp.add_argument("--plot", help="write a PNG here")
