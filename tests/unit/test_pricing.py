"""Prices and elastic capacity in the pure placement function: spill-over, start delays, spot,
max_price, and the room a site may still add, taken and given back within a cycle."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from policies import (
    ClassificationRule,
    DatasetInfo,
    PendingJob,
    Reason,
    Rules,
    SiteView,
    Snapshot,
    expand_jurisdictions,
    schedule,
    static_verdict,
)
from policies.gpu_state import GpuState
from policies.gpus import GpuNode, GpuRequest, Inventory, Slot
from policies.pricing import ALLOW, NEVER, ON_DEMAND, PREFER, SPOT, Costs, Elastic, NodeType, Pricing, Rates

GiB = 2**30
RULES = Rules({"gdpr-personal": ClassificationRule(expand_jurisdictions(["EU"])),
               "public": ClassificationRule(None, allow_staging=True)})
CATALOG = {"patients": DatasetInfo("patients", "gdpr-personal", frozenset({"onprem"})),
           "open": DatasetInfo("open", "public", frozenset({"onprem"}))}
ONPREM_PRICE = Pricing(Rates(cpu_hour=0.01, memory_gib_hour=0.001))
CLOUD_PRICE = Pricing(Rates(cpu_hour=0.05, memory_gib_hour=0.005, gpu_hour={"A10G": 1.0}),
                      spot=Rates(cpu_hour=0.02, memory_gib_hour=0.002, gpu_hour={"A10G": 0.4}))


def onprem(cpus=4.0, used=0.0, **kw) -> SiteView:
    return SiteView(name="onprem", jurisdiction="DE", region="eu-west", labels={}, cpus=cpus, memory=16 * GiB,
                    gpus=0, used_cpus=used, pricing=ONPREM_PRICE, **kw)


def cloud(name="us-cloud", jurisdiction="US", region="us-east", up=None, types=None, **kw) -> SiteView:
    types = types or (NodeType("cpu-od", cpus=4, memory=16 * GiB, max=2, start_s=90),
                      NodeType("cpu-spot", cpus=4, memory=16 * GiB, max=2, spot=True, start_s=120))
    kw = {"cpus": 0.0, "memory": 0.0, "gpus": 0.0, **kw}
    return SiteView(name=name, jurisdiction=jurisdiction, region=region, labels={}, pricing=CLOUD_PRICE,
                    elastic=Elastic(tuple(types), up=up or {}), **kw)


def world(*sites: SiteView) -> Snapshot:
    return Snapshot(tuple(sites), CATALOG, RULES)


def job(id="j", **kw) -> PendingJob:
    kw.setdefault("tenant", "t")
    kw.setdefault("cpus", 1.0)
    return PendingJob(id=id, **kw)


def where(result) -> dict[str, str]:
    return {d.job_id: d.site for d in result.decisions}


def test_onprem_first_then_spill_over_to_a_new_cloud_node():
    w = world(onprem(cpus=2), cloud())
    r = schedule(w, [job(f"j{i}", submitted_at=i) for i in range(4)], 0)
    by_id = {d.job_id: d for d in r.decisions}
    assert [by_id[f"j{i}"].site for i in range(4)] == ["onprem", "onprem", "us-cloud", "us-cloud"]
    assert by_id["j0"].node_type == "" and by_id["j0"].start_s == 0 and by_id["j0"].price == 0.01
    spill = by_id["j2"]
    assert (spill.node_type, spill.spot, spill.start_s, spill.price) == ("cpu-od", False, 90, 0.05)
    assert spill.reasons[0] == "starts on a new cpu-od node the site adds (about 90 s)"
    assert "0.05 USD/h" in spill.reasons[1]


def test_growth_ends_at_the_node_types_max():
    # Two on-demand nodes of 4 CPUs: eight 1-CPU jobs; the ninth waits; spot is not for these jobs.
    r = schedule(world(onprem(used=4), cloud()), [job(f"j{i}", submitted_at=i) for i in range(9)], 0)
    assert sorted(where(r).values()) == ["us-cloud"] * 8
    (left,) = r.unplaced
    assert left.job_id == "j8" and left.summary.startswith("waiting:")
    assert list(left.reasons) == [Reason.NO_FREE_CAPACITY, Reason.NO_FREE_CAPACITY]
    # Nodes already up count as capacity, not as room to grow: one up leaves one to add.
    up = cloud(up={"cpu-od": 1}, cpus=4, memory=16 * GiB, used_cpus=4)
    r = schedule(world(onprem(used=4), up), [job(f"j{i}", submitted_at=i) for i in range(6)], 0)
    assert len(r.decisions) == 4 and all(d.node_type == "cpu-od" for d in r.decisions)


def test_a_gdpr_job_never_bursts_outside_its_jurisdiction():
    # On-prem is full: the public job's data may be staged, so it bursts to a cloud; the GDPR job waits:
    # the US cloud is outside its jurisdiction, and its data may not be copied to the EU cloud.
    w = world(onprem(used=4), cloud(), cloud("eu-cloud", "FR", "eu-central"))
    r = schedule(w, [job("gdpr", datasets=("patients",)), job("open", datasets=("open",))], 0)
    assert where(r) in ({"open": "us-cloud"}, {"open": "eu-cloud"})
    (u,) = r.unplaced
    assert list(u.reasons) == [Reason.NO_FREE_CAPACITY, Reason.JURISDICTION, Reason.DATA_ELSEWHERE]
    assert u.summary.startswith("no site can take it")


def test_spot_only_for_jobs_that_accept_it_and_by_the_job_s_goal():
    w = world(onprem(used=4), cloud())
    # never: on-demand; prefer: spot; allow + time: the sooner (on-demand, 90 s < 120 s);
    # allow + cost: the cheaper (spot).
    cases = {"never": (NEVER, False), "prefer": (PREFER, False), "time": (ALLOW, False), "cost": (ALLOW, True)}
    got = {}
    for name, (spot, cost) in cases.items():
        (d,) = schedule(w, [job(name, spot=spot, optimize_cost=cost)], 0).decisions
        got[name] = (d.node_type, d.price)
    assert got == {"never": ("cpu-od", 0.05), "prefer": ("cpu-spot", 0.02), "time": ("cpu-od", 0.05),
                   "cost": ("cpu-spot", 0.02)}


def test_free_capacity_wins_over_a_cheaper_new_node_even_when_optimizing_cost():
    dear = replace(onprem(), pricing=Pricing(Rates(cpu_hour=0.5)))
    (d,) = schedule(world(dear, cloud()), [job("j", spot=ALLOW, optimize_cost=True)], 0).decisions
    assert (d.site, d.node_type) == ("onprem", "")


def test_max_price_is_a_hard_filter_with_its_reason():
    w = world(onprem(used=4), cloud())
    j = job("cheap", max_price=0.03)
    (u,) = schedule(w, [j], 0).unplaced
    assert list(u.reasons) == [Reason.NO_FREE_CAPACITY, Reason.PRICE]
    reason, detail = static_verdict(j, w.sites[1], w)
    assert reason is Reason.PRICE and detail == "costs 0.05 an hour for this job, above its max_price 0.03"
    # The same cap is met on spot by a job that accepts spot.
    (d,) = schedule(w, [replace(j, spot=ALLOW)], 0).decisions
    assert (d.site, d.node_type) == ("us-cloud", "cpu-spot")


def test_whole_site_capacity_counts_the_largest_node_type():
    w = world(cloud())
    big, huge = job("big", cpus=4), job("huge", cpus=5)
    r = schedule(w, [big, huge], 0)
    assert where(r) == {"big": "us-cloud"}
    assert static_verdict(huge, w.sites[0], w)[0] is Reason.NEVER_FITS
    assert list(r.unplaced[0].reasons) == [Reason.NEVER_FITS]


def test_gpu_jobs_claim_new_gpu_nodes_one_each():
    types = (NodeType("a10g", cpus=4, memory=16 * GiB, max=2, gpus=1, gpu_model="A10G", gpu_memory=24 * GiB,
                      start_s=150),)
    w = world(onprem(), cloud(types=types))
    r = schedule(w, [job(f"g{i}", gpus=1, submitted_at=i) for i in range(3)], 0)
    placed = sorted(r.decisions, key=lambda d: d.job_id)
    assert [(d.site, d.node_type, d.binding, d.gpu_model, d.price) for d in placed] == [
        ("us-cloud", "a10g", (), "A10G", 1.05)] * 2
    assert r.unplaced[0].job_id == "g2" and list(r.unplaced[0].reasons) == [Reason.NEVER_FITS,
                                                                            Reason.NO_FREE_CAPACITY]


def test_a_gang_rolled_back_gives_its_growth_back():
    w = world(onprem(used=4), cloud(types=(NodeType("cpu-od", cpus=4, memory=16 * GiB, max=1, start_s=60),)))
    gang = [job(f"p{i}", cpus=3, gang="g", gang_size=2) for i in range(2)]
    r = schedule(w, [*gang, job("after", cpus=4, submitted_at=5)], 0)
    assert where(r) == {"after": "us-cloud"}


@st.composite
def elastic_worlds(draw):
    sites = []
    for k in range(draw(st.integers(1, 4))):
        types = tuple(NodeType(f"t{j}", cpus=draw(st.sampled_from([2.0, 4.0])), memory=8 * GiB,
                               max=draw(st.integers(0, 2)), spot=draw(st.booleans()),
                               start_s=draw(st.sampled_from([30.0, 90.0])))
                      for j in range(draw(st.integers(1, 2))))
        cpus = draw(st.sampled_from([0.0, 2.0]))
        sites.append(SiteView(name=f"s{k}", jurisdiction=draw(st.sampled_from(["DE", "US"])), region="r", labels={},
                              cpus=cpus, memory=8 * GiB if cpus else 0, gpus=0, pricing=CLOUD_PRICE,
                              elastic=Elastic(types) if draw(st.booleans()) else None))
    jobs = [job(f"j{i}", cpus=draw(st.sampled_from([0.5, 1.0, 3.0, 5.0])), submitted_at=i,
                spot=draw(st.sampled_from([NEVER, ALLOW, PREFER])), optimize_cost=draw(st.booleans()),
                max_price=draw(st.sampled_from([0.0, 0.03, 1.0])),
                datasets=draw(st.sampled_from([(), ("patients",)])))
            for i in range(draw(st.integers(1, 12)))]
    return world(*sites), jobs


@settings(max_examples=200, deadline=None)
@given(elastic_worlds())
def test_property_growth_never_exceeds_what_a_site_may_add_and_reasons_agree(w):
    snapshot, jobs = w
    r = schedule(snapshot, jobs, 0)
    by_id = {j.id: j for j in jobs}
    for s in snapshot.sites:
        placed = [by_id[d.job_id] for d in r.decisions if d.site == s.name]
        room = s.cpus + sum(t.max * t.cpus for t in (s.elastic.node_types if s.elastic else ()))
        assert sum(j.cpus for j in placed) <= room + 1e-9
        for d in (d for d in r.decisions if d.site == s.name and d.node_type):
            t = next(t for t in s.elastic.node_types if t.name == d.node_type)
            assert by_id[d.job_id].spot != NEVER or not t.spot, "a job that refuses spot is never on spot"
    for d in r.decisions:
        j = by_id[d.job_id]
        assert not j.max_price or d.price <= j.max_price + 1e-9
    for u in r.unplaced:
        for i, s in enumerate(snapshot.sites):
            expected, _ = static_verdict(by_id[u.job_id], s, snapshot)
            assert u.reason_at(i) is (Reason.NO_FREE_CAPACITY if expected is Reason.OK else expected)


def test_data_copied_to_a_site_costs_its_holder_s_egress_and_time_so_compute_goes_to_the_data():
    egress = replace(ONPREM_PRICE, egress_gb=0.09)
    held = replace(onprem(), pricing=egress)
    cheap = SiteView(name="cheap", jurisdiction="FR", region="eu-central", labels={}, cpus=4, memory=16 * GiB,
                     gpus=0, pricing=Pricing(Rates(cpu_hour=0.005)))
    big = {**CATALOG, "open": DatasetInfo("open", "public", frozenset({"onprem"}), size=200e9)}
    w = Snapshot((held, cheap), big, RULES)
    (d,) = schedule(w, [job("near", datasets=("open",))], 0).decisions
    assert d.site == "onprem", "200 GB at 0.09 a GB outweighs a cheaper CPU"
    (d,) = schedule(w, [job("far", datasets=("open",), sites=("cheap",))], 0).decisions
    assert d.site == "cheap" and d.reasons[0] == "its data is copied here first (about 2000 s, 18 USD of egress)"


def test_gpus_are_priced_as_the_model_given_and_a_memory_slice_as_a_whole_gpu():
    from policies import GpuRequest
    from policies.gpu_state import GpuState
    from policies.gpus import GpuNode, Inventory
    priced = Pricing(Rates(cpu_hour=0.01, gpu_hour={"A100": 0.5, "H100": 10.0}))
    site = SiteView(name="h", jurisdiction="DE", region="eu", labels={}, cpus=16, memory=64 * GiB, gpus=1,
                    pricing=priced)
    gpus = GpuState([Inventory((GpuNode("n", "H100", 80 * GiB, ("",)),))])
    w = Snapshot((site,), CATALOG, RULES, gpus=gpus)
    capped = job("capped", gpus=1, max_price=1.0)
    (u,) = schedule(w, [capped], 0).unplaced   # the site has H100s only: 10 an hour, not A100's 0.5
    assert list(u.reasons) == [Reason.PRICE] and static_verdict(capped, site, w)[0] is Reason.PRICE
    (d,) = schedule(w, [job("any", gpus=1)], 0).decisions
    assert d.price == 10.01
    sliced = job("slice", gpu=GpuRequest(memory=10 * GiB), max_price=1.0)
    (u,) = schedule(w, [sliced], 0).unplaced
    assert list(u.reasons) == [Reason.PRICE], "a memory slice costs at least a whole GPU's price"


def test_a_node_type_is_never_claimed_past_its_max_within_a_cycle_or_across_cycles():
    types = (NodeType("small", cpus=4, memory=16 * GiB, max=10, start_s=60),
             NodeType("big", cpus=16, memory=64 * GiB, max=1, start_s=60))
    r = schedule(world(cloud(types=types)), [job(f"b{i}", cpus=16, submitted_at=i) for i in range(3)], 0)
    assert len(r.decisions) == 1 and r.decisions[0].node_type == "big"
    gpu = (NodeType("h100x8", cpus=32, memory=64 * GiB, max=2, gpus=8, gpu_model="H100", gpu_memory=80.0 * GiB,
                    start_s=60),)
    pricey = replace(CLOUD_PRICE, on_demand=Rates(0.05, 0.0, {"H100": 3.0}))
    # One node's job placed last cycle, its node not up yet: one more, not two.
    site = replace(cloud(types=gpu), pricing=pricey, elastic=Elastic(gpu, claimed={"h100x8": 1}))
    r = schedule(world(site), [job(f"g{i}", gpus=8, submitted_at=i) for i in range(2)], 0)
    assert len(r.decisions) == 1


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_property_room_to_grow_kept_up_to_date_site_by_site_equals_a_fresh_count(data):
    """`Costs` brings only the sites where a node type ran out up to date, in Python for a few: the
    answer must be the one counted afresh over every site after the same claims."""
    gpu = NodeType("gpu", cpus=8, memory=32 * GiB, max=1, gpus=1, gpu_model="A10G", gpu_memory=24 * GiB, start_s=200)
    sites = [cloud(name=f"c{k}", types=(
        NodeType("od", cpus=4, memory=16 * GiB, max=data.draw(st.integers(0, 3)), start_s=90),
        NodeType("od-big", cpus=8, memory=32 * GiB, max=1, start_s=data.draw(st.sampled_from([60.0, 120.0]))),
        NodeType("spot", cpus=4, memory=16 * GiB, max=data.draw(st.integers(0, 2)), spot=True, start_s=120), gpu))
        for k in range(data.draw(st.integers(1, 12)))]
    costs = Costs(sites)
    shapes = [(c, c * GiB, None) for c in (1.0, 3.0, 4.0, 6.0)]
    for n in range(data.draw(st.integers(1, 30))):
        cpus, memory, req = data.draw(st.sampled_from(shapes))
        for shape in data.draw(st.lists(st.sampled_from(shapes), max_size=3)):
            costs._addable(*shape)   # cached now, brought up to date later
        i, kind = data.draw(st.integers(0, len(sites) - 1)), data.draw(st.sampled_from([ON_DEMAND, SPOT]))
        if costs.node_fits(cpus, memory, req)[kind - ON_DEMAND, i]:
            costs.took(f"j{n}", i, kind, cpus, memory, 0.0, 0.0, req)
    for shape in shapes:
        fits, delay = np.zeros((2, costs.n), dtype=bool), np.full((2, costs.n), np.inf)
        costs._fill(shape, fits, delay, slice(None))
        kept = costs._addable(*shape)
        assert (kept[0] == fits).all() and (kept[1] == delay).all(), shape


def test_a_job_that_refuses_spot_is_never_given_gpus_of_a_spot_node_that_is_up():
    a10g = dict(cpus=4, memory=16 * GiB, max=2, gpus=1, gpu_model="A10G", gpu_memory=24 * GiB)
    types = (NodeType("a10g-od", start_s=150, **a10g), NodeType("a10g-spot", spot=True, start_s=180, **a10g))
    spot_node = GpuNode("a10g-spot-0", "A10G", 24 * GiB, ("",), spot=True)
    site = cloud(types=types, up={"a10g-spot": 1}, cpus=4.0, memory=16 * GiB, gpus=1.0)
    w = replace(world(onprem(), site), gpus=GpuState([Inventory(), Inventory((spot_node,))]))
    got = {d.job_id: (d.node_type, d.binding, d.spot) for d in
           (schedule(w, [job(name, gpus=1, spot=spot)], 0).decisions[0]
            for name, spot in (("never", NEVER), ("allow", ALLOW)))}
    assert got == {"never": ("a10g-od", (), False), "allow": ("", (Slot("a10g-spot-0", (0,)),), False)}
    # The GPU state itself: the spot node's GPU is free, yet not for a request that refuses spot.
    state, refusing = w.gpus, GpuRequest(count=1, spot=False)
    assert state.fits_now(GpuRequest(count=1))[0].tolist() == [False, True]
    assert state.fits_now(refusing)[0].tolist() == [False, False]
    binding, miss = state.fit(1, refusing)
    assert binding is None and miss is not None and not miss.static   # an on-demand node may yet be added
