"""The job and attempt state machines."""
import pytest

from federation.errors import InvalidTransition
from federation.jobs import (
    ATTEMPT_TRANSITIONS,
    JOB_TRANSITIONS,
    AttemptState,
    JobState,
    check_attempt,
    check_job,
    job_state_after,
    parse_submission_id,
    submission_id,
)


def test_terminal_states_have_no_way_out():
    for state in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
        assert state.terminal and not JOB_TRANSITIONS[state]
    for state in AttemptState:
        assert state.live == bool(ATTEMPT_TRANSITIONS[state])


@pytest.mark.parametrize("old, new", [(JobState.PENDING, JobState.RUNNING), (JobState.SUCCEEDED, JobState.CANCELLED),
                                      (JobState.CANCELLED, JobState.PENDING), (JobState.RUNNING, JobState.PLACED)])
def test_invalid_job_transitions_are_refused(old, new):
    with pytest.raises(InvalidTransition, match=f"job j-1 is {old.value}; it cannot become {new.value}"):
        check_job("j-1", old, new)


def test_invalid_attempt_transition_is_refused():
    with pytest.raises(InvalidTransition):
        check_attempt("j", 1, AttemptState.SUCCEEDED, AttemptState.RUNNING)
    check_attempt("j", 1, AttemptState.ASSIGNED, AttemptState.SUCCEEDED)


@pytest.mark.parametrize("job, attempt, expected", [
    (JobState.PLACED, AttemptState.RUNNING, JobState.RUNNING),
    (JobState.RUNNING, AttemptState.RUNNING, None),
    (JobState.PLACED, AttemptState.SUCCEEDED, JobState.SUCCEEDED),
    (JobState.RUNNING, AttemptState.FAILED, JobState.FAILED),
    (JobState.RUNNING, AttemptState.STOPPED, JobState.FAILED),
    (JobState.PLACED, AttemptState.REJECTED, JobState.PENDING),
    (JobState.RUNNING, AttemptState.PREEMPTED, JobState.PENDING),
    (JobState.PLACED, AttemptState.PREEMPTED, JobState.PENDING),
    (JobState.CANCELLED, AttemptState.PREEMPTED, None),
    (JobState.CANCELLED, AttemptState.SUCCEEDED, None),
    (JobState.CANCELLED, AttemptState.STOPPED, None),
])
def test_attempt_outcome_drives_the_job(job, attempt, expected):
    result = job_state_after(job, attempt)
    assert result == expected
    if result is not None:
        check_job("j", job, result)  # every derived change is itself a valid transition


def test_submission_ids_round_trip():
    assert submission_id("j-abc-def", 3) == "fed-j-abc-def-3"
    assert parse_submission_id("fed-j-abc-def-3") == ("j-abc-def", 3)
    for bad in ("raysubmit_123", "fed-", "fed-j-x", "fed--1"):
        assert parse_submission_id(bad) is None
