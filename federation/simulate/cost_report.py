"""What `fedctl simulate --mode cost` prints: per strategy a row, whether any baseline is both cheaper
and faster than ours, where ours sits, and a plot of cost against delay."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from federation.errors import ConfigError
from federation.simulate.cost_setup import OURS, CostOutcome


def summary(o: CostOutcome) -> dict[str, Any]:
    d = np.array(o.delays) if o.delays else np.zeros(1)
    return {
        "strategy": o.strategy, "jobs": o.jobs, "done": o.done,
        "cloud_spend": round(o.cloud_spend, 2), "onprem_cost": round(o.onprem_cost, 2),
        "total_cost": round(o.cloud_spend + o.onprem_cost, 2), "gpu_hours_bought": round(o.gpu_hours_bought, 1),
        "gpu_hours_used": {k: round(v, 1) for k, v in sorted(o.gpu_hours_used.items())},
        "nodes_launched": len(o.bills), "spot_nodes": sum(b.node_type.endswith("-spot") for b in o.bills),
        "queue_delay_s": {"mean": round(float(d.mean()), 1), "p50": round(float(np.percentile(d, 50)), 1),
                          "p99": round(float(np.percentile(d, 99)), 1)},
        "spot_interruptions": o.interruptions, "requeued": o.requeued, "lost_gpu_hours": round(o.lost_gpu_hours, 2),
        "violations": o.violations, "nvlink_misses": o.nvlink_misses, "to_cloud": o.to_cloud,
        "to_cloud_onprem_fits": o.to_cloud_onprem_fits, "spot_unasked": o.spot_unasked,
        "span_h": round(o.span / 3600, 2), "cycles": o.cycles, "wall_s": round(o.wall_s, 2),
    }


def _no_slower(r: dict[str, Any], base: dict[str, Any], slack: float = 0.0) -> bool:
    """r's p50 and p99 delay are at most base's (plus `slack`: a share, and at least that many tens of seconds)."""
    return all(r["queue_delay_s"][q] <= base["queue_delay_s"][q] + max(base["queue_delay_s"][q] * slack, 200 * slack)
               for q in ("p50", "p99"))


def dominance(rows: Sequence[dict[str, Any]], ours: str = "ours") -> dict[str, dict[str, Any]]:
    """For each baseline against `ours`: cheaper (cloud spend, what the choice decides: on-prem is sunk),
    no slower at p50 and p99, and so better on every count (`dominates`, with as many jobs done)?
    `dominates_within_5pct`: the same with delays up to 5% (or 10 s) above ours counted as no slower."""
    base = next((r for r in rows if r["strategy"] == ours), None)
    out: dict[str, dict[str, Any]] = {}
    if base is None:
        return out
    for r in rows:
        if r["strategy"] in OURS:
            continue
        cheaper = r["cloud_spend"] < base["cloud_spend"]
        done = r["done"] >= base["done"]
        out[r["strategy"]] = {"cheaper": cheaper, "no_slower": _no_slower(r, base),
                              "dominates": cheaper and done and _no_slower(r, base),
                              "dominates_within_5pct": cheaper and done and _no_slower(r, base, 0.05),
                              "spend_ratio": round(r["cloud_spend"] / base["cloud_spend"], 3)
                              if base["cloud_spend"] else None}
    return out


def notes(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Where ours sits among the others, in a few sentences drawn from the numbers."""
    by = {r["strategy"]: r for r in rows}
    out: list[str] = []
    if "ours" not in by:
        return out

    def delay(r: dict[str, Any]) -> str:
        return f"p50/p99 {r['queue_delay_s']['p50']:g}/{r['queue_delay_s']['p99']:g}s"

    frontier = [r["strategy"] for r in rows if not any(
        o is not r and o["done"] >= r["done"] and o["cloud_spend"] <= r["cloud_spend"]
        and o["queue_delay_s"]["p99"] <= r["queue_delay_s"]["p99"]
        and (o["cloud_spend"], o["queue_delay_s"]["p99"]) != (r["cloud_spend"], r["queue_delay_s"]["p99"])
        for o in rows)]
    out.append("cost / p99-delay frontier (nothing else both cheaper and faster): " + ", ".join(frontier))
    for name in OURS:
        if name not in by:
            continue
        ours, dom = by[name], dominance(rows, name)
        strict = [k for k, v in dom.items() if v["dominates"]]
        close = [k for k, v in dom.items() if v["dominates_within_5pct"] and not v["dominates"]]
        line = (f"{name}: {ours['cloud_spend']:g} cloud, {delay(ours)}; "
                + ("no baseline is both cheaper and faster" if not strict else "DOMINATED by " + ", ".join(strict)))
        if close:
            line += "; but cheaper at a delay within 5% of it: " + ", ".join(
                f"{k} ({by[k]['cloud_spend']:g}, {delay(by[k])})" for k in close)
        out.append(line)
    for r in rows:
        if r["to_cloud"]:
            out.append(f"{r['strategy']}: {r['to_cloud_onprem_fits']} of its {r['to_cloud']} cloud placements were "
                       f"made while the job fitted on-prem; GPU-hours used "
                       + ", ".join(f"{k} {v:g}" for k, v in r["gpu_hours_used"].items())
                       + (f"; {r['spot_interruptions']} spot nodes lost, {r['lost_gpu_hours']:g} GPU-h of work lost"
                          if r["spot_interruptions"] else "")
                       + (f"; {r['spot_unasked']} jobs that refuse spot put on spot nodes already up"
                          if r["spot_unasked"] else ""))
    return out


def plot(rows: Sequence[dict[str, Any]], path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'fedctl[sim]'") from None
    fig, ax = plt.subplots(figsize=(7, 5))
    for r in rows:
        x, p50, p99 = r["cloud_spend"], r["queue_delay_s"]["p50"], r["queue_delay_s"]["p99"]
        line = ax.plot([x, x], [max(p50, 1.0), max(p99, 1.0)], alpha=0.4)[0]
        ax.scatter([x], [max(p99, 1.0)], color=line.get_color(), s=60, label=f"{r['strategy']} (p99; line to p50)")
        ax.scatter([x], [max(p50, 1.0)], color=line.get_color(), s=25, marker="v")
        ax.annotate(r["strategy"], (x, max(p99, 1.0)), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set(title="cost against queueing delay (lower left is better)", xlabel="cloud spend (USD; on-prem is sunk)",
           ylabel="queueing delay, seconds (p99 dot, p50 triangle)", yscale="log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
