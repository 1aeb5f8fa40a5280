"""The exact GPU search inside one site, read through a `SiteGpus` view, without `GpuState`."""
from __future__ import annotations

import numpy as np

from policies.gpu_fit import SiteGpus, SiteLayout, fit_share, fit_whole
from policies.gpus import MILLI, GpuNode, GpuRequest, Slot


def view(free_by_node: list[list[int]], domains: list[tuple[str, ...]] | None = None) -> tuple[SiteGpus, np.ndarray]:
    """One site of nodes n0, n1, ... with the given free thousandths per GPU; every GPU of one model."""
    domains = domains or [("",) * len(f) for f in free_by_node]
    nodes = tuple(GpuNode(f"n{k}", "H100", 80 * 2**30, d) for k, d in enumerate(domains))
    starts, node_of, domain_of, local, free = [], [], [], [], []
    for k, f in enumerate(free_by_node):
        starts.append(len(free))
        for g, milli in enumerate(f):
            node_of.append(k)
            domain_of.append(hash((k, domains[k][g])) if domains[k][g] else -1 - len(free))
            local.append(g)
            free.append(milli)
    site = SiteLayout(0, len(free), nodes, tuple(starts), {n.name: k for k, n in enumerate(nodes)})
    v = SiteGpus(site, np.array(free, dtype=np.int32), np.array(node_of), np.array(domain_of),
                 np.full(len(free), 80 * 2**30, dtype=np.int64), np.array(local))
    return v, np.ones(len(free), dtype=bool)


def test_whole_gpus_go_to_the_node_that_fits_them_tightest():
    v, mine = view([[MILLI] * 4, [MILLI] * 2 + [0, 0]])
    got, miss = fit_whole(v, mine, GpuRequest(count=2))
    assert got is not None and got[1] == (Slot("n1", (0, 1)),)
    assert not miss.detail


def test_a_shape_never_held_is_a_static_miss():
    v, mine = view([[MILLI] * 2, [MILLI] * 2])
    got, miss = fit_whole(v, mine, GpuRequest(count=4, per_node=4))
    assert got is None and miss.static


def test_enough_free_gpus_in_the_wrong_shape_is_not_static():
    v, mine = view([[MILLI, MILLI, 0, 0], [MILLI, MILLI, 0, 0]])
    got, miss = fit_whole(v, mine, GpuRequest(count=4, per_node=4))
    assert got is None and not miss.static and "not in that shape" in miss.detail


def test_a_share_goes_to_the_gpu_with_least_left_over():
    v, mine = view([[MILLI, 600], [300]])
    got, _ = fit_share(v, mine, GpuRequest(share=250))
    assert got is not None and got[1] == (Slot("n1", (0,), 250),)
