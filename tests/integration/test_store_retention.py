"""Retention (`Store.compact`) on every backend, as the store suite (tests/integration/test_store.py):
a SQLite file, SQLite in memory, PostgreSQL; and a SQLite file's upgrade."""
from __future__ import annotations

import sqlite3

import pytest

from federation.errors import NotFound
from federation.jobs import AttemptState, Job, JobState
from federation.spec import training_from_dict
from federation.store import SQLiteStore, Store, SubmitRequest
from tests.conftest import make_spec
from tests.integration.test_store import EXPL, add
from training.model import Round, Training, TrainingState

CUTOFF = 100.0   # compacting jobs that ended before this


def ended(store: Store, job_id: str, at: float, state: AttemptState = AttemptState.SUCCEEDED) -> None:
    """Place, run and end an added job's next attempt: it ran from at - 1 to `at`."""
    attempt = store.place_job(job_id, "a", EXPL, now=at - 2)
    assert attempt is not None
    store.apply_attempt_status(job_id, attempt.number, AttemptState.RUNNING, "", at - 1)
    store.apply_attempt_status(job_id, attempt.number, state, "", at)


def elements(store: Store, unit: str, n: int, *, gang: bool = False) -> list[str]:
    jobs = [Job(id=f"{unit}-{i}", spec=make_spec(), created_at=1.0, updated_at=1.0,
                **({"gang_id": unit} if gang else {"array_id": unit, "array_index": i})) for i in range(n)]
    store.add_jobs(jobs)
    return [j.id for j in jobs]


def compact_all(store: Store, ended_before: float = CUTOFF, limit: int = 500) -> int:
    removed, after = 0, None
    while True:
        batch = store.compact(ended_before, limit, after)
        removed, after = removed + batch.removed, batch.resume_after
        if after is None:
            return removed


def test_old_ended_jobs_go_with_their_attempts_logs_files_and_request_id(store):
    request = SubmitRequest("alice", "r-1", "sha", 1.0)
    store.add_jobs([Job(id="j-old", spec=make_spec(), created_at=1.0, updated_at=1.0)], request)
    store.put_artifact("j-old", 0, "in.txt", b"input", 1.0)
    ended(store, "j-old", 50.0)
    store.put_artifact("j-old", 1, "out.txt", b"output", 50.0)
    store.append_log("j-old", 1, 0, b"old log")
    add(store, "j-new")
    ended(store, "j-new", 150.0)
    store.append_log("j-new", 1, 0, b"new log")
    add(store, "j-waits")
    add(store, "j-runs")
    store.place_job("j-runs", "a", EXPL, now=2.0)

    assert store.compact(CUTOFF, 10).removed == 1
    with pytest.raises(NotFound, match="succeeded and was removed after the retention"):
        store.get_job("j-old")
    assert store.read_log("j-old") == b"" and store.artifact_refs(["j-old"]) == {}
    with pytest.raises(NotFound):
        store.get_artifact("j-old", 1, "out.txt")
    assert sorted(j.id for j in store.list_jobs()) == ["j-new", "j-runs", "j-waits"]
    assert store.read_log("j-new") == b"new log"
    assert store.submission(request) is None, "a request id is remembered as long as its jobs are"
    assert store.add_jobs([Job(id="j-again", spec=make_spec(), created_at=200.0, updated_at=200.0)],
                          request) == ["j-again"]
    assert store.compact(CUTOFF, 10).removed == 0, "nothing else is old enough, or ended"


