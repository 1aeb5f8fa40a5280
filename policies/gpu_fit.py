"""The exact GPU search inside one site, for the shapes the state's counters do not answer.

`fit_whole` and `fit_share` find the best block of one GPU model for a request (best fit by
topology level, so big blocks stay whole) or say why there is none. They read one site's
slice of `GpuState`'s flat arrays through `SiteGpus` and change nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from policies.gpus import MILLI, Binding, GpuNode, GpuRequest, Miss, Slot, slice_of

# A candidate block: (its rank, lower is better; the GPUs it takes).
Found = tuple[tuple, Binding]


@dataclass
class SiteLayout:
    """Static layout of one site inside the flat arrays."""

    start: int                            # first GPU index
    end: int
    nodes: tuple[GpuNode, ...]
    node_start: tuple[int, ...]           # first flat GPU index of each node
    names: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SiteGpus:
    """One site's GPUs as the search reads them: its layout and its slice of each flat array."""

    site: SiteLayout
    free: np.ndarray                      # thousandths free per GPU (all MILLI for a capacity check)
    node_of: np.ndarray                   # federation-wide node index per GPU
    domain_of: np.ndarray
    memory_of: np.ndarray
    local: np.ndarray                     # index of each GPU on its node


def closeness(miss: Miss) -> int:
    """Of a request's misses over several GPU models, the one to report: nearest to fitting."""
    return 3 if not miss.static else 2 if miss.kind == "topology" else 1 if miss.kind == "capacity" else 0


def type_miss(site: SiteLayout, req: GpuRequest) -> str:
    here = sorted({n.model or "GPUs of unreported type" for n in site.nodes})
    if not here:
        return "site has no GPUs"
    wanted = f"GPU type {'|'.join(sorted(req.models))}" if req.models else "GPUs"
    if req.count and req.memory:
        wanted += f" with {req.memory / 2**30:.3g}Gi"
    return f"no {wanted} here (site has {', '.join(here)})"


def fit_share(v: SiteGpus, mine: np.ndarray, req: GpuRequest) -> tuple[Found | None, Miss]:
    """A share (or memory slice) of one GPU among `mine`, best fit."""
    idx = np.flatnonzero(mine)
    mem = v.memory_of[idx[0]]
    share = req.share or slice_of(req.memory, int(mem))
    if share > MILLI:
        return None, Miss(True, f"{req.memory / 2**30:.3g}Gi is more than one GPU's {mem / 2**30:.3g}Gi")
    f = v.free[idx]
    ok = f >= share
    if not ok.any():
        return None, Miss(False, f"no GPU has {share / MILLI:g} free (most free on one: {f.max() / MILLI:g})",
                          "capacity")
    # Best fit: the GPU whose free share is closest above the ask, so shared GPUs fill first.
    cand = idx[ok]
    left = v.free[cand] - share
    g = int(cand[np.argmin(left)])
    k = int(np.searchsorted(v.site.node_start, v.site.start + g, side="right")) - 1
    slot = Slot(v.site.nodes[k].name, (int(v.local[g]),), share)
    return ((int(left.min()),), (slot,)), Miss(False, "")


def fit_whole(v: SiteGpus, mine: np.ndarray, req: GpuRequest) -> tuple[Found | None, Miss]:
    """`req.count` whole GPUs among `mine`, in the request's shape, best fit."""
    n = req.count
    whole = mine & (v.free == MILLI)
    total = int(mine.sum())
    if total < n:
        return None, Miss(True, f"{total} such GPU{'s' if total != 1 else ''} in all, needs {n}", "capacity")
    best: Found | None = None
    static_ok = False
    for members in _groups(v, mine, req):
        if int(members.sum()) < n:
            continue
        if not _shape_fits(members, v.node_of, req):
            continue
        static_ok = True
        avail = members & whole
        if int(avail.sum()) < n:
            continue
        got = _pick(v, avail, req)
        if got is not None and (best is None or got[0] < best[0]):
            best = got
    if best is not None:
        return best, Miss(False, "")
    if not static_ok:
        return None, Miss(True, _shape_miss(mine, v.node_of, v.domain_of, req))
    free_n = int(whole.sum())
    if free_n < n:
        return None, Miss(False, f"{free_n} of {total} such GPUs free, needs {n}", "capacity")
    return None, Miss(False, f"{free_n} such GPUs free, but not in that shape "
                             f"({_largest(whole, v.node_of, v.domain_of, req)})")


