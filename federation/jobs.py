"""Jobs and attempts: states, the valid transitions between them, and the records.

Every state change of a job or an attempt goes through `check_job` or
`check_attempt`; the store calls them inside its transactions, so an invalid
transition can never be persisted whoever asks for it.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace
from enum import Enum

from federation.errors import InvalidTransition
from federation.spec import JobSpec
from policies.gpus import Binding


class JobState(str, Enum):
    PENDING = "pending"
    PLACED = "placed"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_JOB_STATES


class AttemptState(str, Enum):
    ASSIGNED = "assigned"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"
    REJECTED = "rejected"
    PREEMPTED = "preempted"      # stopped to make room for other work; its job is pending again
    LOST = "lost"                # its site or Ray cluster was lost (or the site fenced it); retried by policy

    @property
    def live(self) -> bool:
        return self in (AttemptState.ASSIGNED, AttemptState.RUNNING)


TERMINAL_JOB_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
TIMED_OUT = "timed out:"   # the stop reason of an attempt past its job's time limit: the job fails


def asked_stop_ends(attempt: Attempt) -> AttemptState:
    """How an attempt the federation asked to stop ends: failed past its time limit, else preempted."""
    return AttemptState.FAILED if attempt.stop_reason.startswith(TIMED_OUT) else AttemptState.PREEMPTED

JOB_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.PLACED, JobState.CANCELLED}),
    # PLACED -> PENDING: the site vetoed it; PLACED -> SUCCEEDED: it finished before we saw it run.
    JobState.PLACED: frozenset({JobState.PENDING, JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED,
                                JobState.CANCELLED}),
    # RUNNING -> PENDING: preempted, requeued with its attempt history.
    JobState.RUNNING: frozenset({JobState.PENDING, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}

ATTEMPT_TRANSITIONS: dict[AttemptState, frozenset[AttemptState]] = {
    AttemptState.ASSIGNED: frozenset({AttemptState.RUNNING, AttemptState.SUCCEEDED, AttemptState.FAILED,
                                      AttemptState.STOPPED, AttemptState.REJECTED, AttemptState.PREEMPTED,
                                      AttemptState.LOST}),
    AttemptState.RUNNING: frozenset({AttemptState.SUCCEEDED, AttemptState.FAILED, AttemptState.STOPPED,
                                     AttemptState.PREEMPTED, AttemptState.LOST}),
    AttemptState.SUCCEEDED: frozenset(),
    AttemptState.FAILED: frozenset(),
    AttemptState.STOPPED: frozenset(),
    AttemptState.REJECTED: frozenset(),
    AttemptState.PREEMPTED: frozenset(),
    AttemptState.LOST: frozenset(),
}


def check_job(job_id: str, old: JobState, new: JobState) -> None:
    if new not in JOB_TRANSITIONS[old]:
        raise InvalidTransition(f"job {job_id} is {old.value}; it cannot become {new.value}")


def check_attempt(job_id: str, number: int, old: AttemptState, new: AttemptState) -> None:
    if new not in ATTEMPT_TRANSITIONS[old]:
        raise InvalidTransition(f"attempt {number} of job {job_id} is {old.value}; it cannot become {new.value}")


def job_state_after(job_state: JobState, attempt_state: AttemptState, retried: bool = False) -> JobState | None:
    """What an attempt's new state means for its job; None means no change. `retried`: the
    job's retry policy gives it another attempt (see `retry_delay`).

    A cancelled job stays cancelled whatever its attempt reports afterwards.
    """
    if job_state.terminal:
        return None
    if retried:
        return JobState.PENDING
    match attempt_state:
        case AttemptState.RUNNING:
            return JobState.RUNNING if job_state is JobState.PLACED else None
        case AttemptState.SUCCEEDED:
            return JobState.SUCCEEDED
        case AttemptState.FAILED | AttemptState.STOPPED | AttemptState.LOST:
            return JobState.FAILED
        case AttemptState.REJECTED | AttemptState.PREEMPTED:
            return JobState.PENDING
    return None


RETRIED = (AttemptState.LOST, AttemptState.FAILED)


def retry_delay(job: Job, number: int, ending: AttemptState, jitter: float) -> tuple[float, int] | None:
    """(seconds before the next attempt, retries spent) when the job's policy retries its attempt
    `number` that ends `ending`, else None. Lost attempts are always retried while the limit allows; failed
    ones only with `on_failure`. The delay doubles with each retry, scaled by `jitter` in [0, 1)
    to between half and all of it, so that the jobs of a lost site do not all return at once."""
    policy = job.spec.spec.retry
    if ending is not AttemptState.LOST and not (ending is AttemptState.FAILED and policy.on_failure):
        return None
    spent = 1 + sum(1 for a in job.attempts if a.state in RETRIED and a.number != number)
    if spent > policy.limit:
        return None
    delay = min(policy.max_backoff, policy.backoff * 2 ** (spent - 1))
    return delay * (0.5 + jitter / 2), spent


def new_job_id() -> str:
    return "j-" + secrets.token_hex(6)


def submission_id(job_id: str, attempt: int) -> str:
    """The Ray submission id of an attempt: the same attempt never starts twice."""
    return f"fed-{job_id}-{attempt}"


def parse_submission_id(sid: str) -> tuple[str, int] | None:
    if not sid.startswith("fed-"):
        return None
    job_id, _, number = sid[4:].rpartition("-")
    if not job_id or not number.isdigit():
        return None
    return job_id, int(number)


@dataclass(frozen=True)
class Attempt:
    job_id: str
    number: int
    site: str
    state: AttemptState = AttemptState.ASSIGNED
    message: str = ""
    created_at: float = 0.0
    started_at: float = 0.0
    ended_at: float = 0.0
    binding: Binding = ()        # GPUs the federation reserved for this attempt
    gpu_model: str = ""          # the model of those GPUs, for accounting
    node_type: str = ""          # "" : on what the site had; else the node its autoscaler was to add for it
    price: float = 0.0           # per hour at the site's prices when placed, for accounting and budgets
    stop_requested_at: float = 0.0   # the federation asked the site to stop it (preemption)
    stop_reason: str = ""

    @property
    def submission_id(self) -> str:
        return submission_id(self.job_id, self.number)


@dataclass(frozen=True)
class Explanation:
    """The scheduler's latest word on a job: where and why, or why not."""

    summary: str
    evaluated_at: float
    verdicts: tuple[tuple[str, bool, str, str], ...] = ()   # (site, eligible, reason code, detail)


