"""The pure placement function: filters, scores, reasons, and properties over random inputs."""
from __future__ import annotations

import pytest
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
    describe,
    expand_jurisdictions,
    schedule,
    sovereignty_verdict,
    static_verdict,
)
from policies import verdicts as placement_verdicts

GiB = 2**30
RULES = Rules({
    "gdpr-personal": ClassificationRule(expand_jurisdictions(["EU"])),
    "hipaa": ClassificationRule(expand_jurisdictions(["US"]), required_labels={"baa": "true"}),
    "public": ClassificationRule(None, allow_staging=True),
    "eu-stageable": ClassificationRule(expand_jurisdictions(["EU"]), allow_staging=True),
})
CATALOG = {
    "patients": DatasetInfo("patients", "gdpr-personal", frozenset({"eu-west"})),
    "claims": DatasetInfo("claims", "hipaa", frozenset({"us-east"})),
    "weather": DatasetInfo("weather", "public", frozenset({"edge-paris"})),
    "orphan": DatasetInfo("orphan", "unlisted-class", frozenset({"eu-west"})),
    "eu-staged": DatasetInfo("eu-staged", "eu-stageable", frozenset({"eu-west"})),
}


def site(name, jurisdiction, region, cpus=4.0, memory=8 * GiB, gpus=0.0, **kw) -> SiteView:
    return SiteView(name=name, jurisdiction=jurisdiction, region=region, labels=kw.pop("labels", {}),
                    cpus=cpus, memory=memory, gpus=gpus, **kw)


SITES = (
    site("edge-paris", "FR", "eu-west-edge", cpus=1),
    site("eu-west", "DE", "eu-west"),
    site("us-east", "US", "us-east", labels={"baa": "true"}),
    site("us-west", "US", "us-west"),
)


def snap(sites=SITES, catalog=CATALOG, rules=RULES) -> Snapshot:
    return Snapshot(tuple(sites), catalog, rules)


def job(id="j", **kw) -> PendingJob:
    kw.setdefault("tenant", "t")
    return PendingJob(id=id, **kw)


def placed(result) -> dict[str, str]:
    return {d.job_id: d.site for d in result.decisions}


def verdicts(result, job_id, snapshot) -> dict[str, Reason]:
    (u,) = [u for u in result.unplaced if u.job_id == job_id]
    return {s.name: u.reason_at(i) for i, s in enumerate(snapshot.sites)}


def test_gdpr_job_runs_only_where_the_data_is_in_the_eu():
    world = snap()
    r = schedule(world, [job(datasets=("patients",))], 0)
    assert placed(r) == {"j": "eu-west"}
    (d,) = r.decisions
    assert "holds patients" in d.reasons and d.candidates == 1


def test_hipaa_needs_the_baa_label_and_us_jurisdiction():
    world = snap()
    r = schedule(world, [job(datasets=("claims",), sites=("us-west",))], 0)
    v = verdicts(r, "j", world)
    assert v["us-west"] is Reason.MISSING_LABEL
    assert v["eu-west"] is Reason.NOT_IN_SITES
    assert placed(schedule(snap(), [job(datasets=("claims",))], 0)) == {"j": "us-east"}


def test_no_admissible_site_stays_pending_with_a_reason_per_site():
    world = snap()
    r = schedule(world, [job(datasets=("patients",), regions=("us",))], 0)
    assert not r.decisions
    v = verdicts(r, "j", world)
    assert v == {"edge-paris": Reason.NOT_IN_REGIONS, "eu-west": Reason.NOT_IN_REGIONS,
                 "us-east": Reason.JURISDICTION, "us-west": Reason.JURISDICTION}
    (u,) = r.unplaced
    assert u.summary.startswith("no site may ever take it")
    details = {v.site: v.detail for v in placement_verdicts(u, job(datasets=("patients",), regions=("us",)), snap())}
    assert details["us-east"] == "gdpr-personal data (patients) may not be processed in US"
    assert details["eu-west"] == "region eu-west is not in us"


