"""Each caller's submissions a second, on a clock the test moves."""
from __future__ import annotations

import pytest

from federation.control.rates import SubmissionRates
from federation.errors import ResourceExhausted
from federation.spec.policy import LimitsSpec


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def taken(rates: SubmissionRates, caller: str, n: int) -> int:
    ok = 0
    for _ in range(n):
        try:
            rates.take(caller)
            ok += 1
        except ResourceExhausted:
            pass
    return ok


def test_a_burst_then_the_rate():
    clock = Clock()
    rates = SubmissionRates(per_second=2, burst=5, clock=clock)
    assert taken(rates, "alice", 8) == 5
    with pytest.raises(ResourceExhausted) as e:
        rates.take("alice")
    assert e.value.message == ("alice submits faster than its limit of 2 a second (burst 5; policy "
                               "spec.limits.submissions_per_second); retry in 0.5s")
    assert taken(rates, "bob", 5) == 5, "another caller has its own bucket"
    clock.now += 1.0
    assert taken(rates, "alice", 5) == 2, "two more after one second at 2 a second; refusals took nothing"
    clock.now += 3600
    assert taken(rates, "alice", 10) == 5, "never more than the burst"


def test_defaults_leave_a_thousand_a_second_from_one_caller_alone():
    limits = LimitsSpec()
    assert (limits.submissions_per_second, limits.burst) == (2000, 4000)
    assert LimitsSpec(submissions_per_second=5).burst == 10
    assert LimitsSpec(submissions_per_second=5, submission_burst=1).burst == 1
    clock = Clock()
    rates = SubmissionRates.of(limits, clock)
    for _ in range(10):   # ten seconds at 1,000 a second
        assert taken(rates, "bench", 1000) == 1000
        clock.now += 1.0


def test_full_buckets_are_forgotten_past_the_callers_kept(monkeypatch):
    monkeypatch.setattr("federation.control.rates.MAX_CALLERS", 3)
    clock = Clock()
    rates = SubmissionRates(per_second=1, burst=2, clock=clock)
    for caller in ("a", "b", "c"):
        rates.take(caller)
    clock.now += 10
    rates.take("d")
    assert set(rates._buckets) == {"d"}
