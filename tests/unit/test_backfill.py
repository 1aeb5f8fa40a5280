"""Backfill with reservations (`policies.backfill` in the cycle): the first blocked jobs reserve the
site where they start soonest; a job behind them starts now only if it ends before the reservation
or takes what it will not need; and, over random worlds, no reservation is ever delayed by a job
started after it. Nominated preemption: what stopping work freed for a job is held for it alone."""
from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from policies import PendingJob, Rules, SiteView, Snapshot, schedule
from policies.gpu_state import GpuState
from policies.gpus import GpuNode, GpuRequest, Inventory, Slot
from policies.model import BackfillSettings as Backfill
from policies.model import Nomination, Reason
from policies.preemption import Running

GiB = 2**30
NOW = 10_000.0


def job(id: str, cpus: float, limit: float = 0.0, priority: int = 0, at: float = 0.0) -> PendingJob:
    return PendingJob(id=id, tenant="t", cpus=cpus, memory=GiB, priority=priority, submitted_at=at, time_limit=limit)


def world(running: list[Running], sites: tuple[str, ...] = ("a",), cpus: float = 8, depth: int = 4) -> Snapshot:
    views = tuple(SiteView(name, "DE", "eu", {}, cpus, 64 * GiB, 0,
                           used_cpus=sum(r.job.cpus for r in running if r.site == i),
                           used_memory=sum(r.job.memory for r in running if r.site == i))
                  for i, name in enumerate(sites))
    return Snapshot(views, {}, Rules({}), running=tuple(running), backfill=Backfill(depth) if depth else None)


def run(id: str, cpus: float, limit: float, started: float = NOW - 10, site: int = 0) -> Running:
    return Running(job(id, cpus, limit), attempt=1, site=site, started_at=started)


def placed(result) -> set[str]:
    return {d.job_id for d in result.decisions}


def test_a_big_job_reserves_and_only_work_that_ends_before_it_starts_ahead():
    busy = [run("running", 4, limit=110)]   # ends at NOW + 100
    pending = [job("big", 8, limit=600, priority=1), job("short", 2, limit=50), job("long", 2, limit=500),
               job("unbounded", 2)]
    greedy = schedule(world(busy, depth=0), pending, NOW)
    assert placed(greedy) == {"short", "long"}, "without reservations the small jobs take what frees"
    r = schedule(world(busy), pending, NOW)
    assert placed(r) == {"short"}
    reserved, *behind = r.reservations
    assert (reserved.job_id, reserved.site, reserved.start) == ("big", "a", NOW + 100)
    assert {(x.job_id, x.start) for x in behind} == {("long", NOW + 700), ("unbounded", NOW + 700)}
    why = {u.job_id: u for u in r.unplaced}
    assert "reserved a from 100s from now" in why["big"].summary
    assert why["long"].reasons[0] == Reason.RESERVED and why["unbounded"].reasons[0] == Reason.RESERVED


def test_a_job_may_take_what_the_reservation_will_not_need():
    busy = [run("running", 6, limit=110)]
    pending = [job("big", 6, limit=600, priority=1), job("long", 2, limit=500), job("more", 2, limit=500)]
    r = schedule(world(busy), pending, NOW)
    # at NOW + 100 the site has 8 free and big needs 6: one long job of 2 fits beside it, not two
    assert placed(r) == {"long"} and r.reservations[0].job_id == "big"
    assert [x.job_id for x in r.reservations[1:]] == ["more"]   # blocked too: it reserves behind big


def test_the_reservation_goes_where_the_job_starts_soonest():
    busy = [run("a-work", 8, limit=1010), run("b-work", 8, limit=210, site=1)]
    r = schedule(world(busy, sites=("a", "b")), [job("big", 8, limit=60)], NOW)
    (reserved,) = r.reservations
    assert reserved.site == "b" and reserved.start == NOW + 200


def test_only_the_first_blocked_jobs_reserve():
    busy = [run("running", 8, limit=110)]
    pending = [job(f"big-{i}", 8, limit=60, priority=1, at=i) for i in range(3)] + [job("short", 2, limit=500)]
    r = schedule(world(busy, depth=2), pending, NOW)
    assert [x.job_id for x in r.reservations] == ["big-0", "big-1"]
    assert "short" not in placed(r), "it would run past both reservations"