def test_staging_lets_data_move_within_its_jurisdictions_only():
    world = snap()
    r = schedule(world, [job(datasets=("eu-staged",), sites=("edge-paris",), cpus=1)], 0)
    assert placed(r) == {"j": "edge-paris"}
    world = snap()
    r = schedule(world, [job(datasets=("eu-staged",), sites=("us-east",))], 0)
    assert verdicts(r, "j", world)["us-east"] is Reason.JURISDICTION
    world = snap()
    r = schedule(world, [job(datasets=("patients",), sites=("edge-paris",), cpus=1)], 0)
    assert verdicts(r, "j", world)["edge-paris"] is Reason.DATA_ELSEWHERE


def test_locality_wins_over_free_capacity_for_stageable_data():
    world = snap()
    r = schedule(world, [job(datasets=("weather",), cpus=0.5)], 0)
    assert placed(r) == {"j": "edge-paris"}


def test_unknown_classification_and_dataset_are_reasons_not_crashes():
    world = snap()
    r = schedule(world, [job("a", datasets=("orphan",)), job("b", datasets=("nope",))], 0)
    assert set(verdicts(r, "a", world).values()) == {Reason.NO_RULE}
    assert set(verdicts(r, "b", world).values()) == {Reason.UNKNOWN_DATASET}


def test_capacity_is_never_exceeded_and_the_rest_waits():
    jobs = [job(f"j{i}", cpus=2, submitted_at=i) for i in range(10)]
    world = snap()
    r = schedule(world, jobs, 0)
    # 4 + 4 + 4 cpus on the three big sites, 1 at the edge: six 2-cpu jobs fit
    assert len(r.decisions) == 6
    assert {u.job_id for u in r.unplaced} == {f"j{i}" for i in range(6, 10)}
    v = verdicts(r, "j9", world)
    assert v["edge-paris"] is Reason.NEVER_FITS and v["eu-west"] is Reason.NO_FREE_CAPACITY
    assert r.unplaced[0].summary.startswith("no site can take it")
    detail = describe(job("j9", cpus=2), SITES[1], Reason.NO_FREE_CAPACITY, snap()).detail
    assert detail.startswith("needs 2 cpus, 0Gi memory, 0 gpus; not free now")