def _groups(v: SiteGpus, mine: np.ndarray, req: GpuRequest) -> list[np.ndarray]:
    """Sets of GPUs the whole job must fit inside: one NVLink domain, one rack or block, or the site."""
    groups = [mine]
    if req.nvlink == "required":
        dom = v.domain_of
        groups = [mine & (dom == d) for d in np.unique(dom[mine])]
    if req.colocate:
        node_of = v.node_of - (v.node_of[0] if len(mine) else 0)
        label = np.array([getattr(v.site.nodes[k], req.colocate) for k in node_of], dtype=object)
        groups = [g & (label == x) for g in groups for x in set(label[g].tolist())]
    return groups


def _per_node(members: np.ndarray, node_of: np.ndarray) -> np.ndarray:
    return np.unique(node_of[members], return_counts=True)[1]


def _shape_fits(members: np.ndarray, node_of: np.ndarray, req: GpuRequest) -> bool:
    if not req.per_node:
        return True
    counts = _per_node(members, node_of)
    return int((counts // req.per_node).sum()) * req.per_node >= req.count


def _plan(nodes: np.ndarray, counts: np.ndarray, req: GpuRequest) -> list[tuple[int, int]] | None:
    """(node, GPUs to take there): fewest nodes, best-fit nodes; None when per_node cannot be met."""
    n = req.count
    if req.per_node:
        take = {int(k): req.per_node for k, c in zip(nodes, counts) if c >= req.per_node}
        if len(take) * req.per_node < n:
            return None
        # Best fit: nodes with the fewest free GPUs that still hold per_node.
        order = sorted(take, key=lambda k: (int(counts[nodes == k][0]), k))[: n // req.per_node]
        return [(k, req.per_node) for k in order]
    fits = [(int(c), int(k)) for k, c in zip(nodes, counts) if c >= n]
    if fits:
        return [(min(fits)[1], n)]
    plan, left = [], n
    for c, k in sorted(((int(c), int(k)) for k, c in zip(nodes, counts)), reverse=True):
        plan.append((k, min(c, left)))
        left -= min(c, left)
        if not left:
            break
    return plan


def _pick(v: SiteGpus, avail: np.ndarray, req: GpuRequest) -> Found | None:
    """Choose GPUs from `avail`: fewest nodes, best-fit nodes, NVLink-dense within a node."""
    node_of, domain_of = v.node_of, v.domain_of
    nodes, counts = np.unique(node_of[avail], return_counts=True)
    plan = _plan(nodes, counts, req)
    if plan is None:
        return None
    slots, chosen_all, leftover = [], [], 0
    base_node = int(node_of[0])
    for k, want in plan:
        on = np.flatnonzero(avail & (node_of == k))
        dom = domain_of[on]
        # Within a node, the NVLink domain with the fewest free GPUs that still holds the
        # node's share (best fit), else the largest domains first.
        doms, dcounts = np.unique(dom, return_counts=True)
        fit = [(int(c), int(d)) for d, c in zip(doms, dcounts) if c >= want]
        if fit:
            chosen = on[dom == min(fit)[1]][:want]
        else:
            rank = {int(d): -int(c) for d, c in zip(doms, dcounts)}
            chosen = np.array(sorted(on, key=lambda g: (rank[int(domain_of[g])], g))[:want])
        chosen_all.extend(chosen.tolist())
        leftover += int(counts[nodes == k][0]) - want
        slots.append(Slot(v.site.nodes[k - base_node].name, tuple(int(v.local[g]) for g in chosen)))
    split = len(set(domain_of[chosen_all].tolist())) if req.nvlink == "preferred" else 0
    return (len(plan), split, leftover), tuple(slots)


def _shape_miss(mine: np.ndarray, node_of: np.ndarray, domain_of: np.ndarray, req: GpuRequest) -> str:
    if req.nvlink == "required":
        _, counts = np.unique(domain_of[mine], return_counts=True)
        return f"no NVLink domain holds {req.count} GPUs (largest: {int(counts.max())})"
    if req.per_node:
        counts = _per_node(mine, node_of)
        return (f"fewer than {req.count // req.per_node} nodes with {req.per_node} GPUs each "
                f"(largest node: {int(counts.max())})")
    return f"no {req.colocate} holds {req.count} GPUs"


def _largest(whole: np.ndarray, node_of: np.ndarray, domain_of: np.ndarray, req: GpuRequest) -> str:
    if not whole.any():
        return "none free"
    if req.nvlink == "required":
        _, counts = np.unique(domain_of[whole], return_counts=True)
        return f"most free in one NVLink domain: {int(counts.max())}"
    _, counts = np.unique(node_of[whole], return_counts=True)
    return f"most free on one node: {int(counts.max())}"
