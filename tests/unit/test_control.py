"""The pure pieces of the control plane: a gang's fate, an attempt a complete report left out,
what an unplaced job's explanation says, new jobs' ids and environment, and the paused collector."""
from __future__ import annotations

import gc

from federation.control.admission import new_jobs
from federation.control.cycle import paused_gc, unplaced_summary
from federation.control.gangs import gang_action
from federation.control.reports import vanished
from federation.jobs import Attempt, AttemptState, Explanation, Job, JobState
from policies import ScheduleResult, Unplaced
from tests.conftest import make_spec

GANG = {"timeout": "10s", "parts": [{"name": "a"}, {"name": "b"}]}


def gang(states: list[JobState], attempts: list[Attempt | None], **spec) -> list[Job]:
    body = make_spec("g", gang={**GANG, **spec})
    return [Job(id=f"g-{n}", spec=body, state=s, attempts=(a,) if a else (), gang_id="g")
            for n, s, a in zip("ab", states, attempts)]


def attempt(job: str, state: AttemptState = AttemptState.RUNNING, created: float = 0.0,
            started: float = 1.0) -> Attempt:
    return Attempt(job, 1, "eu", state, created_at=created, started_at=started)


def test_a_failed_part_cancels_the_rest_of_its_gang():
    parts = gang([JobState.FAILED, JobState.RUNNING], [None, attempt("g-b")])
    action = gang_action("g", parts, 5.0)
    assert action is not None and [j.id for j in action.cancel] == ["g-b"] and action.stop == ()
    assert action.why == "part g-a of gang g failed"


def test_a_part_waiting_again_or_late_stops_the_live_parts():
    waiting = gang([JobState.PENDING, JobState.RUNNING], [None, attempt("g-b")])
    action = gang_action("g", waiting, 5.0)
    assert action is not None and [j.id for _, j in action.stop] == ["g-b"] and not action.cancel
    assert action.why == "gang g: part g-a is waiting again; the gang starts only whole"
    late = gang([JobState.PLACED, JobState.RUNNING], [attempt("g-a", AttemptState.ASSIGNED, started=0.0),
                                                      attempt("g-b")])
    assert gang_action("g", late, 5.0) is None
    action = gang_action("g", late, 11.0)
    assert action is not None and action.why == "gang g: part g-a did not start within 10s"
    assert [j.id for _, j in action.stop] == ["g-a", "g-b"]


def test_a_continuing_gang_whose_parts_all_started_is_left_alone():
    parts = gang([JobState.FAILED, JobState.RUNNING], [attempt("g-a"), attempt("g-b")], on_part_end="continue")
    assert gang_action("g", parts, 5.0) is None


def test_an_attempt_missing_from_a_complete_report_ends_by_what_it_was():
    job = Job(id="j", spec=make_spec())
    assert vanished(attempt("j"), job) == (AttemptState.LOST, "vanished from the site's Ray cluster (restarted?)")
    assert vanished(attempt("j", AttemptState.ASSIGNED), job) is None
    stopping = Attempt("j", 1, "eu", AttemptState.RUNNING, stop_requested_at=1.0, stop_reason="preempted for k")
    assert vanished(stopping, job) == (AttemptState.PREEMPTED, "preempted for k (before it started)")
    cancelled = Job(id="j", spec=make_spec(), state=JobState.CANCELLED)
    assert vanished(attempt("j"), cancelled) == (AttemptState.STOPPED, "cancelled before it started")


def test_an_unchanged_explanation_is_not_rewritten_and_making_room_names_what_stops():
    u = Unplaced("j", "no site has room", b"")
    result = ScheduleResult((), (u,))
    assert unplaced_summary(u, None, result, {}) == "no site has room"
    assert unplaced_summary(u, Explanation("no site has room", 0.0), result, {}) is None
    room = ScheduleResult((), (u,), making_room={"j": "eu"})
    assert unplaced_summary(u, None, room, {"j": ["k on eu"]}) == "waiting: stopping k on eu to make room"
    assert unplaced_summary(u, Explanation("waiting: stopping k on eu to make room", 0.0), room, {}) is None
    assert unplaced_summary(u, None, room, {}) == "waiting: work stopping on eu makes room for it"


def test_array_elements_and_gang_parts_share_one_id_and_know_their_place():
    elements = new_jobs(make_spec("sweep", array="0-2"), "default", 1.0)
    assert [j.array_index for j in elements] == [0, 1, 2]
    assert {j.array_id for j in elements} == {elements[0].id.rsplit("-", 1)[0]}
    assert elements[2].spec.spec.runtime_env["env_vars"]["FEDCTL_ARRAY_COUNT"] == "3"
    parts = new_jobs(make_spec("g", gang=GANG), "default", 1.0)
    assert [j.id for j in parts] == [f"{parts[0].gang_id}-a", f"{parts[0].gang_id}-b"]
    assert parts[1].spec.spec.runtime_env["env_vars"]["FEDCTL_GANG_PART"] == "b"


def test_the_collector_is_paused_inside_and_restored_after():
    assert gc.isenabled()
    with paused_gc():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()   # left as it was found
    finally:
        gc.enable()
