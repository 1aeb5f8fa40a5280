"""Jobs: submission (idempotent by request id), reading, explaining and cancelling."""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence

from federation.audit import AuditRecord
from federation.errors import Conflict, FederationError, NotFound
from federation.jobs import Attempt, Explanation, Job, JobState
from federation.store.base import NewSubmission, SubmitRequest, over_pending
from federation.store.postgres.database import Args, Conn, Database
from federation.store.postgres.trust import insert_audits
from federation.store.sqlite.rows import attempt_from_row, explanation_json, job_from_row

INSERT_JOB = ("INSERT INTO jobs (id, tenant, spec, state, site, message, created_at, updated_at, vetoed_by, queue,"
              " array_id, array_index, gang_id, submitter) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
              " ON CONFLICT (id) DO NOTHING RETURNING id")


class JobTables(Database):
    def add_jobs(self, jobs: Sequence[Job], request: SubmitRequest | None = None, audit: Sequence[AuditRecord] = (),
                 seal: Callable[[AuditRecord], AuditRecord] | None = None, pending_limit: int = 0) -> list[str]:
        with self._tx() as db:
            ids = self._add(db, NewSubmission(jobs, request, audit, pending_limit))
            if seal is not None and ids == [j.id for j in jobs]:   # new, not an earlier submission's
                insert_audits(db, audit, seal)
        return ids

    def add_many(self, batch: Sequence[NewSubmission],
                 seal: Callable[[AuditRecord], AuditRecord] | None = None) -> list[list[str] | FederationError]:
        out: list[list[str] | FederationError] = []
        audit: list[AuditRecord] = []
        with self._tx() as db:
            for s in batch:
                try:
                    with db.transaction():   # a savepoint: one refused leaves the others
                        out.append(self._add(db, s))
                except FederationError as e:
                    out.append(e)
                    continue
                if out[-1] == [j.id for j in s.jobs]:   # new, not an earlier submission's
                    audit += s.audit
            if seal is not None:
                insert_audits(db, audit, seal)
        return out

    def _add(self, db: Conn, s: NewSubmission) -> list[str]:
        # A racing submission with the same request id waits here for the other to commit (then
        # gets its jobs) or to roll back (then goes on).
        request = s.request
        if request is not None and db.execute(
                "INSERT INTO submissions (actor, request_id, spec_sha256, job_ids, created_at)"
                " VALUES (%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING",
                (request.actor, request.request_id, request.spec_sha256, json.dumps([j.id for j in s.jobs]),
                 request.at)).rowcount == 0:
            return self._submission(db, request) or []
        if s.pending_limit and s.jobs:
            _check_pending(db, s.jobs[0].tenant, len(s.jobs), s.pending_limit)
        _insert_jobs(db, s.jobs)
        return [j.id for j in s.jobs]

    def submission(self, request: SubmitRequest) -> list[str] | None:
        with self._pool.connection() as db:
            return self._submission(db, request)

    @staticmethod
    def _submission(db: Conn, request: SubmitRequest) -> list[str] | None:
        row = db.execute("SELECT spec_sha256, job_ids FROM submissions WHERE actor=%s AND request_id=%s",
                         (request.actor, request.request_id)).fetchone()
        if row is None:
            return None
        if row["spec_sha256"] != request.spec_sha256:
            raise Conflict(f"request id {request.request_id!r} was already used for another spec")
        return json.loads(row["job_ids"])

    def jobs_by_id(self, ids: Sequence[str]) -> list[Job]:
        by_id = {j.id: j for j in self._jobs("SELECT * FROM jobs WHERE id = ANY(%s)", (sorted(set(ids)),))}
        return [by_id[i] for i in ids if i in by_id]

    def dependency_states(self, refs: Iterable[str]) -> dict[str, list[str]]:
        ids = sorted(set(refs))
        out: dict[str, list[str]] = {r: [] for r in ids}
        # With the final states of jobs removed by retention (postgres/retention.py), in one statement.
        for r in self._read("SELECT id, array_id, state FROM jobs WHERE id = ANY(%s) OR array_id = ANY(%s)"
                            " UNION SELECT id, array_id, state FROM compacted_jobs WHERE id = ANY(%s)"
                            " OR array_id = ANY(%s)", (ids, ids, ids, ids)):
            out[r["id"] if r["id"] in out else r["array_id"]].append(r["state"])
        return out

    def get_job(self, job_id: str) -> Job:
        with self._snapshot() as db:
            return self._load(db, job_id)

    def list_jobs(self, tenants: Iterable[str] | None = None, states: Iterable[JobState] = (), limit: int = 1000,
                  before: tuple[float, str] | None = None, submitter: str | None = None) -> list[Job]:
        where: list[str] = []
        args: list = []
        if submitter is not None:
            where.append("submitter = %s")
            args.append(submitter)
        if tenants is not None:
            where.append("tenant = ANY(%s)")
            args.append(sorted(set(tenants)))
        if before is not None:
            where.append("(created_at, id) < (%s, %s)")
            args.extend(before)
        values = [s.value for s in states]
        if values:
            where.append("state = ANY(%s)")
            args.append(values)
        sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        args.append(limit)
        return self._jobs(sql + " ORDER BY created_at DESC, id DESC LIMIT %s", args)

    def job_counts(self) -> list[tuple[JobState, str, str, int]]:
        rows = self._read("SELECT state, tenant, queue, COUNT(*) AS n FROM jobs GROUP BY state, tenant, queue")
        return [(JobState(r["state"]), r["tenant"], r["queue"], int(r["n"])) for r in rows]

    def pending_count(self, tenant: str) -> int:
        return int(self._read("SELECT COUNT(*) AS n FROM jobs WHERE tenant=%s AND state=%s",
                              (tenant, JobState.PENDING.value))[0]["n"])

    def pending_jobs(self) -> list[Job]:
        return self._jobs("SELECT * FROM jobs WHERE state=%s ORDER BY created_at, id", (JobState.PENDING.value,))

    def gang_jobs(self, gang_ids: Iterable[str]) -> dict[str, list[Job]]:
        ids = sorted(set(gang_ids))
        out: dict[str, list[Job]] = {g: [] for g in ids}
        for job in self._jobs("SELECT * FROM jobs WHERE gang_id = ANY(%s) ORDER BY id", (ids,)):
            out[job.gang_id].append(job)
        return out

    def explain_jobs(self, explanations: Sequence[tuple[str, Explanation]]) -> None:
        if not explanations:
            return
        with self._tx() as db, db.cursor() as cur:
            cur.executemany("UPDATE jobs SET explanation=%s, message=%s WHERE id=%s AND state=%s",
                            [(explanation_json(e), e.summary, job_id, JobState.PENDING.value)
                             for job_id, e in explanations])

    def cancel_job(self, job_id: str, now: float, message: str = "cancelled by user") -> Job:
        with self._tx() as db:
            job = self._load(db, job_id, lock=True)
            if job.state is JobState.CANCELLED:
                return job
            job = job.with_state(JobState.CANCELLED, message=message, updated_at=now)
            self._save(db, job)
            return job

    # ----------------------------------------------------------- shared by the attempts' operations

    def _jobs(self, sql: str, args: Args) -> list[Job]:
        with self._snapshot() as db:
            rows = db.execute(sql, args).fetchall()
            attempts = self._attempts(db, [r["id"] for r in rows])
        return [job_from_row(r, attempts[r["id"]], self._specs) for r in rows]

    @staticmethod
    def _attempts(db: Conn, job_ids: list[str]) -> dict[str, list[Attempt]]:
        out: dict[str, list[Attempt]] = {j: [] for j in job_ids}
        for r in db.execute("SELECT * FROM attempts WHERE job_id = ANY(%s) ORDER BY job_id, number", (job_ids,)):
            out[r["job_id"]].append(attempt_from_row(r))
        return out

    def _load(self, db: Conn, job_id: str, lock: bool = False) -> Job:
        """The job; with `lock`, its row is held FOR UPDATE until the transaction ends, so that writers
        of one job (placement, reports, cancellation) take turns and each sees the last one's result."""
        row = db.execute("SELECT * FROM jobs WHERE id=%s" + (" FOR UPDATE" if lock else ""), (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"job {job_id} not found")
        return job_from_row(row, self._attempts(db, [job_id])[job_id], self._specs)

    @staticmethod
    def _save(db: Conn, job: Job) -> None:
        db.execute(
            "UPDATE jobs SET state=%s, site=%s, message=%s, updated_at=%s, vetoed_by=%s, explanation=%s, not_before=%s"
            " WHERE id=%s",
            (job.state.value, job.site, job.message, job.updated_at, json.dumps(sorted(job.vetoed_by)),
             explanation_json(job.explanation), job.not_before, job.id))


def _check_pending(db: Conn, tenant: str, count: int, limit: int) -> None:
    """Submissions for one tenant take turns here until their commit, so each counts the others'."""
    db.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("pending:" + tenant,))
    (row,) = db.execute("SELECT COUNT(*) AS n FROM jobs WHERE tenant=%s AND state=%s",
                        (tenant, JobState.PENDING.value)).fetchall()
    if refused := over_pending(tenant, int(row["n"]), count, limit):
        raise refused


def _insert_jobs(db: Conn, jobs: Sequence[Job]) -> None:
    """All or none: Conflict (and the caller's transaction rolls back) if an id exists or repeats. In id
    order, so that two submissions sharing ids wait on each other in one order and never deadlock."""
    ordered = sorted(jobs, key=lambda j: j.id)
    with db.cursor() as cur:
        cur.executemany(INSERT_JOB, [
            (job.id, job.tenant, job.spec.model_dump_json(), job.state.value, job.site, job.message, job.created_at,
             job.updated_at, json.dumps(sorted(job.vetoed_by)), job.queue, job.array_id, job.array_index,
             job.gang_id, job.submitter) for job in ordered], returning=True)
        stored = []
        while True:
            stored += [r["id"] for r in cur.fetchall()]
            if not cur.nextset():
                break
    if len(stored) < len(ordered):
        taken = next(j.id for j, s in zip(ordered, [*stored, None]) if j.id != s)
        raise Conflict(f"job {taken} already exists")
