"""Jobs: submission (idempotent by request id), reading, explaining and cancelling.

Submissions made at the same moment are committed together (group commit): each caller still
returns only once the transaction holding its jobs has committed, and each submission succeeds or
fails alone (a savepoint apiece). Reads of jobs go through their own connections where the store
is a file: in WAL mode they see the last commit without waiting for the writer's lock.
"""
from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from federation.audit import AuditRecord
from federation.errors import Conflict, FederationError, NotFound
from federation.jobs import Attempt, Explanation, Job, JobState
from federation.store.base import NewSubmission, SubmitRequest, over_pending
from federation.store.sqlite.database import Database
from federation.store.sqlite.rows import attempt_from_row, explanation_json, job_from_row
from federation.store.sqlite.trust import insert_audit

Seal = Callable[[AuditRecord], AuditRecord]


@dataclass
class _Submission:
    """One caller's add_jobs, waiting for the transaction that commits it."""
    jobs: Sequence[Job]
    request: SubmitRequest | None
    audit: Sequence[AuditRecord]
    seal: Seal | None
    pending_limit: int = 0
    done: bool = False
    ids: list[str] = field(default_factory=list)
    error: BaseException | None = None
    saved: bool = False      # under a savepoint of its own even when alone in its transaction (add_many)
    alone: bool = False      # the error is its own, not its transaction's
    turn: threading.Event = field(default_factory=threading.Event)   # done, or its turn to commit