def test_usage_is_the_same_after_compaction(store):
    for i, at in enumerate((20.0, 40.0, 60.0, 160.0)):
        store.add_job(Job(id=f"j-{i}", spec=make_spec(resources={"cpus": i + 1, "memory": "1Gi", "gpus": i % 2}),
                          created_at=1.0, updated_at=1.0, queue="oncology"))
        ended(store, f"j-{i}", at, AttemptState.FAILED if i == 1 else AttemptState.SUCCEEDED)
    add(store, "j-retried")
    store.place_job("j-retried", "b", EXPL, now=5.0, gpu_model="H100")
    store.apply_attempt_status("j-retried", 1, AttemptState.RUNNING, "", 6.0)
    store.request_stop("j-retried", 1, "make room", 7.0)
    store.apply_attempt_status("j-retried", 1, AttemptState.STOPPED, "", 8.0)   # preempted: pending again
    ended(store, "j-retried", 30.0)
    add(store, "j-running")
    store.place_job("j-running", "a", EXPL, now=70.0)
    store.apply_attempt_status("j-running", 1, AttemptState.RUNNING, "", 71.0)
    windows = (0.0, 25.0, 59.0, 100.0, 1000.0)
    before = {since: store.usage_records(since) for since in windows}

    assert compact_all(store) == 4
    assert {since: store.usage_records(since) for since in windows} == before
    assert len(before[0.0]) == 7 and [r.job_id for r in before[100.0]] == ["j-running", "j-3"]


def test_jobs_waiting_on_compacted_jobs_and_arrays_still_see_their_final_states(store):
    add(store, "j-ok")
    ended(store, "j-ok", 10.0)
    add(store, "j-bad")
    ended(store, "j-bad", 10.0, AttemptState.FAILED)
    array = elements(store, "a-1", 3)
    for i, job_id in enumerate(array):
        ended(store, job_id, 20.0, AttemptState.FAILED if i == 2 else AttemptState.SUCCEEDED)
    refs = ["j-ok", "j-bad", "a-1", "j-none"]
    before = {ref: sorted(states) for ref, states in store.dependency_states(refs).items()}

    assert compact_all(store) == 5
    assert store.list_jobs() == []
    assert {ref: sorted(states) for ref, states in store.dependency_states(refs).items()} == before
    assert before["a-1"] == ["failed", "succeeded", "succeeded"] and before["j-none"] == []


def test_an_array_or_a_gang_goes_whole_once_all_of_it_ended_long_enough_ago(store):
    array = elements(store, "a-1", 3)
    gang = elements(store, "g-1", 2, gang=True)
    for job_id in array[:2] + gang[:1]:
        ended(store, job_id, 10.0)
    ended(store, gang[1], 150.0)
    assert compact_all(store) == 0, "an element still waits; a part ended after the cutoff"
    ended(store, array[2], 20.0)
    assert compact_all(store) == 3
    assert [j.id for j in store.list_jobs()] == sorted(gang, reverse=True)
    assert compact_all(store, ended_before=200.0) == 2


def test_a_cancelled_job_whose_attempt_still_runs_stays_until_that_attempt_ended_long_enough_ago(store):
    add(store, "j-1")
    store.place_job("j-1", "a", EXPL, now=2.0)
    store.apply_attempt_status("j-1", 1, AttemptState.RUNNING, "", 3.0)
    store.cancel_job("j-1", now=4.0)
    assert compact_all(store) == 0, "its attempt is still live"
    store.apply_attempt_status("j-1", 1, AttemptState.STOPPED, "", 120.0)
    assert compact_all(store) == 0, "its attempt ended after the cutoff"
    assert store.get_job("j-1").state is JobState.CANCELLED
    assert compact_all(store, ended_before=121.0) == 1


def test_batches_hold_at_most_the_limit_and_go_on_past_what_must_stay(store):
    blocked = elements(store, "a-0", 4)
    for job_id in blocked[:3]:
        ended(store, job_id, 5.0)   # the oldest: held back by their array's last element
    for i in range(7):
        add(store, f"j-{i}")
        ended(store, f"j-{i}", 10.0 + i)
    first = store.compact(CUTOFF, 3)
    assert first.removed == 0 and first.resume_after == (5.0, "a-0-2"), "a page of held elements only"
    sizes = []
    after = first.resume_after
    while after is not None:
        batch = store.compact(CUTOFF, 3, after)
        sizes.append(batch.removed)
        after = batch.resume_after
    assert sizes == [3, 3, 1]
    assert sorted(j.id for j in store.list_jobs()) == blocked


