"""Run-time estimates: the mean of the last two successful runs of the same tenant's job name."""
from __future__ import annotations

from federation.control import estimates
from federation.control.estimates import RunTimes
from federation.jobs import Attempt, AttemptState, Job
from tests.conftest import make_spec


def job(name: str = "prep", tenant: str = "t") -> Job:
    return Job(id=f"{tenant}-{name}", spec=make_spec(name, tenant=tenant))


def ran(seconds: float, state: AttemptState = AttemptState.SUCCEEDED) -> Attempt:
    return Attempt("j", 1, "s", state=state, started_at=100.0, ended_at=100.0 + seconds)


def test_the_last_two_successes_of_the_same_name_and_tenant_count():
    times = RunTimes()
    for seconds in (1000.0, 200.0, 400.0):
        times.ended(job(), ran(seconds))
    times.ended(job(), ran(9000.0, AttemptState.FAILED))     # a failure says nothing of how long it takes
    times.ended(job(), Attempt("j", 1, "s", state=AttemptState.SUCCEEDED))   # never started
    assert times.estimate(job(), started_at=0.0, now=0.0) == 300.0
    assert times.estimate(job("prep", "other"), 0.0, 0.0) == 0.0
    assert times.estimate(job("train"), 0.0, 0.0) == 0.0


def test_a_job_past_its_estimate_has_none():
    times = RunTimes()
    times.ended(job(), ran(300.0))
    assert times.estimate(job(), started_at=1000.0, now=1299.0) == 300.0
    assert times.estimate(job(), started_at=1000.0, now=1300.0) == 0.0


def test_the_least_recently_seen_names_are_forgotten_first(monkeypatch):
    monkeypatch.setattr(estimates, "MAX_KEYS", 2)
    times = RunTimes()
    for name in ("a", "b", "a", "c"):   # "a" seen again after "b": "b" goes
        times.ended(job(name), ran(60.0))
    assert [times.estimate(job(n), 0.0, 0.0) for n in ("a", "b", "c")] == [60.0, 0.0, 60.0]