class JobTables(Database):
    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        self._queued: list[_Submission] = []   # submissions waiting for the next transaction
        self._queue = threading.Lock()
        self._committing = False                # a caller is committing a batch now

    def add_jobs(self, jobs: Sequence[Job], request: SubmitRequest | None = None, audit: Sequence[AuditRecord] = (),
                 seal: Seal | None = None, pending_limit: int = 0) -> list[str]:
        mine = _Submission(jobs, request, audit, seal, pending_limit=pending_limit)
        self._committed([mine])
        if mine.error is not None:
            raise mine.error
        return mine.ids

    def add_many(self, batch: Sequence[NewSubmission], seal: Seal | None = None) -> list[list[str] | FederationError]:
        mine = [_Submission(s.jobs, s.request, s.audit, seal, s.pending_limit, saved=True) for s in batch]
        if not mine:
            return []
        self._committed(mine)
        out: list[list[str] | FederationError] = []
        for s in mine:
            if s.error is not None and not (s.alone and isinstance(s.error, FederationError)):
                raise s.error   # the transaction's (a deposed leader, say): nothing of the call was written
            out.append(s.error if isinstance(s.error, FederationError) else s.ids)
        return out

    def _committed(self, mine: list[_Submission]) -> None:
        """Queue `mine` together (so the first one's transaction holds them all) and return once a
        transaction committed them: another caller's, or this one's when it is its turn."""
        with self._queue:
            self._queued.extend(mine)
            lead, self._committing = not self._committing, True
        if not lead:
            mine[0].turn.wait()   # until a batch committed it, or the one before handed it the turn
        if not mine[0].done:
            self._commit_queued()

    def _commit_queued(self) -> None:
        """Every submission queued now, in one transaction; when there are several, each under its
        own savepoint, so that one refused leaves the others stored. Then the first of those queued
        meanwhile commits the next batch."""
        with self._queue:
            batch, self._queued = self._queued, []
        try:
            self._commit(batch)
        finally:
            with self._queue:
                for s in batch:
                    s.done = True
                following = self._queued[0] if self._queued else None
                self._committing = following is not None
            for s in batch:
                s.turn.set()
            if following is not None:
                following.turn.set()

    def _commit(self, batch: list[_Submission]) -> None:
        try:
            with self._tx() as db:
                waiting: dict[str, int] = {}   # per tenant, as this transaction leaves it so far
                if len(batch) == 1 and not batch[0].saved:
                    batch[0].ids = self._insert_jobs(db, batch[0], waiting)
                else:
                    for s in batch:
                        self._insert_saved(db, s, waiting)
        except BaseException as e:
            for s in batch:
                s.error, s.alone = e, False   # nothing of the batch was committed

    def _insert_saved(self, db: sqlite3.Connection, s: _Submission, waiting: dict[str, int]) -> None:
        db.execute("SAVEPOINT submission")
        try:
            s.ids = self._insert_jobs(db, s, waiting)
        except Exception as e:
            db.execute("ROLLBACK TO submission")
            s.error, s.alone = e, True
        db.execute("RELEASE submission")

    def _insert_jobs(self, db: sqlite3.Connection, s: _Submission, waiting: dict[str, int]) -> list[str]:
        jobs, request, audit, seal = s.jobs, s.request, s.audit, s.seal
        if request is not None:
            earlier = self._submission(db, request)
            if earlier is not None:
                return earlier
        tenant = jobs[0].tenant if jobs else ""
        if s.pending_limit:
            if tenant not in waiting:
                waiting[tenant] = db.execute("SELECT COUNT(*) FROM jobs WHERE tenant=? AND state=?",
                                             (tenant, JobState.PENDING.value)).fetchone()[0]
            if refused := over_pending(tenant, waiting[tenant], len(jobs), s.pending_limit):
                raise refused
        if request is not None:
            db.execute("INSERT INTO submissions (actor, request_id, spec_sha256, job_ids, created_at)"
                       " VALUES (?,?,?,?,?)", (request.actor, request.request_id, request.spec_sha256,
                                              json.dumps([j.id for j in jobs]), request.at))
        for job in jobs:
            try:
                db.execute(
                    "INSERT INTO jobs (id, tenant, spec, state, site, message, created_at, updated_at, vetoed_by,"
                    " queue, array_id, array_index, gang_id, submitter) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (job.id, job.tenant, job.spec.model_dump_json(), job.state.value, job.site, job.message,
                     job.created_at, job.updated_at, json.dumps(sorted(job.vetoed_by)), job.queue, job.array_id,
                     job.array_index, job.gang_id, job.submitter))
            except sqlite3.IntegrityError:
                raise Conflict(f"job {job.id} already exists") from None
        if seal is not None:
            for record in audit:
                insert_audit(db, record, seal)
        if tenant in waiting:
            waiting[tenant] += len(jobs)
        return [j.id for j in jobs]

    def submission(self, request: SubmitRequest) -> list[str] | None:
        with self._reading(statements=1) as db:
            return self._submission(db, request)

    @staticmethod
    def _submission(db: sqlite3.Connection, request: SubmitRequest) -> list[str] | None:
        row = db.execute("SELECT spec_sha256, job_ids FROM submissions WHERE actor=? AND request_id=?",
                         (request.actor, request.request_id)).fetchone()
        if row is None:
            return None
        if row["spec_sha256"] != request.spec_sha256:
            raise Conflict(f"request id {request.request_id!r} was already used for another spec")
        return json.loads(row["job_ids"])

    def jobs_by_id(self, ids: Sequence[str]) -> list[Job]:
        by_id = {j.id: j for j in self._jobs_by_id(set(ids))}
        return [by_id[i] for i in ids if i in by_id]

    def dependency_states(self, refs: Iterable[str]) -> dict[str, list[str]]:
        refs = sorted(set(refs))
        out: dict[str, list[str]] = {r: [] for r in refs}
        for chunk in range(0, len(refs), 400):
            ids = refs[chunk:chunk + 400]
            marks = ",".join("?" * len(ids))
            # With the final states of jobs removed by retention (sqlite/retention.py), in one statement.
            for r in self._read(f"SELECT id, array_id, state FROM jobs WHERE id IN ({marks}) OR array_id IN ({marks})"
                                f" UNION SELECT id, array_id, state FROM compacted_jobs WHERE id IN ({marks})"
                                f" OR array_id IN ({marks})", (*ids, *ids, *ids, *ids)):
                out[r["id"] if r["id"] in out else r["array_id"]].append(r["state"])
        return out

    def get_job(self, job_id: str) -> Job:
        with self._reading() as db:
            return self._load(db, job_id)

    def list_jobs(self, tenants: Iterable[str] | None = None, states: Iterable[JobState] = (), limit: int = 1000,
                  before: tuple[float, str] | None = None, submitter: str | None = None) -> list[Job]:
        where: list[str] = []
        args: list[str | int | float] = []
        if submitter is not None:
            where.append("submitter=?")
            args.append(submitter)
        if tenants is not None:
            names = sorted(set(tenants))
            where.append(f"tenant IN ({','.join('?' * len(names))})")
            args.extend(names)
        if before is not None:
            where.append("(created_at, id) < (?, ?)")
            args.extend(before)
        values = [s.value for s in states]
        if values:
            where.append(f"state IN ({','.join('?' * len(values))})")
            args.extend(values)
        sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        args.append(limit)
        return self._jobs(sql, args)

    def job_counts(self) -> list[tuple[JobState, str, str, int]]:
        with self._reading(statements=1) as db:
            rows = db.execute("SELECT state, tenant, queue, COUNT(*) AS n FROM jobs GROUP BY state, tenant, queue")
            return [(JobState(r["state"]), r["tenant"], r["queue"], int(r["n"])) for r in rows]

    def pending_count(self, tenant: str) -> int:
        with self._reading(statements=1) as db:
            row = db.execute("SELECT COUNT(*) AS n FROM jobs WHERE tenant=? AND state=?",
                             [tenant, JobState.PENDING.value]).fetchone()
        return int(row["n"])

    def pending_jobs(self) -> list[Job]:
        return self._jobs("SELECT * FROM jobs WHERE state=? ORDER BY created_at, id", [JobState.PENDING.value])

    def gang_jobs(self, gang_ids: Iterable[str]) -> dict[str, list[Job]]:
        ids = sorted(set(gang_ids))
        out: dict[str, list[Job]] = {g: [] for g in ids}
        for chunk in range(0, len(ids), 400):
            part = ids[chunk:chunk + 400]
            for job in self._jobs(f"SELECT * FROM jobs WHERE gang_id IN ({','.join('?' * len(part))}) ORDER BY id",
                                  part):
                out[job.gang_id].append(job)
        return out

    def explain_jobs(self, explanations: Sequence[tuple[str, Explanation]]) -> None:
        if not explanations:
            return
        with self._tx() as db:
            db.executemany("UPDATE jobs SET explanation=?, message=? WHERE id=? AND state=?",
                           [(explanation_json(e), e.summary, job_id, JobState.PENDING.value)
                            for job_id, e in explanations])

    def cancel_job(self, job_id: str, now: float, message: str = "cancelled by user") -> Job:
        with self._tx() as db:
            job = self._load(db, job_id)
            if job.state is JobState.CANCELLED:
                return job
            job = job.with_state(JobState.CANCELLED, message=message, updated_at=now)
            self._save(db, job)
            return job

    # ----------------------------------------------------------- shared by the attempts' operations

    def _jobs(self, sql: str, args: Sequence[str | int | float]) -> list[Job]:
        with self._reading() as db:
            rows = db.execute(sql, args).fetchall()
            attempts = self._attempts(db, [r["id"] for r in rows])
        return [job_from_row(r, attempts[r["id"]], self._specs) for r in rows]

    def _jobs_by_id(self, ids: set[str]) -> list[Job]:
        with self._reading() as db:
            rows = self._rows_of(db, ids)
        return [job_from_row(r, attempts, self._specs) for r, attempts in rows]

    def _rows_of(self, db: sqlite3.Connection, ids: set[str]) -> list[tuple[sqlite3.Row, list[Attempt]]]:
        """The rows of the jobs `ids` with their attempts, read on `db` (parse them outside its lock)."""
        ids_list = sorted(ids)
        rows = [r for chunk in range(0, len(ids_list), 500) for r in db.execute(
            f"SELECT * FROM jobs WHERE id IN ({','.join('?' * len(ids_list[chunk:chunk + 500]))})",
            ids_list[chunk:chunk + 500]).fetchall()]
        attempts = self._attempts(db, [r["id"] for r in rows])
        return [(r, attempts[r["id"]]) for r in rows]

    @staticmethod
    def _attempts(db: sqlite3.Connection, job_ids: list[str]) -> dict[str, list[Attempt]]:
        out: dict[str, list[Attempt]] = {j: [] for j in job_ids}
        for chunk in range(0, len(job_ids), 500):
            ids = job_ids[chunk:chunk + 500]
            rows = db.execute(
                f"SELECT * FROM attempts WHERE job_id IN ({','.join('?' * len(ids))}) ORDER BY job_id, number",
                ids).fetchall()
            for r in rows:
                out[r["job_id"]].append(attempt_from_row(r))
        return out

    def _load(self, db: sqlite3.Connection, job_id: str) -> Job:
        row = db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"job {job_id} not found")
        return job_from_row(row, self._attempts(db, [job_id])[job_id], self._specs)

    def _save(self, db: sqlite3.Connection, job: Job) -> None:
        db.execute(
            "UPDATE jobs SET state=?, site=?, message=?, updated_at=?, vetoed_by=?, explanation=?, not_before=?"
            " WHERE id=?",
            (job.state.value, job.site, job.message, job.updated_at, json.dumps(sorted(job.vetoed_by)),
             explanation_json(job.explanation), job.not_before, job.id))
