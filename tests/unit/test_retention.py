"""Retention's pure parts: which jobs a batch removes, the policy's setting, and the pass's pacing."""
from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from federation.control.retention import BACKLOG_PAUSE_S, Retention, interval
from federation.errors import InvalidSpec
from federation.spec import load_policy
from federation.store.base import Compaction
from federation.store.retention import TERMINAL_SQL, Candidate, plan, training_jobs

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def job(job_id: str, at: float = 1.0, state: str = "succeeded", array: str = "", gang: str = "") -> Candidate:
    return Candidate(job_id, array, gang, state, at)


def test_a_batch_takes_whole_units_that_ended_before_the_cutoff_and_are_not_held():
    page = [job("j-1"), job("a-1-0", array="a-1"), job("j-2"), job("g-1-x", gang="g-1"), job("j-3")]
    members = {"a-1": [page[1], job("a-1-1", 5.0, array="a-1")],
               "g-1": [page[3], job("g-1-y", 50.0, "running", gang="g-1")]}
    doomed, resume = plan(page, members, {"j-2"}, 10.0, limit=10, full=False)
    assert doomed == ["j-1", "a-1-0", "a-1-1", "j-3"] and resume is None
    assert plan(page, members, set(), 4.0, 10, False)[0] == ["j-1", "j-2", "j-3"], "a-1-1 ended after the cutoff"


def test_a_batch_stops_at_its_limit_and_says_where_to_go_on():
    page = [job(f"j-{i}", float(i)) for i in range(5)]
    assert plan(page, {}, set(), 10.0, limit=2, full=True) == (["j-0", "j-1"], (1.0, "j-1"))
    assert plan(page, {}, {"j-0", "j-1", "j-2", "j-3", "j-4"}, 10.0, 5, True) == ([], (4.0, "j-4"))
    assert plan([], {}, set(), 10.0, 5, False) == ([], None)


def test_trainings_keep_their_model_and_a_running_trainings_round_jobs():
    rounds = [('{"a": "j-s1", "b": "j-s2"}', "j-agg", '{"a": "j-r"}', '{"a": "j-k"}'), ('{}', "", '{}', '{}')]
    assert training_jobs(["j-m", ""], rounds) == {"j-m", "j-s1", "j-s2", "j-agg", "j-r", "j-k"}
    assert TERMINAL_SQL == "('cancelled', 'failed', 'succeeded')"


def policy(tmp_path, retention) -> Path:
    data = yaml.safe_load((CONFIGS / "policy.yaml").read_text())
    data["spec"]["retention"] = retention
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_policy_sets_the_retention_as_a_duration(tmp_path):
    assert load_policy(CONFIGS / "policy.yaml").spec.retention.jobs == 30 * 86400
    assert load_policy(policy(tmp_path, {"jobs": "12h"})).spec.retention.jobs == 12 * 3600
    assert load_policy(policy(tmp_path, {"jobs": 0})).spec.retention.jobs == 0
    with pytest.raises(InvalidSpec, match="spec.retention.jobs"):
        load_policy(policy(tmp_path, {"jobs": "a month"}))
    with pytest.raises(InvalidSpec, match="spec.retention.logs"):
        load_policy(policy(tmp_path, {"logs": "1d"}))


class FakeStore:
    def __init__(self, batches: list[Compaction]) -> None:
        self.batches = batches
        self.calls: list[tuple[float, int, tuple[float, str] | None]] = []

    def compact(self, ended_before, limit, after=None) -> Compaction:
        self.calls.append((ended_before, limit, after))
        return self.batches.pop(0) if self.batches else Compaction(0, None)


def core(store: FakeStore, keep: float, now: list[float]):
    records: list[tuple] = []
    c = SimpleNamespace(store=store, policy=SimpleNamespace(spec=SimpleNamespace(retention=SimpleNamespace(jobs=keep))),
                        clock=lambda: now[0], records=records,
                        record=lambda actor, action, subject, **d: records.append((actor, action, subject, d)))
    return c


def test_a_pass_goes_batch_after_batch_audits_its_count_and_waits_its_interval(caplog):
    store = FakeStore([Compaction(500, (5.0, "j-5")), Compaction(3, None)])
    now = [1000.0]
    c = core(store, 100.0, now)
    retention = Retention(c, batch=500)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, "federation.retention"):
        assert retention.maybe_run().removed == 503
    assert store.calls == [(900.0, 500, None), (900.0, 500, (5.0, "j-5"))]
    assert c.records == [("federation", "jobs.compacted", "jobs",
                          {"removed": 503, "ended_before": 900.0, "retention_s": 100.0})]
    assert "removed 503 jobs" in caplog.text
    now[0] += interval(100.0) - 0.1
    assert retention.maybe_run() is None, "not due yet"
    now[0] += 0.1
    assert retention.maybe_run().removed == 0 and len(c.records) == 1, "a pass that removed nothing records nothing"


def test_a_pass_stops_at_its_budget_and_the_next_comes_soon():
    store = FakeStore([Compaction(500, (float(i), "j")) for i in range(10)])
    ticks = iter(range(100))
    now = [1000.0]
    retention = Retention(core(store, 86400.0, now), budget_s=2.5, timer=lambda: float(next(ticks)))  # type: ignore[arg-type]
    result = retention.maybe_run()
    assert result is not None and (result.removed, result.finished) == (1500, False)
    now[0] += BACKLOG_PAUSE_S
    assert retention.maybe_run() is not None


def test_keeping_forever_never_compacts():
    store = FakeStore([])
    assert Retention(core(store, 0.0, [1e9])).maybe_run() is None and store.calls == []  # type: ignore[arg-type]


def test_passes_come_every_hundredth_of_the_retention_within_bounds():
    assert interval(30 * 86400) == 300.0 and interval(3600) == 36.0 and interval(1) == 1.0
