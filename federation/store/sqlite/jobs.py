"""Jobs: submission (idempotent by request id), reading, explaining and cancelling."""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence

from federation.audit import AuditRecord
from federation.errors import Conflict, NotFound
from federation.jobs import Attempt, Explanation, Job, JobState
from federation.store.base import SubmitRequest
from federation.store.sqlite.database import Database
from federation.store.sqlite.rows import attempt_from_row, explanation_json, job_from_row
from federation.store.sqlite.trust import insert_audit


class JobTables(Database):
    def add_jobs(self, jobs: Sequence[Job], request: SubmitRequest | None = None, audit: Sequence[AuditRecord] = (),
                 seal: Callable[[AuditRecord], AuditRecord] | None = None) -> list[str]:
        with self._tx() as db:
            if request is not None:
                earlier = self._submission(db, request)
                if earlier is not None:
                    return earlier
                db.execute("INSERT INTO submissions (actor, request_id, spec_sha256, job_ids, created_at)"
                           " VALUES (?,?,?,?,?)", (request.actor, request.request_id, request.spec_sha256,
                                                  json.dumps([j.id for j in jobs]), request.at))
            for job in jobs:
                try:
                    db.execute(
                        "INSERT INTO jobs (id, tenant, spec, state, site, message, created_at, updated_at, vetoed_by,"
                        " queue, array_id, array_index, gang_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (job.id, job.tenant, job.spec.model_dump_json(), job.state.value, job.site, job.message,
                         job.created_at, job.updated_at, json.dumps(sorted(job.vetoed_by)), job.queue, job.array_id,
                         job.array_index, job.gang_id))
                except sqlite3.IntegrityError:
                    raise Conflict(f"job {job.id} already exists") from None
            if seal is not None:
                for record in audit:
                    insert_audit(db, record, seal)
        return [j.id for j in jobs]

    def submission(self, request: SubmitRequest) -> list[str] | None:
        with self._lock:
            return self._submission(self._db, request)

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
            for r in self._read(f"SELECT id, array_id, state FROM jobs WHERE id IN ({marks}) OR array_id IN ({marks})",
                                (*ids, *ids)):
                out[r["id"] if r["id"] in out else r["array_id"]].append(r["state"])
        return out

    def get_job(self, job_id: str) -> Job:
        with self._lock:
            return self._load(self._db, job_id)

    def list_jobs(self, tenants: Iterable[str] | None = None, states: Iterable[JobState] = (), limit: int = 1000,
                  before: tuple[float, str] | None = None) -> list[Job]:
        where: list[str] = []
        args: list[str | int | float] = []
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

    def pending_count(self, tenant: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) AS n FROM jobs WHERE tenant=? AND state=?",
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

    def explain_job(self, job_id: str, explanation: Explanation) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET explanation=?, message=? WHERE id=? AND state=?",
                       (explanation_json(explanation), explanation.summary, job_id, JobState.PENDING.value))

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
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
            attempts = self._attempts([r["id"] for r in rows])
        return [job_from_row(r, attempts[r["id"]], self._specs) for r in rows]

    def _jobs_by_id(self, ids: set[str]) -> list[Job]:
        out: list[Job] = []
        ids_list = sorted(ids)
        for chunk in range(0, len(ids_list), 500):
            part = ids_list[chunk:chunk + 500]
            out += self._jobs(f"SELECT * FROM jobs WHERE id IN ({','.join('?' * len(part))})", part)
        return out

    def _attempts(self, job_ids: list[str]) -> dict[str, list[Attempt]]:
        out: dict[str, list[Attempt]] = {j: [] for j in job_ids}
        for chunk in range(0, len(job_ids), 500):
            ids = job_ids[chunk:chunk + 500]
            rows = self._db.execute(
                f"SELECT * FROM attempts WHERE job_id IN ({','.join('?' * len(ids))}) ORDER BY job_id, number",
                ids).fetchall()
            for r in rows:
                out[r["job_id"]].append(attempt_from_row(r))
        return out

    def _load(self, db: sqlite3.Connection, job_id: str) -> Job:
        row = db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"job {job_id} not found")
        return job_from_row(row, self._attempts([job_id])[job_id], self._specs)

    def _save(self, db: sqlite3.Connection, job: Job) -> None:
        db.execute(
            "UPDATE jobs SET state=?, site=?, message=?, updated_at=?, vetoed_by=?, explanation=?, not_before=?"
            " WHERE id=?",
            (job.state.value, job.site, job.message, job.updated_at, json.dumps(sorted(job.vetoed_by)),
             explanation_json(job.explanation), job.not_before, job.id))
