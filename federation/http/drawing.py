"""The console's pictures as inline SVG: a site's GPUs grouped by NVLink domain, a training's loss
and accuracy by round. Every name in them comes from a site or a job, so every one is escaped."""
from __future__ import annotations

import time
from collections.abc import Sequence

from markupsafe import Markup, escape

from federation.results import RoundInfo
from federation.v1 import federation_pb2 as pb

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7")
GPU, GAP, PAD = 22, 8, 10
MAX_NODES, MAX_GPUS = 64, 72   # drawn; a site that reports more is summed up in a line


def when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) if ts else ""


def topology(inventory: pb.Inventory) -> Markup:
    """One row per node: its GPUs as squares, coloured by NVLink domain and joined within one."""
    nodes = list(inventory.nodes)[:MAX_NODES]
    if not nodes:
        return Markup("")
    width = PAD * 2 + 160 + min(MAX_GPUS, max(len(n.domains) for n in nodes)) * (GPU + GAP)
    rows, y = [], PAD
    for node in nodes:
        rows.append(f'<text x="{PAD}" y="{y + 15}" class="node">{escape(node.name)[:24]} '
                    f'<tspan class="model">{escape(node.model)[:16]}</tspan></text>')
        colours = {d: PALETTE[k % len(PALETTE)] for k, d in enumerate(dict.fromkeys(d for d in node.domains if d))}
        centres: dict[str, list[int]] = {}
        for k, domain in enumerate(list(node.domains)[:MAX_GPUS]):
            x = PAD + 160 + k * (GPU + GAP)
            if domain:
                centres.setdefault(domain, []).append(x + GPU // 2)
            title = f"GPU {k}: " + (f"NVLink domain {domain}" if domain else "no NVLink peer")
            rows.append(f'<rect x="{x}" y="{y}" width="{GPU}" height="{GPU}" rx="3" '
                        f'fill="{colours.get(domain, "#bbb")}"><title>{escape(title)}</title></rect>')
        for domain, xs in centres.items():
            if len(xs) > 1:
                rows.append(f'<line x1="{xs[0]}" y1="{y + GPU + 4}" x2="{xs[-1]}" y2="{y + GPU + 4}" '
                            f'stroke="{colours[domain]}" stroke-width="3" class="nvlink"/>')
        y += GPU + 2 * GAP
    more = len(inventory.nodes) - len(nodes)
    if more > 0:
        rows.append(f'<text x="{PAD}" y="{y + 12}">and {more} more nodes</text>')
        y += 20
    return Markup(f'<svg class="topology" width="{width}" height="{y + PAD}" role="img" '
                  f'aria-label="GPUs by NVLink domain">{"".join(rows)}</svg>')


def rounds_chart(history: Sequence[RoundInfo], width: int = 640, height: int = 240) -> Markup:
    """Loss and accuracy of each completed round, each on its own scale."""
    done = [r for r in history if r.state == "done"]
    series = {name: [(r.number, float(r.metrics[name])) for r in done
                     if isinstance(r.metrics.get(name), (int, float))] for name in ("loss", "accuracy")}
    if not any(series.values()):
        return Markup("")
    rounds = [n for points in series.values() for n, _ in points]
    lo, hi = min(rounds), max(max(rounds), min(rounds) + 1)
    left, right, top, bottom = 50, width - 20, 20, height - 30
    parts = [f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#888"/>',
             f'<text x="{left}" y="{height - 8}">round {lo}</text>',
             f'<text x="{right - 60}" y="{height - 8}">round {hi}</text>']
    for k, (name, points) in enumerate(series.items()):
        if not points:
            continue
        values = [v for _, v in points]
        vmin, vmax = min(values), max(values)
        span = (vmax - vmin) or 1.0
        xy = " ".join(f"{left + (n - lo) / (hi - lo) * (right - left):.1f},"
                      f"{bottom - (v - vmin) / span * (bottom - top):.1f}" for n, v in points)
        colour = PALETTE[k]
        parts.append(f'<polyline points="{xy}" fill="none" stroke="{colour}" stroke-width="2" class="{name}"/>')
        parts.append(f'<text x="{left + 10 + k * 200}" y="{top - 5}" fill="{colour}">{name} '
                     f'{points[-1][1]:.4g} (from {values[0]:.4g})</text>')
    return Markup(f'<svg class="chart" width="{width}" height="{height}" role="img" '
                  f'aria-label="loss and accuracy by round">{"".join(parts)}</svg>')
