"""FGD inside a site (`policies.fgd`, `GpuState.fit` with a Demand): the node fragmentation of the
paper's definition on hand-built nodes, the choice where best fit and FGD part ways, the topology
rules still kept, and, over random states, the choice is always one where the federation's
fragmentation (measured by the simulator's own code) grows least."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.simulate.metrics import Shapes, fragmentation
from policies import fgd
from policies.fgd import Demand
from policies.gpu_state import GpuState
from policies.gpus import MILLI, GpuNode, GpuRequest, Inventory, Slot

SHARE = GpuRequest(share=600)
ONE, FOUR = GpuRequest(count=1), GpuRequest(count=4, nvlink="required")


def node(name: str, gpus: int = 4, model: str = "A100", nvlink: bool = True) -> GpuNode:
    return GpuNode(name, model, 80 << 30, tuple(f"{name}/nv" if nvlink else "" for _ in range(gpus)))


def state_with(free: dict[str, list[int]], nvlink: bool = True) -> GpuState:
    names = list(free)
    state = GpuState([Inventory(tuple(node(n, len(free[n]), nvlink=nvlink) for n in names))])
    taken = tuple(Slot(n, (g,), MILLI - f) for n in names for g, f in enumerate(free[n]) if f < MILLI)
    if taken:
        state.reserve(0, taken)   # as placements would, so that the state's counters agree
    return state


def test_a_demand_keeps_the_common_asks_weighed_by_how_often_they_come():
    d = Demand.of([SHARE] * 6 + [ONE] * 3 + [FOUR] + [None] * 5, cover=0.9)
    assert d.requests == (SHARE, ONE) and d.weights == pytest.approx((2 / 3, 1 / 3))


def test_a_nodes_fragmentation_is_what_each_ask_cannot_use_weighed_by_the_demand():
    state = state_with({"a": [MILLI, MILLI, 500, 0]})
    free, domains, _, models = fgd.rows(state, np.array([0]))
    # whole-GPU asks cannot use the half GPU (500); 0.6 shares cannot use it either; 4 in one
    # NVLink domain do not fit at all: every free thousandth (2500) is a fragment to them
    assert fgd.expected(free, domains, models, state, Demand((ONE,), (1.0,)))[0] == 500
    assert fgd.expected(free, domains, models, state, Demand((SHARE,), (1.0,)))[0] == 500
    assert fgd.expected(free, domains, models, state, Demand((FOUR,), (1.0,)))[0] == 2500
    assert fgd.expected(free, domains, models, state, Demand((ONE, FOUR), (0.5, 0.5)))[0] == 1500
    h100 = Demand((GpuRequest(count=1, models=frozenset({"H100"})),), (1.0,))
    assert fgd.expected(free, domains, models, state, h100)[0] == 2500   # another model: all of it


def test_fgd_leaves_the_share_the_workload_asks_for_where_best_fit_would_break_it():
    """A 0.3 share: best fit takes the GPU with 0.9 free (0.6 left); when the workload asks for
    0.7 shares, that leaves a sliver none can use, so FGD takes a whole GPU (0.7 left, usable)."""
    state = state_with({"a": [900, 0, 0, 0], "b": [MILLI, 0, 0, 0]}, nvlink=False)
    small = GpuRequest(share=300)
    (best_fit,) = state.copy().fit(0, small)[0]
    assert best_fit.node == "a"
    state.demand = Demand((GpuRequest(share=700),), (1.0,))
    (chosen,) = state.fit(0, small)[0]
    assert chosen.node == "b"


def test_fgd_keeps_a_whole_nvlink_domain_for_the_jobs_that_need_one():
    """One GPU: best fit and FGD agree to break the node already broken, not the whole one that
    an NVLink job of four needs."""
    state = state_with({"a": [MILLI, MILLI, MILLI, 0], "b": [MILLI] * 4})
    state.demand = Demand((FOUR, ONE), (0.5, 0.5))
    (chosen,) = state.fit(0, ONE)[0]
    assert chosen.node == "a"
    (block,) = state.fit(0, FOUR)[0]
    assert block.node == "b" and len(block.gpus) == 4   # in one NVLink domain, as the rule says


def test_without_a_demand_the_choice_is_best_fit_as_before():
    state = state_with({"a": [900, 0, 0, 0], "b": [MILLI, 0, 0, 0]}, nvlink=False)
    assert state.demand is None
    assert state.fit(0, GpuRequest(share=300))[0][0].node == "a"


def mixed_site() -> GpuState:
    """One 8-GPU NVLink node of G2 and two PCIe nodes of 2 T4s each."""
    return GpuState([Inventory((GpuNode("g", "G2", 80 << 30, ("g/nv",) * 8),
                                GpuNode("t0", "T4", 16 << 30, ("", "")), GpuNode("t1", "T4", 16 << 30, ("", ""))))])


EIGHT = GpuRequest(count=8, nvlink="required")
T4 = GpuRequest(count=1, models=frozenset({"T4"}))


def test_a_models_pressure_is_the_workload_only_it_serves_spread_over_the_gpus_serving_it():
    state = mixed_site()
    g2, t4 = state.models["G2"], state.models["T4"]
    pressed = fgd.pressure(state, Demand((ONE, EIGHT, T4), (0.5, 0.25, 0.25)))
    # ONE: 1 GPU over all 12; EIGHT: 8 over the 8 of the NVLink node; T4: 1 over the 4 T4s
    assert pressed[0, g2] == pytest.approx(0.5 / 12 + 0.25 * 8 / 8)
    assert pressed[0, t4] == pytest.approx(0.5 / 12 + 0.25 / 4)


def test_a_gpu_of_any_model_leaves_the_nvlink_node_the_workloads_big_asks_need():
    state = mixed_site()
    assert state.fit(0, ONE)[0][0].node == "g"   # no workload known: the model the site has most of
    state.demand = Demand((ONE, EIGHT), (0.8, 0.2))
    assert state.fit(0, ONE)[0][0].node in {"t0", "t1"}
    state.demand = Demand((ONE, GpuRequest(share=500)), (0.5, 0.5))   # nothing needs the G2s more
    assert state.fit(0, GpuRequest(share=500))[0][0].node == "g"


def test_a_gpu_of_any_model_leaves_the_model_the_workload_asks_for_by_name():
    state = mixed_site()
    state.demand = Demand((ONE, T4, EIGHT), (0.4, 0.5, 0.1))   # T4s: 0.5 / 4 by name; G2s: 0.1 * 8 / 8
    assert state.fit(0, ONE)[0][0].node == "g"
    state.demand = Demand((ONE, T4, EIGHT), (0.4, 0.05, 0.55))
    assert state.fit(0, ONE)[0][0].node in {"t0", "t1"}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from([0, 200, 500, 800, MILLI]), min_size=4, max_size=4), min_size=2, max_size=5),
       st.sampled_from([GpuRequest(share=300), GpuRequest(share=500), ONE]),
       st.lists(st.sampled_from([SHARE, ONE, FOUR, GpuRequest(count=2, nvlink="required")]), min_size=1, max_size=6))
def test_the_gpu_fgd_chooses_grows_the_measured_fragmentation_least(rows, req, asks):
    state = state_with({f"n{i}": r for i, r in enumerate(rows)})
    demand = Demand.of(asks, cover=1.0)
    state.demand = demand
    got = state.fit(0, req)[0]
    need = req.share or MILLI
    candidates = np.flatnonzero(state.free >= need)
    if not candidates.size:
        assert got is None
        return
    shapes = Shapes(demand.requests, demand.weights)

    def after(g: int) -> float:   # the simulator's own measure of the whole site, g taken
        trial = state.copy()
        trial.free[g] -= need
        return fragmentation(trial, shapes)[0]

    (slot,) = got
    chosen = int(state.node_ptr[int(slot.node[1:])]) + slot.gpus[0]
    assert after(chosen) <= min(after(int(g)) for g in candidates) + 1e-6
