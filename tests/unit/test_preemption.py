"""Preemption: by priority, to reclaim a deserved share, never against data rules, never in storms."""
from __future__ import annotations

from policies import (
    ClassificationRule,
    DatasetInfo,
    PendingJob,
    Rules,
    SiteView,
    Snapshot,
    schedule,
)
from policies.fairshare import Queue, Queues, Usage
from policies.gpu_state import GpuState
from policies.gpus import GpuNode, GpuRequest, Inventory, Slot
from policies.preemption import Running, Settings
from policies.sovereignty import expand_jurisdictions

GiB = 2**30
NOW = 10_000.0
LONG_AGO = NOW - 3600


def job(id: str, cpus: float = 2, priority: int = 0, queue: str = "default", **kw) -> PendingJob:
    return PendingJob(id=id, tenant="t", cpus=cpus, priority=priority, queue=queue, **kw)


DEFAULT = Settings()


def world(running: list[Running], sites=("a",), cpus: float = 4, settings: Settings | None = DEFAULT,
          queues: Queues | None = None, gpus: GpuState | None = None, catalog=None, rules=None) -> Snapshot:
    views = []
    for i, name in enumerate(sites):
        used = sum(r.job.cpus for r in running if r.site == i)
        views.append(SiteView(name, "DE" if i == 0 else "US", "eu" if i == 0 else "us", {}, cpus, 64 * GiB,
                              gpus.total(i) if gpus else 0, used_cpus=used))
    return Snapshot(tuple(views), catalog or {}, rules or Rules({}), gpus, queues, tuple(running), settings)


def running(id: str, site: int = 0, started: float = LONG_AGO, **kw) -> Running:
    return Running(job(id, **kw), attempt=1, site=site, started_at=started)


def test_a_higher_priority_job_stops_the_least_valuable_lower_priority_work():
    work = [running("old-low", priority=-1, started=LONG_AGO), running("new-low", priority=-1, started=LONG_AGO + 60)]
    r = schedule(world(work), [job("urgent", priority=1)], NOW)
    assert r.decisions == (), "the preemptor waits for the stop to free the room"
    (p,) = r.preemptions
    assert (p.job_id, p.site, p.for_job) == ("new-low", "a", "urgent") and p.reason.startswith("priority")


def test_equal_priority_in_one_queue_never_preempts():
    r = schedule(world([running("x"), running("y")]), [job("z")], NOW)
    assert r.preemptions == ()


def test_work_younger_than_the_minimum_runtime_is_protected():
    work = [running("low", priority=-1, started=NOW - 10), running("low-2", priority=-1, started=NOW - 20)]
    r = schedule(world(work, settings=Settings(min_runtime=300)), [job("urgent", priority=1)], NOW)
    assert r.preemptions == ()


def test_no_more_than_the_budget_a_cycle_and_stopping_work_counts_as_free():
    work = [running(f"low-{k}", cpus=1, priority=-1) for k in range(4)]
    pending = [job(f"urgent-{k}", cpus=1, priority=1, submitted_at=k) for k in range(3)]
    r = schedule(world(work, settings=Settings(budget=2)), pending, NOW)
    assert len(r.preemptions) == 2 and {p.for_job for p in r.preemptions} == {"urgent-0", "urgent-1"}
    # Next cycle: those two are stopping; only the third urgent job needs a victim.
    stopping = [Running(w.job, 1, 0, started_at=LONG_AGO, stopping=w.job.id in {p.job_id for p in r.preemptions})
                for w in work]
    r2 = schedule(world(stopping, settings=Settings(budget=2)), pending, NOW)
    assert [p.for_job for p in r2.preemptions] == ["urgent-2"]


def test_disabled_preemption_stops_nothing():
    r = schedule(world([running("low", priority=-1), running("low-2", priority=-1)], settings=None),
                 [job("urgent", priority=1)], NOW)
    assert r.preemptions == ()


QUEUES = Queues((Queue("owed", deserved={"cpus": 4}), Queue("greedy")), history_weight=0.0)


def test_a_queue_below_its_deserved_share_reclaims_from_one_above_its_own():
    work = [running("g1", queue="greedy"), running("g2", queue="greedy")]
    queues = Queues(QUEUES.queues, {"greedy": Usage(running={"cpus": 4})}, 0.0)
    r = schedule(world(work, queues=queues), [job("mine", queue="owed")], NOW)
    (p,) = r.preemptions
    assert p.for_job == "mine" and p.reason.startswith("reclaim: queue owed is below its deserved share")


def test_reclaim_stops_at_the_deserved_share_on_both_sides():
    # owed already holds its 4 deserved cpus: asking for more is over-quota, not a reclaim.
    work = [running("o1", queue="owed"), running("o2", queue="owed"), running("g1", queue="greedy")]
    queues = Queues(QUEUES.queues, {"owed": Usage(running={"cpus": 4}), "greedy": Usage(running={"cpus": 2})}, 0.0)
    r = schedule(world(work, cpus=6, queues=queues), [job("more", queue="owed")], NOW)
    assert r.preemptions == ()
    # greedy is owed 2 cpus and holds exactly that: it keeps them.
    fair = Queues((Queue("owed", deserved={"cpus": 4}), Queue("greedy", deserved={"cpus": 2})),
                  {"greedy": Usage(running={"cpus": 2})}, 0.0)
    r = schedule(world([running("g1", queue="greedy")], cpus=2, queues=fair), [job("mine", queue="owed")], NOW)
    assert r.preemptions == ()


def test_preemption_never_happens_where_the_waiting_jobs_data_may_not_go():
    rules = Rules({"gdpr": ClassificationRule(expand_jurisdictions(["EU"]))})
    catalog = {"records": DatasetInfo("records", "gdpr", frozenset({"a"}))}
    # The EU site is busy with high-priority work; the US site runs low-priority work it could stop.
    work = [running("eu-busy", site=0, priority=1), running("eu-busy-2", site=0, priority=1),
            running("us-low", site=1, priority=-1), running("us-low-2", site=1, priority=-1)]
    r = schedule(world(work, sites=("a", "b"), catalog=catalog, rules=rules),
                 [job("urgent", priority=1, datasets=("records",))], NOW)
    assert r.preemptions == ()


def test_gpu_work_is_stopped_only_where_freeing_it_makes_the_shape():
    inv = [Inventory((GpuNode("n0", "H100", 80 * GiB, ("nv", "nv", "", "")),))]
    gpus = GpuState(inv)
    a = Running(job("on-nvlink", cpus=1, priority=-1, gpus=1), 1, 0, binding=(Slot("n0", (0,)),), gpu_model="H100",
                started_at=LONG_AGO)
    b = Running(job("on-pcie", cpus=1, priority=-1, gpus=1), 1, 0, binding=(Slot("n0", (2,)),), gpu_model="H100",
                started_at=LONG_AGO + 100)
    gpus.reserve(0, a.binding)
    gpus.reserve(0, b.binding)
    pair = job("pair", cpus=1, priority=1, gpus=2, gpu=GpuRequest(count=2, nvlink="required"))
    r = schedule(world([a, b], cpus=8, gpus=gpus), [pair], NOW)
    # on-pcie started later (less work lost) but freeing it gives no NVLink pair: on-nvlink goes.
    assert [p.job_id for p in r.preemptions] == ["on-nvlink"]