def test_used_capacity_from_the_snapshot_counts():
    sites = (site("a", "DE", "eu", cpus=4, used_cpus=3.5), site("b", "DE", "eu", cpus=4, used_cpus=1))
    assert placed(schedule(snap(sites), [job(cpus=2)], 0)) == {"j": "b"}
    sites = (site("a", "DE", "eu", memory=GiB, used_memory=GiB // 2),)
    world = snap(sites)
    r = schedule(world, [job(memory=GiB)], 0)
    assert verdicts(r, "j", world)["a"] is Reason.NO_FREE_CAPACITY


def test_gpus_fit_only_where_there_are_gpus():
    sites = (site("cpu", "DE", "eu"), site("gpu", "DE", "eu", gpus=8))
    world = snap(sites)
    r = schedule(world, [job(gpus=4), job("big", gpus=16)], 0)
    assert placed(r) == {"j": "gpu"}
    assert verdicts(r, "big", world) == {"cpu": Reason.NEVER_FITS, "gpu": Reason.NEVER_FITS}


@pytest.mark.parametrize("flag, reason", [({"cordoned": True}, Reason.CORDONED), ({"draining": True}, Reason.DRAINING),
                                          ({"connected": False}, Reason.OFFLINE)])
def test_unavailable_sites_get_no_work(flag, reason):
    sites = (site("a", "DE", "eu", **flag),)
    world = snap(sites)
    r = schedule(world, [job()], 0)
    assert verdicts(r, "j", world) == {"a": reason}
    assert r.unplaced[0].summary.startswith("waiting")


def test_a_site_that_vetoed_a_job_is_not_asked_again():
    sites = (site("a", "DE", "eu"), site("b", "DE", "eu", cpus=2))
    world = snap(sites)
    r = schedule(world, [job(vetoed_by=frozenset({"a"}))], 0)
    assert placed(r) == {"j": "b"}


def test_regions_nest_and_prefer_breaks_ties():
    world = snap()
    r = schedule(world, [job(regions=("eu",), prefer=("edge-paris",), cpus=1)], 0)
    assert placed(r) == {"j": "edge-paris"}
    world = snap()
    r = schedule(world, [job(regions=("eu-west",))], 0)
    assert placed(r) == {"j": "eu-west"}  # eu-west-edge is in eu-west, but has only 1 cpu


def test_priority_then_submission_order():
    sites = (site("a", "DE", "eu", cpus=1),)
    jobs = [job("old", submitted_at=1), job("new", submitted_at=2), job("urgent", submitted_at=3, priority=1)]
    assert placed(schedule(snap(sites), jobs, 0)) == {"urgent": "a"}
    assert placed(schedule(snap(sites), jobs[:2], 0)) == {"old": "a"}


def test_no_sites_means_pending_with_a_summary():
    r = schedule(snap(()), [job()], 0)
    assert r.unplaced[0].summary == "no sites are registered"


def test_schedule_does_not_mutate_its_input():
    s = snap()
    jobs = [job(f"j{i}", cpus=1) for i in range(5)]
    before = (s, tuple(jobs))
    schedule(s, jobs, 0)
    assert (s, tuple(jobs)) == before


def test_sovereignty_verdict_first_failing_rule_wins():
    eu = SITES[1]
    assert sovereignty_verdict(("patients", "claims"), eu, CATALOG, RULES)[0] is Reason.JURISDICTION
    assert sovereignty_verdict((), eu, CATALOG, RULES) == (Reason.OK, "")


def test_jurisdiction_groups():
    assert "DE" in expand_jurisdictions(["EU"]) and "NO" not in expand_jurisdictions(["EU"])
    assert "NO" in expand_jurisdictions(["EEA"])
    assert expand_jurisdictions(["*"]) is None
    assert expand_jurisdictions(["NORDIC"], {"NORDIC": ["SE", "NO"]}) == frozenset({"SE", "NO"})


# ---------------------------------------------------------------- properties

JURISDICTIONS = ["DE", "FR", "US", "NO", "JP"]
CLASSES = list(RULES.classifications) + ["unlisted-class"]


@st.composite
def worlds(draw):
    n = draw(st.integers(1, 8))
    sites = []
    for i in range(n):
        sites.append(SiteView(
            name=f"s{i}", jurisdiction=draw(st.sampled_from(JURISDICTIONS)),
            region=draw(st.sampled_from(["eu-west", "eu-north", "us-east", "ap"])),
            labels=draw(st.sampled_from([{}, {"baa": "true"}, {"baa": "false"}])),
            cpus=draw(st.sampled_from([0.0, 1.0, 2.0, 4.0, 16.0])),
            memory=float(draw(st.sampled_from([0, GiB, 8 * GiB]))),
            gpus=draw(st.sampled_from([0.0, 1.0, 8.0])),
            used_cpus=draw(st.sampled_from([0.0, 0.5, 1.0])),
            connected=draw(st.sampled_from([True, True, False])),
            cordoned=draw(st.booleans()) and draw(st.booleans()),
        ))
    names = [s.name for s in sites]
    catalog = {}
    for d in range(draw(st.integers(0, 5))):
        catalog[f"d{d}"] = DatasetInfo(f"d{d}", draw(st.sampled_from(CLASSES)),
                                       frozenset(draw(st.lists(st.sampled_from(names), max_size=3))))
    jobs = []
    for j in range(draw(st.integers(0, 25))):
        jobs.append(PendingJob(
            id=f"j{j}", tenant="t",
            datasets=tuple(draw(st.lists(st.sampled_from(sorted(catalog) or ["none"]), max_size=2, unique=True))),
            cpus=draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, 4.0])),
            memory=float(draw(st.sampled_from([0, GiB // 2, 4 * GiB]))),
            gpus=draw(st.sampled_from([0.0, 0.5, 1.0, 4.0])),
            regions=tuple(draw(st.lists(st.sampled_from(["eu", "us", "eu-west"]), max_size=1))),
            priority=draw(st.integers(-1, 1)), submitted_at=float(j),
        ))
    return Snapshot(tuple(sites), catalog, RULES), jobs


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_property_never_where_data_may_not_be_processed(world):
    snapshot, jobs = world
    by_name = {s.name: s for s in snapshot.sites}
    by_id = {j.id: j for j in jobs}
    for d in schedule(snapshot, jobs, 0).decisions:
        j, s = by_id[d.job_id], by_name[d.site]
        for name in j.datasets:
            info = snapshot.catalog[name]
            rule = RULES.classifications[info.classification]   # a missing rule must never place
            assert rule.allowed_jurisdictions is None or s.jurisdiction in rule.allowed_jurisdictions
            assert all(s.labels.get(k) == v for k, v in rule.required_labels.items())
            assert s.name in info.sites or rule.allow_staging
        assert not s.cordoned and s.connected


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_property_never_over_capacity_and_every_job_accounted_for(world):
    snapshot, jobs = world
    result = schedule(snapshot, jobs, 0)
    by_id = {j.id: j for j in jobs}
    used = {s.name: [s.used_cpus, s.used_memory, s.used_gpus] for s in snapshot.sites}
    got_work = {d.site for d in result.decisions}
    for d in result.decisions:
        j = by_id[d.job_id]
        u = used[d.site]
        u[0] += j.cpus
        u[1] += j.memory
        u[2] += j.gpus
    for s in snapshot.sites:
        u = used[s.name]
        if s.name in got_work:
            assert u[0] <= s.cpus + 1e-9 and u[1] <= s.memory + 1e-9 and u[2] <= s.gpus + 1e-9
    ids = [d.job_id for d in result.decisions] + [u.job_id for u in result.unplaced]
    assert sorted(ids) == sorted(by_id), "every job is placed or explained, exactly once"
    for u in result.unplaced:
        assert len(u.reasons) == len(snapshot.sites)
        assert Reason.OK not in u.reasons


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_property_vector_reasons_agree_with_the_per_site_filters(world):
    snapshot, jobs = world
    by_id = {j.id: j for j in jobs}
    for u in schedule(snapshot, jobs, 0).unplaced:
        for i, site in enumerate(snapshot.sites):
            expected, _ = static_verdict(by_id[u.job_id], site, snapshot)
            assert u.reason_at(i) is (Reason.NO_FREE_CAPACITY if expected is Reason.OK else expected)


def test_a_placement_limit_defers_the_rest_in_priority_order():
    sites = (site("a", "DE", "eu", cpus=8), site("b", "US", "us-east", cpus=8))
    world = snap(sites)
    jobs = [job(f"j{i}", cpus=1, submitted_at=i) for i in range(5)] + [
        job("urgent", cpus=1, submitted_at=9, priority=1), job("eu-only", cpus=1, submitted_at=10, regions=("eu",))]
    r = schedule(world, jobs, 0, max_placements=3)
    assert set(placed(r)) == {"urgent", "j0", "j1"}
    assert sorted(u.job_id for u in r.unplaced) == ["eu-only", "j2", "j3", "j4"] and r.deferred == 4
    assert verdicts(r, "j4", world) == {"a": Reason.DEFERRED, "b": Reason.DEFERRED}
    # A static reason still shows where it holds; capacity is never claimed for a job not tried.
    assert verdicts(r, "eu-only", world) == {"a": Reason.DEFERRED, "b": Reason.NOT_IN_REGIONS}
    deferred = next(u for u in r.unplaced if u.job_id == "eu-only")
    assert deferred.summary == ("deferred: this cycle reached its placement limit before this job "
                                "(1 not-in-regions, 1 deferred)")
    assert describe(jobs[-1], sites[0], Reason.DEFERRED, world).detail.startswith("not considered this cycle")
    # Without a limit, all of them fit.
    assert len(schedule(world, jobs, 0).decisions) == 7
