"""Gangs: parts that start together are placed all together or not at all."""
from __future__ import annotations

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
    schedule,
)
from policies.sovereignty import expand_jurisdictions

GiB = 2**30
RULES = Rules({"eu-only": ClassificationRule(expand_jurisdictions(["EU"])),
               "us-only": ClassificationRule(expand_jurisdictions(["US"]))})
CATALOG = {"eu-shard": DatasetInfo("eu-shard", "eu-only", frozenset({"eu"})),
           "us-shard": DatasetInfo("us-shard", "us-only", frozenset({"us"}))}


def site(name: str, jurisdiction: str, cpus: float = 4) -> SiteView:
    return SiteView(name, jurisdiction, name, {}, cpus, 64 * GiB, 0)


def part(gang: str, name: str, size: int = 2, cpus: float = 2, **kw) -> PendingJob:
    return PendingJob(id=f"{gang}-{name}", tenant="t", cpus=cpus, gang=gang, gang_size=size, **kw)


def world(eu_cpus: float = 4, us_cpus: float = 4) -> Snapshot:
    return Snapshot((site("eu", "DE", eu_cpus), site("us", "US", us_cpus)), CATALOG, RULES)


def test_one_part_per_shard_site_all_placed_together():
    gang = [part("g", "eu", datasets=("eu-shard",)), part("g", "us", datasets=("us-shard",))]
    r = schedule(world(), gang, 0)
    assert {d.job_id: d.site for d in r.decisions} == {"g-eu": "eu", "g-us": "us"}
    assert all(d.reasons[0] == "gang g: all 2 parts placed together" for d in r.decisions)


def test_a_part_that_cannot_start_holds_back_the_whole_gang_and_frees_what_it_took():
    gang = [part("g", "eu", datasets=("eu-shard",), submitted_at=0), part("g", "us", datasets=("us-shard",),
                                                                          cpus=8, submitted_at=0)]
    later = PendingJob(id="solo", tenant="t", cpus=4, datasets=("eu-shard",), submitted_at=1)
    snapshot = world()
    r = schedule(snapshot, [*gang, later], 0)
    assert [d.job_id for d in r.decisions] == ["solo"], "the eu part's cpus went back for the next job"
    why = {u.job_id: u for u in r.unplaced}
    assert why["g-eu"].summary.startswith("gang g: part g-us cannot be placed now (no site may ever take it")
    assert set(why["g-eu"].reasons) == {Reason.GANG, Reason.JURISDICTION}
    assert Reason.NEVER_FITS in set(why["g-us"].reasons)


def test_a_gang_missing_parts_waits_whole():
    r = schedule(world(), [part("g", "eu", size=3, datasets=("eu-shard",))], 0)
    assert r.decisions == () and r.unplaced[0].summary == "gang g: 1 of its 3 parts are waiting; it starts only whole"


@st.composite
def gang_worlds(draw):
    sites = (site("eu", "DE", draw(st.integers(0, 8))), site("us", "US", draw(st.integers(0, 8))))
    jobs = []
    for g in range(draw(st.integers(1, 4))):
        size = draw(st.integers(1, 3))
        for k in range(size):
            shard = draw(st.sampled_from([(), ("eu-shard",), ("us-shard",)]))
            jobs.append(part(f"g{g}", str(k), size=size, cpus=draw(st.integers(1, 4)), datasets=shard,
                             submitted_at=draw(st.floats(0, 10))))
    for k in range(draw(st.integers(0, 4))):
        jobs.append(PendingJob(id=f"solo-{k}", tenant="t", cpus=draw(st.integers(1, 4)),
                               submitted_at=draw(st.floats(0, 10))))
    return Snapshot(sites, CATALOG, RULES), jobs


@settings(max_examples=300, deadline=None)
@given(gang_worlds())
def test_property_a_gang_is_all_placed_or_not_at_all_and_capacity_holds(case):
    snapshot, jobs = case
    r = schedule(snapshot, jobs, 0)
    placed = {d.job_id for d in r.decisions}
    for g in {j.gang for j in jobs if j.gang}:
        members = {j.id for j in jobs if j.gang == g}
        assert members <= placed or not (members & placed), f"gang {g} half placed"
    used = {s.name: 0.0 for s in snapshot.sites}
    by_id = {j.id: j for j in jobs}
    for d in r.decisions:
        used[d.site] += by_id[d.job_id].cpus
    assert all(used[s.name] <= s.cpus for s in snapshot.sites)
    assert sorted([d.job_id for d in r.decisions] + [u.job_id for u in r.unplaced]) == sorted(by_id)