@dataclass(frozen=True)
class Job:
    id: str
    spec: JobSpec
    state: JobState = JobState.PENDING
    site: str = ""
    message: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0
    attempts: tuple[Attempt, ...] = ()
    vetoed_by: frozenset[str] = field(default_factory=frozenset)
    explanation: Explanation | None = None
    queue: str = "default"       # the fair-share queue it is charged to, resolved at submission
    array_id: str = ""           # set on the elements of a job array
    array_index: int = 0
    gang_id: str = ""            # set on the parts of a gang
    not_before: float = 0.0      # a retried job waits until then (its backoff)
    submitter: str = ""          # the identity that submitted it (its certificate's or token's name)

    @property
    def tenant(self) -> str:
        return self.spec.metadata.tenant

    @property
    def current_attempt(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    def with_state(self, state: JobState, **changes) -> Job:
        check_job(self.id, self.state, state)
        return replace(self, state=state, **changes)


def after_report(job: Job, attempt: Attempt, state: AttemptState, message: str, now: float,
                 jitter: float) -> Job | None:
    """The job as its site's report that `attempt` is now `state` leaves it (`job` read after the
    attempt's row was written): retried by its policy, or ended; None when its state stays."""
    retry = None if job.state.terminal else retry_delay(job, attempt.number, state, jitter)
    new_state = job_state_after(job.state, state, retried=retry is not None)
    if new_state is None or new_state is job.state:
        return None
    vetoed = job.vetoed_by | {attempt.site} if state is AttemptState.REJECTED else job.vetoed_by
    site = "" if new_state is JobState.PENDING else job.site
    text = attempt_message(state, attempt.site, message)
    if retry is not None:
        text = f"retry {retry[1]} of {job.spec.spec.retry.limit} in {retry[0]:.1f}s: attempt {attempt.number} {text}"
    return job.with_state(new_state, site=site, vetoed_by=vetoed, updated_at=now, message=text,
                          not_before=now + retry[0] if retry is not None else job.not_before)


def attempt_message(state: AttemptState, site: str, detail: str) -> str:
    text = {
        AttemptState.RUNNING: f"running on {site}",
        AttemptState.SUCCEEDED: f"succeeded on {site}",
        AttemptState.FAILED: f"failed on {site}",
        AttemptState.STOPPED: f"stopped on {site}",
        AttemptState.REJECTED: f"refused by {site}",
        AttemptState.PREEMPTED: f"requeued: preempted on {site}",
        AttemptState.LOST: f"lost on {site}",
    }[state]
    return f"{text}: {detail}" if detail else text
