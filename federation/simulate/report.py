"""Simulator results as a table, JSON, and a PNG."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from federation.errors import ConfigError
from federation.simulate.engine import Outcome


def summary(o: Outcome) -> dict[str, Any]:
    waits = np.array(o.waits) if o.waits else np.zeros(1)
    frag = [s.fragmented_gpus / s.free_gpus for s in o.samples if s.free_gpus > 0]
    return {
        "strategy": o.strategy, "gpus": o.total_gpus, "placed": o.placed, "never_placed": o.never_placed,
        "violations": sum(o.violations.values()), "violations_by_rule": dict(sorted(o.violations.items())),
        "nvlink_required": o.nvlink_required, "nvlink_in_one_domain": o.nvlink_in_one_domain,
        "gpu_utilisation": round(o.gpu_seconds_used / o.span / o.total_gpus, 4) if o.span and o.total_gpus else None,
        "unallocated_gpus_at_full": None if o.unallocated_at_full is None else round(o.unallocated_at_full, 1),
        "allocation_rate_at_full": None if o.unallocated_at_full is None
        else round(1 - o.unallocated_at_full / o.total_gpus, 4),
        # GPUs allocated by placements that keep every rule: a baseline that spreads an NVLink job
        # over PCIe GPUs "allocates" them, but the job does not get what it asked for.
        "unallocated_or_misplaced_at_full": None if o.unallocated_at_full is None
        else round(o.unallocated_at_full + o.violating_gpus, 1),
        "fragmented_gpus_at_end": round(o.samples[-1].fragmented_gpus, 1) if o.samples else None,
        "fragmentation_rate_mean": round(float(np.mean(frag)), 4) if frag else None,
        "queue_delay_s": {"mean": round(float(waits.mean()), 1), "p50": round(float(np.percentile(waits, 50)), 1),
                          "p95": round(float(np.percentile(waits, 95)), 1),
                          "p99": round(float(np.percentile(waits, 99)), 1)},
        "decisions_per_s": round(o.decisions_per_s),
    }


def ratios(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each baseline against `topology`: how many times its unallocated / fragmented GPUs ours are."""
    ours = next((r for r in rows if r["strategy"] == "topology"), None)
    out: dict[str, dict[str, float]] = {}
    if ours is None:
        return out
    for r in rows:
        if r is ours:
            continue
        entry = {}
        for key in ("unallocated_gpus_at_full", "unallocated_or_misplaced_at_full", "fragmented_gpus_at_end",
                    "fragmentation_rate_mean"):
            if r[key] and ours[key] is not None:
                entry[key] = round(ours[key] / r[key], 3)
        out[f"topology/{r['strategy']}"] = entry
    return out


def table(rows: Sequence[dict[str, Any]]) -> str:
    cols = [("strategy", "STRATEGY"), ("placed", "PLACED"), ("never_placed", "NEVER"),
            ("violations", "VIOLATIONS"), ("nvlink", "NVLINK-OK"), ("gpu_utilisation", "UTIL"),
            ("unallocated_gpus_at_full", "UNALLOC@100%"), ("unallocated_or_misplaced_at_full", "+MISPLACED"),
            ("fragmented_gpus_at_end", "FRAG-GPUS"),
            ("fragmentation_rate_mean", "FRAG-RATE"), ("wait", "WAIT-P95-S")]
    lines = []
    for r in rows:
        cells = dict(r, nvlink=f"{r['nvlink_in_one_domain']}/{r['nvlink_required']}",
                     wait=r["queue_delay_s"]["p95"])
        lines.append([("-" if cells[k] is None else str(cells[k])) for k, _ in cols])
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, (_, h) in enumerate(cols)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*(h for _, h in cols))] + [fmt.format(*line) for line in lines])


def plot(outcomes: dict[str, Sequence[Outcome]], path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'fedctl[sim]'") from None
    fig, axes = plt.subplots(len(outcomes), 3, figsize=(15, 4 * len(outcomes)), squeeze=False)
    for row, (mode, runs) in zip(axes, outcomes.items()):
        for o in runs:
            t = np.array([s.t for s in o.samples])
            x = t - t[0] if t.size else t
            unit = "jobs arrived" if mode == "inflation" else "simulated hours"
            x = x if mode == "inflation" else x / 3600
            row[0].plot(x, [s.used_gpus / o.total_gpus for s in o.samples], label=o.strategy)
            row[0].set(title=f"{mode}: GPU allocation", xlabel=unit, ylabel="allocated / total")
            row[1].plot(x, [s.fragmented_gpus for s in o.samples], label=o.strategy)
            row[1].set(title=f"{mode}: fragmented GPUs (FGD measure)", xlabel=unit, ylabel="GPUs")
            if mode == "inflation":
                row[2].plot(x, [s.never_placed for s in o.samples], label=o.strategy)
                row[2].set(title="inflation: jobs no site could take", xlabel=unit, ylabel="jobs")
                continue
            waits = np.sort(np.array(o.waits)) if o.waits else np.zeros(1)
            row[2].plot(waits, np.linspace(0, 1, waits.size), label=o.strategy)
            row[2].set(title=f"{mode}: queueing delay of GPU jobs", xlabel="seconds", ylabel="CDF",
                       xscale="symlog")
        for ax in row:
            ax.legend()
            ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