def test_work_of_unknown_end_gives_no_reservation_and_blocks_nothing():
    busy = [run("forever", 8, limit=0)]
    r = schedule(world(busy), [job("big", 8, limit=60, priority=1)], NOW)
    assert r.reservations == ()


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(1, 6), st.integers(20, 400)), max_size=6),
       st.lists(st.tuples(st.integers(1, 8), st.sampled_from([0, 30, 100, 300, 1000]), st.integers(-1, 1)),
                min_size=1, max_size=10))
def test_no_reservation_is_delayed_by_a_job_started_after_it(running, pending):
    """Every job runs to its time limit (or for ever without one): at each reservation's start the
    site has what it needs, with the earlier reservations there counted as taken."""
    busy, used = [], [0, 0]
    for k, (site, cpus, limit) in enumerate(running):
        if used[site] + cpus <= 8:
            busy.append(run(f"r{k}", cpus, limit, started=NOW - 10, site=site))
            used[site] += cpus
    jobs = [job(f"p{k}", cpus, limit, priority=prio, at=k) for k, (cpus, limit, prio) in enumerate(pending)]
    r = schedule(world(busy, sites=("a", "b")), jobs, NOW)
    by_id = {j.id: j for j in jobs}
    inf = float("inf")
    work = [(("a", "b")[x.site], NOW, x.started_at + x.job.time_limit if x.job.time_limit else inf, x.job.cpus)
            for x in busy]
    work += [(d.site, NOW, NOW + by_id[d.job_id].time_limit if by_id[d.job_id].time_limit else inf,
              by_id[d.job_id].cpus) for d in r.decisions]
    for reserved in r.reservations:
        j = by_id[reserved.job_id]
        end = reserved.start + j.time_limit if j.time_limit else inf
        moments = {reserved.start} | {t for _, a, b, _ in work for t in (a, b) if reserved.start < t < end}
        for at in moments:
            held = sum(c for site, a, b, c in work if site == reserved.site and a <= at < b)
            assert 8 - held >= j.cpus - 1e-9, (reserved, at, work)
        assert reserved.job_id not in placed(r)
        work.append((reserved.site, reserved.start, end, j.cpus))   # the next ones count it as taken


def gpu_world(running: list[Running], depth: int = 4) -> Snapshot:
    nodes = tuple(GpuNode(n, "A100", 80 * GiB, tuple(f"{n}/nv" for _ in range(8))) for n in ("n1", "n2"))
    state = GpuState([Inventory(nodes)])
    for r in running:
        state.reserve(0, r.binding)
    view = SiteView("a", "DE", "eu", {}, 64, 512 * GiB, 16, used_cpus=sum(r.job.cpus for r in running),
                    used_memory=sum(r.job.memory for r in running), used_gpus=sum(r.job.gpus for r in running))
    return Snapshot((view,), {}, Rules({}), state, running=tuple(running),
                    backfill=Backfill(depth) if depth else None)


def gpu_job(id: str, gpus: int, limit: float, priority: int = 0, at: float = 0.0) -> PendingJob:
    return replace(job(id, 1, limit, priority, at), gpus=float(gpus),
                   gpu=GpuRequest(count=gpus, nvlink="required" if gpus > 1 else ""))


def test_a_gpu_job_reserves_the_nvlink_block_that_frees_first_and_long_work_goes_around_it():
    busy = [Running(gpu_job("on-n1", 6, limit=110), 1, 0, (Slot("n1", tuple(range(6))),), started_at=NOW - 10),
            Running(gpu_job("on-n2", 4, limit=1010), 1, 0, (Slot("n2", tuple(range(4))),), started_at=NOW - 10)]
    pending = [gpu_job("big", 8, limit=600, priority=1), gpu_job("long", 2, limit=500, at=1),
               gpu_job("short", 2, limit=50, at=2)]
    greedy = schedule(gpu_world(busy, depth=0), pending, NOW)
    assert {d.job_id: d.binding[0].node for d in greedy.decisions} == {"long": "n1", "short": "n2"}
    r = schedule(gpu_world(busy), pending, NOW)
    (reserved,) = r.reservations
    assert (reserved.job_id, reserved.start) == ("big", NOW + 100)
    # short ends before big is due: it may take n1's last two; long would not, and goes to n2
    assert {d.job_id: d.binding[0].node for d in r.decisions} == {"short": "n1", "long": "n2"}
    r = schedule(gpu_world(busy), pending[:2], NOW)
    assert {d.job_id: d.binding[0].node for d in r.decisions} == {"long": "n2"}


