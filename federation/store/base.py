"""The storage interface. Every backend passes tests/integration/test_store.py."""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from federation.audit import AuditRecord
from federation.errors import FederationError, ResourceExhausted
from federation.jobs import Attempt, AttemptState, Explanation, Job, JobState, asked_stop_ends
from federation.queues import UsageRecord
from federation.sites import Capacity, SiteRecord, SiteState
from federation.spec.common import Resources
from policies.gpus import Binding, Inventory
from policies.pricing import Elastic
from training.model import Round, Training

MAX_LOG_BYTES_PER_ATTEMPT = 4 << 20


@dataclass(frozen=True)
class SubmitRequest:
    """A submission's client-supplied id: a retry with the same id returns the same jobs."""

    actor: str
    request_id: str
    spec_sha256: str
    at: float


@dataclass(frozen=True)
class NewSubmission:
    """One submission's jobs, request id and audit records, for `Store.add_many`."""

    jobs: Sequence[Job]
    request: SubmitRequest | None
    audit: Sequence[AuditRecord] = ()
    pending_limit: int = 0   # the tenant's waiting jobs may not pass it (0: no limit), counted in the transaction


def started_at(attempt: Attempt, state: AttemptState, now: float) -> float:
    """When an attempt started, as the federation saw it: one first seen ended (a short job, between two
    reports) ran too, and its usage counts from the moment it was seen."""
    if state is AttemptState.RUNNING or (state in (AttemptState.SUCCEEDED, AttemptState.FAILED)
                                         and not attempt.started_at):
        return now
    return attempt.started_at


def reported_end(attempt: Attempt, state: AttemptState, message: str, job_ended: bool
                 ) -> tuple[AttemptState, str]:
    """What a report that an attempt was stopped means. A stop the federation asked for is a
    preemption. One it did not ask for, of a job not cancelled, is a loss its retry policy answers,
    not the job's failure: its site stopped it (fenced past its lease, an operator), and an agent
    killed before it said why leaves its successor only Ray's word that it was stopped."""
    if state is not AttemptState.STOPPED:
        return state, message
    if attempt.stop_requested_at:
        return asked_stop_ends(attempt), attempt.stop_reason
    if job_ended:
        return state, message
    return AttemptState.LOST, f"stopped at its site, not by the federation: {message}"


def over_pending(tenant: str, waiting: int, count: int, limit: int) -> ResourceExhausted | None:
    """The refusal of `count` more waiting jobs for a tenant with `waiting` already, if they pass `limit`."""
    if not limit or waiting + count <= limit:
        return None
    return ResourceExhausted(f"tenant {tenant} has {waiting} jobs waiting; {count} more would pass its limit of "
                             f"{limit} (policy spec.limits.pending_per_tenant); retry later")


@dataclass(frozen=True)
class Compaction:
    """What one batch of `Store.compact` did."""

    removed: int                              # jobs removed
    resume_after: tuple[float, str] | None    # (ended, id) the next batch goes on after; None: none left


@dataclass(frozen=True)
class Leadership:
    """Who leads the federation: one replica schedules and writes while its lease lasts.

    `term` is the fencing token: it grows with every new tenure, and a store bound to a term
    (`Store.fence`) refuses every write once another term has begun. `since` is when this
    tenure began: a holder that lets its lease lapse and takes it again starts a new one."""

    holder: str
    address: str
    term: int
    since: float
    expires_at: float

    def live(self, now: float) -> bool:
        return now < self.expires_at


