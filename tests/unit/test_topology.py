"""GPU topology: exact fits inside a site, the scheduler's use of them, and reasons when they fail."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from policies import (
    GpuNode,
    GpuRequest,
    GpuState,
    Inventory,
    PendingJob,
    Reason,
    Rules,
    SiteView,
    Slot,
    Snapshot,
    check_binding,
    schedule,
    static_verdict,
)
from policies import verdicts as placement_verdicts
from policies.gpus import MILLI

GiB = 2**30


def node(name, gpus, model="H100", nvlink=(), rack="", block="", memory=80 * GiB):
    """nvlink: groups of local GPU indices that share a domain."""
    domains = [""] * gpus
    for k, group in enumerate(nvlink):
        for g in group:
            domains[g] = f"{name}/nv{k}"
    return GpuNode(name, model, memory, tuple(domains), rack, block)


DGX = Inventory((node("dgx-0", 8, nvlink=[range(8)]),))
SCATTERED = Inventory((node("pcie-0", 4), node("pcie-1", 4)))
PAIRS = Inventory((node("pair-0", 4, nvlink=[(0, 1), (2, 3)]),))


def sites(*names):
    return tuple(SiteView(name=n, jurisdiction="DE", region="eu-west", labels={}, cpus=64, memory=512 * GiB,
                          gpus=0) for n in names)


def world(**inventories) -> Snapshot:
    names = list(inventories)
    return Snapshot(sites(*names), {}, Rules({}), GpuState([inventories[n] for n in names]))


def job(id="j", **gpu) -> PendingJob:
    return PendingJob(id=id, tenant="t", gpu=GpuRequest(**gpu))


def test_nvlink_job_goes_to_the_domain_not_the_scattered_site():
    w = world(scattered=SCATTERED, dgx=DGX)
    r = schedule(w, [job(count=2, nvlink="required")], 0)
    (d,) = r.decisions
    assert d.site == "dgx" and len(d.binding) == 1 and len(d.binding[0].gpus) == 2
    assert check_binding(DGX, GpuRequest(count=2, nvlink="required"), d.binding) == ""


def test_scattered_site_is_passed_over_with_a_topology_reason():
    w = world(scattered=SCATTERED)
    r = schedule(w, [job(count=2, nvlink="required")], 0)
    (u,) = r.unplaced
    assert u.reason_at(0) is Reason.TOPOLOGY
    (v,) = placement_verdicts(u, r_job := job(count=2, nvlink="required"), w)
    assert "no NVLink domain holds 2 GPUs (largest: 1)" in v.detail
    assert static_verdict(r_job, w.sites[0], w)[0] is Reason.TOPOLOGY


def test_best_fit_keeps_the_big_domain_whole():
    # Two 2-GPU jobs: both go to the NVLink pairs, leaving the 8-GPU domain free for an 8-GPU job.
    w = world(pairs=PAIRS, dgx=DGX)
    jobs = [job("a", count=2, nvlink="required"), job("b", count=2, nvlink="required"),
            job("c", count=8, nvlink="required")]
    r = schedule(w, [PendingJob(id=j.id, tenant="t", gpu=j.gpu, submitted_at=t) for t, j in enumerate(jobs)], 0)
    assert {d.job_id: d.site for d in r.decisions} == {"a": "pairs", "b": "pairs", "c": "dgx"}
    a, b = (d.binding[0].gpus for d in r.decisions[:2])
    assert {a, b} == {(0, 1), (2, 3)}


def test_single_gpus_fill_a_started_domain_first():
    w = world(pairs=PAIRS)
    first = schedule(w, [job("a", count=1)], 0).decisions[0]
    w.gpus.reserve(0, first.binding)
    second = schedule(w, [job("b", count=1)], 0).decisions[0]
    # Best fit: the second single GPU completes the started pair, keeping the other pair whole.
    assert {first.binding[0].gpus, second.binding[0].gpus} == {(0,), (1,)}


def test_a_busy_domain_is_fragmented_not_topology():
    w = world(pairs=PAIRS)
    w.gpus.reserve(0, (Slot("pair-0", (0,)), Slot("pair-0", (2,))))
    r = schedule(w, [job("d", count=2, nvlink="required")], 0)
    (u,) = r.unplaced
    assert u.reason_at(0) is Reason.FRAGMENTED
    assert "waiting" in u.summary
    (v,) = placement_verdicts(u, job("d", count=2, nvlink="required"), w)
    assert v.detail == ("needs 2 GPUs in one NVLink domain: 2 such GPUs free, but not in that shape "
                        "(most free in one NVLink domain: 1)")
    # Without the NVLink rule the same two GPUs do.
    assert schedule(w, [job("e", count=2)], 0).decisions[0].binding[0].gpus == (1, 3)


def test_gpu_type_filters_and_explains():
    w = world(a100=Inventory((node("n", 8, model="A100"),)), h100=DGX)
    r = schedule(w, [job("x", count=1, models=frozenset({"H100"}))], 0)
    assert r.decisions[0].site == "h100"
    r = schedule(w, [job("y", count=1, models=frozenset({"B200"}))], 0)
    (u,) = r.unplaced
    assert u.reason_at(0) is Reason.GPU_TYPE and u.reason_at(1) is Reason.GPU_TYPE
    assert "no site may ever take it" in u.summary
    (v, _) = placement_verdicts(u, job("y", count=1, models=frozenset({"B200"})), w)
    assert "no GPU type B200 here (site has A100)" in v.detail


def test_gpu_memory_minimum_and_too_many_gpus():
    small = Inventory((node("n", 8, model="A100", memory=40 * GiB),))
    w = world(small=small)
    r = schedule(w, [job("m", count=1, memory=80 * GiB), job("n", count=9)], 0)
    codes = {u.job_id: u.reason_at(0) for u in r.unplaced}
    assert codes == {"m": Reason.GPU_TYPE, "n": Reason.NEVER_FITS}


def test_fractional_jobs_pack_onto_shared_gpus():
    w = world(s=Inventory((node("n", 2),)))
    r = schedule(w, [PendingJob(id=f"f{i}", tenant="t", submitted_at=i, gpu=GpuRequest(share=400))
                     for i in range(4)], 0)
    gpus = [d.binding[0].gpus[0] for d in r.decisions]
    # 0.4 + 0.4 share one GPU, the third does not fit beside them (0.2 left) and opens the other.
    assert gpus[0] == gpus[1] and gpus[2] != gpus[0] and gpus[3] == gpus[2]
    assert all(d.binding[0].milli == 400 for d in r.decisions)


def test_gpu_memory_slice_is_sized_by_the_gpu():
    w = world(s=Inventory((node("n", 1, memory=80 * GiB),)))
    (d,) = schedule(w, [job(memory=20 * GiB)], 0).decisions
    assert d.binding[0].milli == 250
    r = schedule(w, [job(memory=100 * GiB)], 0)
    assert r.unplaced[0].reason_at(0) is Reason.NEVER_FITS


def test_per_node_and_rack_colocation():
    racks = Inventory(tuple(node(f"n{i}", 4, rack=f"r{i // 2}") for i in range(4)))
    w = world(s=racks)
    req = dict(count=8, per_node=4, colocate="rack")
    (d,) = schedule(w, [job(**req)], 0).decisions
    assert check_binding(racks, GpuRequest(**req), d.binding) == ""
    assert {s.node for s in d.binding} in ({"n0", "n1"}, {"n2", "n3"})
    r = schedule(w, [job(count=12, per_node=4, colocate="rack")], 0)
    assert r.unplaced[0].reason_at(0) is Reason.TOPOLOGY


def test_fabric_domain_spans_nodes():
    # NVL72-class: every GPU of four nodes shares one fabric clique.
    fabric = Inventory(tuple(GpuNode(f"t{i}", "GB200", 192 * GiB, ("clique-1",) * 4) for i in range(4)))
    w = world(rack=fabric)
    (d,) = schedule(w, [job(count=16, nvlink="required")], 0).decisions
    assert len(d.binding) == 4 and check_binding(fabric, GpuRequest(count=16, nvlink="required"), d.binding) == ""


def test_schedule_does_not_mutate_the_snapshot_state():
    w = world(dgx=DGX)
    before = w.gpus.free.copy()
    schedule(w, [job(count=4)], 0)
    assert (w.gpus.free == before).all()


def test_release_gives_the_block_back():
    w = world(dgx=DGX)
    (d,) = schedule(w, [job(count=8, nvlink="required")], 0).decisions
    w.gpus.reserve(0, d.binding)
    assert w.gpus.whole_free[0].sum() == 0
    w.gpus.reserve(0, d.binding, +1)
    assert w.gpus.whole_free[0].sum() == 8 and (w.gpus.free == MILLI).all()


@st.composite
def clusters(draw):
    invs = []
    for s in range(draw(st.integers(1, 3))):
        nodes = []
        for k in range(draw(st.integers(1, 3))):
            n = draw(st.sampled_from([1, 2, 4, 8]))
            split = draw(st.sampled_from([0, 1, 2]))
            groups = [] if split == 0 else [range(n)] if split == 1 else [range(n // 2), range(n // 2, n)]
            nodes.append(node(f"s{s}n{k}", n, model=draw(st.sampled_from(["A", "B"])), nvlink=groups,
                              rack=f"r{k % 2}"))
        invs.append(Inventory(tuple(nodes)))
    return invs


@st.composite
def requests(draw):
    count = draw(st.sampled_from([0, 1, 2, 4, 8]))
    return GpuRequest(
        count=count, share=0 if count else draw(st.sampled_from([300, 500, 1000])),
        models=draw(st.sampled_from([frozenset(), frozenset({"A"}), frozenset({"B"})])),
        nvlink=draw(st.sampled_from(["", "required", "preferred"])),
        per_node=draw(st.sampled_from([0, 2])) if count and count % 2 == 0 else 0,
        colocate=draw(st.sampled_from(["", "rack"])))


@settings(max_examples=150, deadline=None)
@given(clusters(), st.lists(requests(), min_size=1, max_size=12))
def test_every_binding_honours_its_request_and_capacity(invs, reqs):
    names = [f"s{i}" for i in range(len(invs))]
    w = Snapshot(sites(*names), {}, Rules({}), GpuState(invs))
    jobs = [PendingJob(id=f"j{k}", tenant="t", gpu=r, submitted_at=k) for k, r in enumerate(reqs)]
    r = schedule(w, jobs, 0)
    by_id = {j.id: j for j in jobs}
    held: dict[tuple, int] = {}
    for d in r.decisions:
        inv = invs[names.index(d.site)]
        assert check_binding(inv, by_id[d.job_id].gpu, d.binding) == ""
        for s in d.binding:
            for g in s.gpus:
                held[(d.site, s.node, g)] = held.get((d.site, s.node, g), 0) + s.milli
    assert all(v <= MILLI for v in held.values())
    for u in r.unplaced:
        for i, site in enumerate(w.sites):
            code = u.reason_at(i)
            if code in (Reason.GPU_TYPE, Reason.TOPOLOGY, Reason.NEVER_FITS):
                # A static refusal agrees with the scalar reference.
                assert static_verdict(by_id[u.job_id], site, w)[0] is code


@settings(max_examples=60, deadline=None)
@given(clusters(), st.lists(requests(), min_size=1, max_size=12), st.randoms(use_true_random=False))
def test_incremental_counters_match_a_fresh_count(invs, reqs, rnd):
    """Reserving and releasing keeps every per-site summary equal to one computed from scratch."""
    state = GpuState(invs)
    names = [f"s{i}" for i in range(len(invs))]
    w = Snapshot(sites(*names), {}, Rules({}), state)
    decisions = schedule(w, [PendingJob(id=f"j{k}", tenant="t", gpu=r) for k, r in enumerate(reqs)], 0).decisions
    held = [(names.index(d.site), d.binding) for d in decisions]
    for i, b in held:
        state.reserve(i, b)
    for i, b in rnd.sample(held, len(held) // 2):
        state.reserve(i, b, +1)
    fresh = GpuState(invs)
    for s in range(len(invs)):
        lo, hi = fresh.sites[s].start, fresh.sites[s].end
        for g in range(lo, hi):
            taken = MILLI - int(state.free[g])
            if taken:
                site = fresh.sites[s]
                k = int(fresh.node_of[g]) - int(fresh.node_of[site.start])
                fresh.reserve(s, (Slot(site.nodes[k].name, (int(fresh.local[g]),), taken),))
    for name in ("free", "whole_free", "max_domain", "max_node", "max_share", "shared_fit", "node_whole",
                 "group_whole", "node_hist", "group_hist", "node_hist_any", "group_hist_any", "whole_any",
                 "domain_any", "share_any", "whole_total", "node_tight", "group_tight", "node_tight_any",
                 "group_tight_any"):
        assert (getattr(state, name) == getattr(fresh, name)).all(), name