def test_long_work_that_fits_only_on_reserved_gpus_waits_with_why():
    busy = [Running(gpu_job("on-n1", 6, limit=110), 1, 0, (Slot("n1", tuple(range(6))),), started_at=NOW - 10),
            Running(gpu_job("on-n2", 8, limit=0), 1, 0, (Slot("n2", tuple(range(8))),), started_at=NOW - 10)]
    r = schedule(gpu_world(busy), [gpu_job("big", 8, limit=600, priority=1), gpu_job("long", 2, limit=500)], NOW)
    assert r.decisions == () and r.reservations[0].job_id == "big"
    (why,) = [u for u in r.unplaced if u.job_id == "long"]
    assert why.reasons[0] == Reason.RESERVED


def test_what_preemption_freed_for_a_job_is_held_for_it_and_no_other_job_takes_it():
    held = (Nomination("preemptor", "a", cpus=8, memory=GiB),)
    others = [job("early", 8, priority=1, at=0), job("preemptor", 8, at=5)]
    free = replace(world([], depth=0), nominated=held)
    r = schedule(free, others, NOW)
    assert placed(r) == {"preemptor"}, "the job it was freed for starts; the one ahead of it does not take it"
    refused_there = replace(job("preemptor", 8, at=5), vetoed_by=frozenset({"a"}))
    r = schedule(free, [job("early", 8, priority=1), refused_there], NOW)
    assert placed(r) == set(), "held while the job it was freed for waits"
    r = schedule(free, [job("early", 8, priority=1)], NOW)
    assert placed(r) == {"early"}, "a hold for a job no longer waiting holds nothing"


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 8), st.integers(-1, 1)), min_size=1, max_size=8),
       st.lists(st.tuples(st.integers(0, 7), st.integers(1, 6)), max_size=3))
def test_held_capacity_goes_only_to_the_job_it_was_held_for(asks, holds):
    jobs = [job(f"p{k}", cpus, priority=prio, at=k) for k, (cpus, prio) in enumerate(asks)]
    noms, total = [], 0
    for k, cpus in holds:
        if k < len(jobs) and jobs[k].id not in {n.job_id for n in noms} and total + cpus <= 8:
            noms.append(Nomination(jobs[k].id, "a", cpus=cpus, memory=0))
            total += cpus
    r = schedule(replace(world([], depth=0), nominated=tuple(noms)), jobs, NOW)
    by_id, done = {j.id: j for j in jobs}, placed(r)
    used = sum(by_id[d].cpus for d in done)
    still_held = sum(n.cpus for n in noms if n.job_id not in done)
    assert used <= 8 - still_held + 1e-9, (asks, holds, done)


def test_with_time_limits_long_work_goes_to_the_node_that_stays_busy_and_the_other_empties_whole():
    busy = [Running(gpu_job("ends-soon", 1, limit=110), 1, 0, (Slot("n1", (0,)),), started_at=NOW - 10),
            Running(gpu_job("ends-late", 1, limit=50_010), 1, 0, (Slot("n2", (0,)),), started_at=NOW - 10)]
    for ask in (GpuRequest(count=2, nvlink="required"), GpuRequest(share=500)):
        long = replace(gpu_job("long", 1, limit=30_000), gpu=ask)
        greedy = schedule(gpu_world(busy, depth=0), [long], NOW)
        assert greedy.decisions[0].binding[0].node == "n1"   # without time limits read: the first of equals
        (d,) = schedule(gpu_world(busy), [long], NOW).decisions
        assert d.binding[0].node == "n2"                     # n1 is whole again at NOW + 100
        short = replace(long, id="short", time_limit=50)     # ends before either: the packing rule decides
        assert schedule(gpu_world(busy), [short], NOW).decisions[0].binding[0].node == "n1"