class Store(ABC):
    # ----------------------------------------------------------- leadership
    @abstractmethod
    def acquire_leadership(self, holder: str, address: str, now: float, ttl_s: float) -> Leadership:
        """Take the lease if it is free or expired, or renew it if `holder` holds it, until
        `now + ttl_s`, in one transaction; the leadership as it stands after (another holder's
        when it is held). Taking it, or taking it again after it lapsed, begins a new term.
        Not itself fenced."""

    @abstractmethod
    def leadership(self) -> Leadership | None:
        """The current record, read from the database (never a cache); None before any leader."""

    def clock(self) -> float:
        """Now, by the clock every replica of this store agrees on: the database server's for a
        shared database, this host's for a file. Leadership is judged by it, never by a replica's own."""
        return time.time()

    @abstractmethod
    def newest_heartbeat(self) -> float:
        """The latest heartbeat of any site that can be lost (not autonomous), read from the
        database (never a cache); 0.0 when there is none. A leader that hears no site at all is
        cut off itself, and re-places nobody's work (`Core.hearing`)."""

    @abstractmethod
    def fence(self, term: int | None, clock: Callable[[], float] | None = None) -> None:
        """Bind this store's writes to `term`: from then on every write transaction first checks
        that the leadership record still holds `term` and that its lease has not run out by
        `clock` (default: the store's own, `Store.clock`), and raises `Deposed` (nothing written)
        otherwise. What the store cached from before is dropped: another replica may have
        written. None: unfenced (tests, tools); 0, a term that never begins: read only."""

    # ----------------------------------------------------------- jobs
    def add_job(self, job: Job) -> None:
        self.add_jobs([job])

    @abstractmethod
    def add_jobs(self, jobs: Sequence[Job], request: SubmitRequest | None = None, audit: Sequence[AuditRecord] = (),
                 seal: Callable[[AuditRecord], AuditRecord] | None = None, pending_limit: int = 0) -> list[str]:
        """All or none (an array's elements); Conflict if an id exists; ResourceExhausted if the
        tenant's waiting jobs would pass `pending_limit`, counted in the same transaction so that
        concurrent submissions cannot pass it together. With `request`: the ids of
        the jobs an earlier submission with the same actor and request id stored, and nothing
        added (Conflict if its spec differs); else the new ids. The `audit` records are appended
        (see append_audit) in the same transaction as the jobs."""

    @abstractmethod
    def add_many(self, batch: Sequence[NewSubmission],
                 seal: Callable[[AuditRecord], AuditRecord] | None = None) -> list[list[str] | FederationError]:
        """Several submissions in one transaction, each all or none on its own: per submission, what
        `add_jobs` returns or the FederationError that refused it. An error of the store itself
        (a deposed leader, say) fails the call and writes nothing."""

    @abstractmethod
    def submission(self, request: SubmitRequest) -> list[str] | None:
        """The job ids an earlier submission with this actor and request id stored, or None;
        Conflict if its spec differs."""

    @abstractmethod
    def jobs_by_id(self, ids: Sequence[str]) -> list[Job]:
        """The jobs with these ids that exist, in that order."""

    @abstractmethod
    def get_meta(self, key: str, default: str = "") -> str: ...

    @abstractmethod
    def set_meta(self, key: str, value: str) -> None: ...

    @abstractmethod
    def dependency_states(self, refs: Iterable[str]) -> dict[str, list[str]]:
        """Per id: the state of that job, or of every element of the array with that id (compacted ones
        too: their final state); [] if neither."""

    @abstractmethod
    def get_job(self, job_id: str) -> Job:
        """Raises NotFound."""

    @abstractmethod
    def list_jobs(self, tenants: Iterable[str] | None = None, states: Iterable[JobState] = (), limit: int = 1000,
                  before: tuple[float, str] | None = None, submitter: str | None = None) -> list[Job]:
        """Newest first: of `tenants` (None: every tenant's), older than `before` (created_at, id),
        submitted by `submitter` (None: anyone)."""

    @abstractmethod
    def pending_jobs(self) -> list[Job]: ...

    @abstractmethod
    def pending_count(self, tenant: str) -> int:
        """How many of the tenant's jobs wait for placement."""

    @abstractmethod
    def place_job(self, job_id: str, site: str, explanation: Explanation, now: float,
                  binding: Binding = (), gpu_model: str = "", node_type: str = "", price: float = 0.0
                  ) -> Attempt | None:
        """PENDING -> PLACED with a new attempt holding `binding` (on a node of `node_type` the site is to
        add, at `price` an hour), atomically; None if no longer pending."""

    def explain_job(self, job_id: str, explanation: Explanation) -> None:
        self.explain_jobs([(job_id, explanation)])

    @abstractmethod
    def explain_jobs(self, explanations: Sequence[tuple[str, Explanation]]) -> None:
        """Why each job (still pending) waits or went where it went, in one transaction."""

    @abstractmethod
    def cancel_job(self, job_id: str, now: float, message: str = "cancelled by user") -> Job: ...

    @abstractmethod
    def apply_attempt_status(self, job_id: str, number: int, state: AttemptState, message: str,
                             now: float, jitter: float | None = None) -> Job | None:
        """Record what a site saw; derives the job's state, retrying it by its policy (`jitter` in
        [0, 1) scales the backoff; random when None). Idempotent; None if nothing changed."""

    @abstractmethod
    def gang_jobs(self, gang_ids: Iterable[str]) -> dict[str, list[Job]]:
        """Per gang id, its parts (with their attempts)."""

    @abstractmethod
    def append_audit(self, record: AuditRecord, seal: Callable[[AuditRecord], AuditRecord]) -> AuditRecord:
        """Append `record` after the last one: its seq and previous hash are set, then `seal` hashes
        and signs it, in one transaction."""

    @abstractmethod
    def audit_records(self, after: int, limit: int) -> list[AuditRecord]:
        """Up to `limit` audit records after seq `after`, in order."""

    @abstractmethod
    def job_counts(self) -> list[tuple[JobState, str, str, int]]:
        """(state, tenant, queue, how many jobs) for every combination that has any."""

    @abstractmethod
    def audit_head(self) -> tuple[int, str]:
        """(seq, hash) of the last audit record; (0, GENESIS) when the log is empty."""

    @abstractmethod
    def add_join_token(self, token_id: str, secret_sha256: str, name: str, attributes: dict, now: float,
                       expires_at: float) -> None: ...

    @abstractmethod
    def use_join_token(self, token_id: str, secret_sha256: str, now: float) -> tuple[str, dict]:
        """(site name, bound attributes) of a token used now, once; PermissionDenied if unknown, wrong,
        used or expired."""

    @abstractmethod
    def remember_certificate(self, serial: str, name: str, now: float) -> None:
        """A certificate seen authenticating, so that it can be revoked by name."""

    @abstractmethod
    def revoke_certificates(self, name: str, now: float) -> list[str]:
        """Revoke `name` as of `now` (see `revoked_names`), every certificate seen for it, and its
        join tokens not yet used; the serials newly revoked."""

    @abstractmethod
    def revoked_serials(self) -> set[str]: ...

    @abstractmethod
    def revoked_names(self) -> dict[str, float]:
        """Per name revoked, its latest revocation time: its certificates issued up to then are refused."""

    @abstractmethod
    def request_stop(self, job_id: str, number: int, reason: str, now: float) -> bool:
        """Ask for a live attempt to be stopped to make room (preemption): it leaves its site's desired
        set, and its site's STOPPED report makes it PREEMPTED and its job PENDING. False if it is not
        live or a stop was already asked."""

    @abstractmethod
    def stops_since(self, since: float) -> int:
        """How many stops were asked at or after `since`."""

    @abstractmethod
    def usage_records(self, since: float = 0.0) -> list[UsageRecord]:
        """Attempts that ran (started) and were still running at or after `since`, oldest first; those
        of compacted jobs too."""

    @abstractmethod
    def compact(self, ended_before: float, limit: int, after: tuple[float, str] | None = None) -> Compaction:
        """One batch of retention (federation.store.retention), in one transaction: remove jobs that
        ended before `ended_before` with their attempts, logs, files and submission record, keeping
        their usage and final state; an array or gang whole or not at all; never what a live attempt
        or a training still needs. Looks at up to `limit` ended jobs, oldest first (after `after`, the
        last batch's `resume_after`), and removes up to `limit` (more only to finish an array or gang)."""

    @abstractmethod
    def live_attempts(self, site: str | None = None, jobs: Iterable[str] | None = None) -> list[tuple[Attempt, Job]]:
        """Attempts ASSIGNED or RUNNING (at `site`, of `jobs`), with their jobs."""

    @abstractmethod
    def live_use(self) -> list[tuple[str, str, Resources]]:
        """(site, GPU model, resources asked) of every attempt ASSIGNED or RUNNING: what
        `live_attempts` says they hold, without reading their jobs."""

    # ----------------------------------------------------------- artifacts

    @abstractmethod
    def put_artifact(self, job_id: str, attempt: int, name: str, data: bytes, now: float) -> bool:
        """Store a file of an attempt (attempt 0: an input of the job). True if new; the same
        content again is a no-op; other content under the same name is a Conflict."""

    @abstractmethod
    def get_artifact(self, job_id: str, attempt: int, name: str) -> tuple[bytes, str]:
        """(data, sha256), or NotFound."""

    @abstractmethod
    def artifact_refs(self, job_ids: Iterable[str], attempt: int = 0) -> dict[str, list[tuple[str, str, int]]]:
        """Per job: (name, sha256, size) of its files of `attempt`, by name."""

    # ----------------------------------------------------------- federated training

    @abstractmethod
    def save_training(self, training: Training) -> None:
        """Insert, or update its state, round, model and message."""

    @abstractmethod
    def trainings(self, active: bool = False, tenant: str | None = None) -> list[Training]: ...

    @abstractmethod
    def get_training(self, training_id: str) -> Training: ...

    @abstractmethod
    def save_round(self, round_: Round) -> None:
        """Insert or replace (training, number, attempt)."""

    @abstractmethod
    def rounds(self, training_id: str) -> list[Round]:
        """By number, then attempt."""

    # ----------------------------------------------------------- logs
    @abstractmethod
    def append_log(self, job_id: str, number: int, offset: int, data: bytes) -> int:
        """Store bytes at `offset` of an attempt's log; bytes already held are skipped. Returns its length."""

    @abstractmethod
    def read_log(self, job_id: str, offset: int = 0) -> bytes:
        """All attempts' logs in order, from `offset`."""

    # ----------------------------------------------------------- sites
    @abstractmethod
    def upsert_site(self, site: SiteRecord) -> SiteRecord:
        """Insert or update a site's declared attributes, keeping its operator state."""

    @abstractmethod
    def get_site(self, name: str) -> SiteRecord:
        """Raises NotFound."""

    @abstractmethod
    def list_sites(self) -> list[SiteRecord]: ...

    @abstractmethod
    def set_site_state(self, name: str, state: SiteState) -> SiteRecord: ...

    @abstractmethod
    def heartbeat(self, name: str, capacity: Capacity | None, now: float,
                  inventory: Inventory | None = None, elastic: Elastic | None = None) -> SiteRecord:
        """Marks the site alive; a capacity, inventory or elastic state given replaces the stored one."""

    def close(self) -> None:  # noqa: B027 - optional for backends without resources
        pass