def test_what_trainings_still_need_stays(store):
    spec = training_from_dict({"metadata": {"name": "t", "tenant": "default"},
                               "spec": {"dataset": "digits", "rounds": 3, "local_step": {"entrypoint": "x"}}})
    for job_id in ("j-model", "j-step", "j-agg", "j-done-step"):
        add(store, job_id)
        ended(store, job_id, 10.0)
    store.save_training(Training("t-1", "default", "alice", spec, TrainingState.RUNNING, 1, "j-model"))
    store.save_round(Round("t-1", 2, steps={"a": "j-step"}, aggregate_job="j-agg"))
    store.save_training(Training("t-2", "default", "alice", spec, TrainingState.SUCCEEDED, 3, ""))
    store.save_round(Round("t-2", 3, steps={"a": "j-done-step"}))
    assert compact_all(store) == 1, "only the step of a training that ended"
    assert sorted(j.id for j in store.list_jobs()) == ["j-agg", "j-model", "j-step"]
    store.save_training(Training("t-1", "default", "alice", spec, TrainingState.SUCCEEDED, 3, "j-model"))
    assert compact_all(store) == 2, "its final model's job stays with the training"
    assert [j.id for j in store.list_jobs()] == ["j-model"]


def test_a_store_written_before_retention_gains_its_tables_and_indexes(tmp_path):
    path = tmp_path / "old.db"
    s = SQLiteStore(path)
    add(s, "j-1")
    ended(s, "j-1", 10.0)
    s.close()
    db = sqlite3.connect(path)
    db.executescript("DROP TABLE compacted_jobs; DROP TABLE compacted_usage; DROP INDEX jobs_ended;"
                     " DROP INDEX submissions_first;")
    db.close()
    s = SQLiteStore(path)
    names = {r[0] for r in s._db.execute("SELECT name FROM sqlite_master")}
    assert {"compacted_jobs", "compacted_usage", "jobs_ended", "submissions_first"} <= names
    usage = s.usage_records()
    assert s.compact(CUTOFF, 10).removed == 1 and s.usage_records() == usage != []
    assert s.dependency_states(["j-1"]) == {"j-1": ["succeeded"]}
    s.close()


def test_an_attempt_first_seen_ended_is_counted_as_having_run_from_then(store):
    """A short job on the task path may start and end between two reports of its site."""
    for job_id, state in (("j-1", AttemptState.SUCCEEDED), ("j-2", AttemptState.FAILED), ("j-3", AttemptState.LOST)):
        add(store, job_id)
        store.place_job(job_id, "a", EXPL, 2.0)
        store.apply_attempt_status(job_id, 1, state, "", 3.0)
    ran = {j: (a.started_at, a.ended_at) for j in ("j-1", "j-2", "j-3") for a in store.get_job(j).attempts}
    assert ran == {"j-1": (3.0, 3.0), "j-2": (3.0, 3.0), "j-3": (0.0, 3.0)}, "a lost attempt may never have run"
    assert sorted(r.started_at for r in store.usage_records()) == [3.0, 3.0]


def test_a_stop_the_federation_did_not_ask_for_is_a_loss_its_retry_policy_answers(store):
    """A site that fenced an attempt, then lost its agent before it said why, leaves its successor only
    Ray's word that the attempt was stopped: the job is retried, not failed."""
    add(store, "j-1")
    store.place_job("j-1", "a", EXPL, 2.0)
    store.apply_attempt_status("j-1", 1, AttemptState.RUNNING, "", 3.0)
    job = store.apply_attempt_status("j-1", 1, AttemptState.STOPPED, "Job was intentionally stopped.", 4.0, jitter=0)
    assert job is not None and job.state is JobState.PENDING
    assert (job.attempts[0].state, job.attempts[0].message) == (
        AttemptState.LOST, "stopped at its site, not by the federation: Job was intentionally stopped.")
    # A cancelled job's stopped attempt stays stopped; one the federation asked to stop is preempted.
    add(store, "j-2")
    store.place_job("j-2", "a", EXPL, 2.0)
    store.cancel_job("j-2", 3.0)
    assert store.apply_attempt_status("j-2", 1, AttemptState.STOPPED, "", 4.0).attempts[0].state is AttemptState.STOPPED
    add(store, "j-3")
    store.place_job("j-3", "a", EXPL, 2.0)
    store.request_stop("j-3", 1, "preempted for j-4", 3.0)
    assert store.apply_attempt_status("j-3", 1, AttemptState.STOPPED, "", 4.0).attempts[0].state \
        is AttemptState.PREEMPTED
