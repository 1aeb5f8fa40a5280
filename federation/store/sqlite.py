"""SQLite store (WAL mode): the embedded default.

One connection guarded by a lock: the federation is the only writer and every
operation is a short transaction, so this is simpler and faster than a pool.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import random
import sqlite3
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from federation.audit import GENESIS, AuditRecord
from federation.errors import Conflict, NotFound, PermissionDenied
from federation.gpus import (
    binding_from_json,
    binding_to_json,
    inventory_from_json,
    inventory_to_json,
)
from federation.jobs import (
    Attempt,
    AttemptState,
    Explanation,
    Job,
    JobState,
    check_attempt,
    job_state_after,
    retry_delay,
)
from federation.queues import UsageRecord
from federation.sites import Capacity, DatasetRecord, SiteRecord, SiteState
from federation.spec import FederatedTrainingSpec, JobSpec
from federation.store.base import MAX_LOG_BYTES_PER_ATTEMPT, Store, SubmitRequest
from policies.topology import Binding, Inventory
from training.model import Round, RoundState, Training, TrainingState

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    site TEXT NOT NULL DEFAULT '',
    message TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    vetoed_by TEXT NOT NULL DEFAULT '[]',
    explanation TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_tenant ON jobs(tenant, created_at);
CREATE TABLE IF NOT EXISTS attempts (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    number INTEGER NOT NULL,
    site TEXT NOT NULL,
    state TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    started_at REAL NOT NULL DEFAULT 0,
    ended_at REAL NOT NULL DEFAULT 0,
    binding TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (job_id, number)
);
CREATE INDEX IF NOT EXISTS attempts_live ON attempts(site, state);
CREATE INDEX IF NOT EXISTS attempts_state ON attempts(state);
CREATE TABLE IF NOT EXISTS logs (
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (job_id, attempt, offset)
);
CREATE TABLE IF NOT EXISTS artifacts (
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,          -- 0: an input of the job, given to every attempt
    name TEXT NOT NULL,
    data BLOB NOT NULL,
    sha256 TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (job_id, attempt, name)
);
CREATE TABLE IF NOT EXISTS trainings (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    actor TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    round INTEGER NOT NULL,
    model_job TEXT NOT NULL,
    message TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rounds (
    training_id TEXT NOT NULL REFERENCES trainings(id),
    number INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    state TEXT NOT NULL,
    participants TEXT NOT NULL,
    aggregator TEXT NOT NULL,
    steps TEXT NOT NULL,
    aggregate_job TEXT NOT NULL,
    reveals TEXT NOT NULL,
    reported TEXT NOT NULL,
    lost TEXT NOT NULL,
    bytes_moved INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL NOT NULL,
    PRIMARY KEY (training_id, number, attempt)
);
CREATE TABLE IF NOT EXISTS sites (
    name TEXT PRIMARY KEY,
    jurisdiction TEXT NOT NULL,
    region TEXT NOT NULL,
    labels TEXT NOT NULL,
    datasets TEXT NOT NULL,
    cpus REAL NOT NULL,
    memory INTEGER NOT NULL,
    gpus REAL NOT NULL,
    state TEXT NOT NULL,
    registered_at REAL NOT NULL,
    last_heartbeat REAL NOT NULL,
    inventory TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL,
    signature TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_subject ON audit(subject);
CREATE TABLE IF NOT EXISTS certificates (
    serial TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    first_seen REAL NOT NULL,
    revoked_at REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS certificates_name ON certificates(name);
CREATE TABLE IF NOT EXISTS submissions (
    actor TEXT NOT NULL,
    request_id TEXT NOT NULL,
    spec_sha256 TEXT NOT NULL,
    job_ids TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (actor, request_id)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS join_tokens (
    id TEXT PRIMARY KEY,
    secret_sha256 TEXT NOT NULL,
    name TEXT NOT NULL,
    attributes TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    used_at REAL NOT NULL DEFAULT 0
);
"""
# Columns added after the first release; a store written before them gains them on open.
_ADDED = (("attempts", "binding", "TEXT NOT NULL DEFAULT ''"), ("sites", "inventory", "TEXT NOT NULL DEFAULT ''"),
          ("jobs", "queue", "TEXT NOT NULL DEFAULT 'default'"), ("attempts", "gpu_model", "TEXT NOT NULL DEFAULT ''"),
          ("jobs", "array_id", "TEXT NOT NULL DEFAULT ''"), ("jobs", "array_index", "INTEGER NOT NULL DEFAULT 0"),
          ("attempts", "stop_requested_at", "REAL NOT NULL DEFAULT 0"), ("attempts", "stop_reason", "TEXT NOT NULL DEFAULT ''"),
          ("jobs", "gang_id", "TEXT NOT NULL DEFAULT ''"), ("jobs", "not_before", "REAL NOT NULL DEFAULT 0"),
          ("sites", "autonomous", "INTEGER NOT NULL DEFAULT 0"), ("sites", "agreement_key", "TEXT NOT NULL DEFAULT ''"))

_LIVE = (AttemptState.ASSIGNED.value, AttemptState.RUNNING.value)


class SpecCache:
    """Parsed job specs by job id. A stored spec never changes, and parsing one is most of the cost
    of reading a job, which the scheduler and every site's stream do many times."""

    def __init__(self, size: int = 50_000) -> None:
        self._size = size
        self._specs: OrderedDict[str, JobSpec] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, job_id: str, text: str) -> JobSpec:
        with self._lock:
            spec = self._specs.get(job_id)
            if spec is not None:
                self._specs.move_to_end(job_id)
                return spec
        spec = JobSpec.model_validate_json(text)
        with self._lock:
            self._specs[job_id] = spec
            if len(self._specs) > self._size:
                self._specs.popitem(last=False)
        return spec


class SQLiteStore(Store):
    def __init__(self, path: str | Path) -> None:
        path = str(path)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._specs = SpecCache()
        self._sites: list[SiteRecord] | None = None   # this process is the store's only writer
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        for table, column, decl in _ADDED:
            if column not in {r["name"] for r in self._db.execute(f"PRAGMA table_info({table})")}:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
        self._db.execute("CREATE INDEX IF NOT EXISTS jobs_array ON jobs(array_id) WHERE array_id != ''")
        self._db.execute("CREATE INDEX IF NOT EXISTS jobs_gang ON jobs(gang_id) WHERE gang_id != ''")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ----------------------------------------------------------- jobs

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
                    self._append_audit(db, record, seal)
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

    def get_meta(self, key: str, default: str = "") -> str:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row["value"] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO meta (key, value) VALUES (?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                       (key, value))

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
            row = self._db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None:
                raise NotFound(f"job {job_id} not found")
            return self._job(row, self._attempts([job_id])[job_id])

    def list_jobs(self, tenant: str | None = None, states: Iterable[JobState] = (), limit: int = 1000) -> list[Job]:
        where, args = [], []
        if tenant:
            where.append("tenant=?")
            args.append(tenant)
        states = [s.value for s in states]
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args.extend(states)
        sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        args.append(limit)
        return self._jobs(sql, args)

    def pending_jobs(self) -> list[Job]:
        return self._jobs("SELECT * FROM jobs WHERE state=? ORDER BY created_at, id", [JobState.PENDING.value])

    def _jobs(self, sql: str, args: list) -> list[Job]:
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
            attempts = self._attempts([r["id"] for r in rows])
        return [self._job(r, attempts[r["id"]]) for r in rows]

    def _attempts(self, job_ids: list[str]) -> dict[str, list[Attempt]]:
        out: dict[str, list[Attempt]] = {j: [] for j in job_ids}
        for chunk in range(0, len(job_ids), 500):
            ids = job_ids[chunk:chunk + 500]
            rows = self._db.execute(
                f"SELECT * FROM attempts WHERE job_id IN ({','.join('?' * len(ids))}) ORDER BY job_id, number",
                ids).fetchall()
            for r in rows:
                out[r["job_id"]].append(_attempt(r))
        return out

    def _job(self, row: sqlite3.Row, attempts: list[Attempt]) -> Job:
        explanation = None
        if row["explanation"]:
            e = json.loads(row["explanation"])
            explanation = Explanation(e["summary"], e["evaluated_at"], tuple(tuple(v) for v in e["verdicts"]))
        return Job(
            id=row["id"], spec=self._specs.get(row["id"], row["spec"]), state=JobState(row["state"]),
            site=row["site"], message=row["message"], created_at=row["created_at"], updated_at=row["updated_at"],
            attempts=tuple(attempts), vetoed_by=frozenset(json.loads(row["vetoed_by"])), explanation=explanation,
            queue=row["queue"], array_id=row["array_id"], array_index=row["array_index"], gang_id=row["gang_id"],
            not_before=row["not_before"])

    def _load(self, db: sqlite3.Connection, job_id: str) -> Job:
        row = db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"job {job_id} not found")
        return self._job(row, self._attempts([job_id])[job_id])

    def _save(self, db: sqlite3.Connection, job: Job) -> None:
        db.execute(
            "UPDATE jobs SET state=?, site=?, message=?, updated_at=?, vetoed_by=?, explanation=?, not_before=?"
            " WHERE id=?",
            (job.state.value, job.site, job.message, job.updated_at, json.dumps(sorted(job.vetoed_by)),
             _explanation_json(job.explanation), job.not_before, job.id))

    def place_job(self, job_id: str, site: str, explanation: Explanation, now: float,
                  binding: Binding = (), gpu_model: str = "") -> Attempt | None:
        with self._tx() as db:
            job = self._load(db, job_id)
            if job.state is not JobState.PENDING:
                return None
            attempt = Attempt(job_id=job_id, number=len(job.attempts) + 1, site=site, created_at=now,
                              binding=binding, gpu_model=gpu_model)
            self._save(db, job.with_state(JobState.PLACED, site=site, message=f"placed on {site}",
                                          updated_at=now, explanation=explanation))
            db.execute("INSERT INTO attempts (job_id, number, site, state, created_at, binding, gpu_model)"
                       " VALUES (?,?,?,?,?,?,?)",
                       (job_id, attempt.number, site, attempt.state.value, now, binding_to_json(binding), gpu_model))
            return attempt

    def explain_job(self, job_id: str, explanation: Explanation) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET explanation=?, message=? WHERE id=? AND state=?",
                       (_explanation_json(explanation), explanation.summary, job_id, JobState.PENDING.value))

    def cancel_job(self, job_id: str, now: float, message: str = "cancelled by user") -> Job:
        with self._tx() as db:
            job = self._load(db, job_id)
            if job.state is JobState.CANCELLED:
                return job
            job = job.with_state(JobState.CANCELLED, message=message, updated_at=now)
            self._save(db, job)
            return job

    def apply_attempt_status(self, job_id: str, number: int, state: AttemptState, message: str,
                             now: float, jitter: float | None = None) -> Job | None:
        with self._tx() as db:
            row = db.execute("SELECT * FROM attempts WHERE job_id=? AND number=?", (job_id, number)).fetchone()
            if row is None:
                raise NotFound(f"attempt {number} of job {job_id} not found")
            attempt = _attempt(row)
            if attempt.state is state:
                return None
            if not attempt.state.live:
                return None  # a late or repeated report of an attempt that already ended
            if state is AttemptState.STOPPED and attempt.stop_requested_at:
                state, message = AttemptState.PREEMPTED, attempt.stop_reason
            check_attempt(job_id, number, attempt.state, state)
            started = now if state is AttemptState.RUNNING else attempt.started_at
            ended = 0.0 if state.live else now
            db.execute("UPDATE attempts SET state=?, message=?, started_at=?, ended_at=? WHERE job_id=? AND number=?",
                       (state.value, message[:2000], started, ended, job_id, number))
            job = self._load(db, job_id)
            retry = None if job.state.terminal else retry_delay(
                job, number, state, random.random() if jitter is None else jitter)
            new_state = job_state_after(job.state, state, retried=retry is not None)
            if new_state is not None and new_state is not job.state:
                vetoed = job.vetoed_by | {attempt.site} if state is AttemptState.REJECTED else job.vetoed_by
                site = "" if new_state is JobState.PENDING else job.site
                text = _job_message(state, attempt.site, message)
                if retry is not None:
                    text = (f"retry {retry[1]} of {job.spec.spec.retry.limit} in {retry[0]:.1f}s: "
                            f"attempt {number} {text}")
                job = job.with_state(new_state, site=site, vetoed_by=vetoed, updated_at=now, message=text,
                                     not_before=now + retry[0] if retry is not None else job.not_before)
                self._save(db, job)
            return self._load(db, job_id)

    def gang_jobs(self, gang_ids: Iterable[str]) -> dict[str, list[Job]]:
        ids = sorted(set(gang_ids))
        out: dict[str, list[Job]] = {g: [] for g in ids}
        for chunk in range(0, len(ids), 400):
            part = ids[chunk:chunk + 400]
            for job in self._jobs(f"SELECT * FROM jobs WHERE gang_id IN ({','.join('?' * len(part))}) ORDER BY id",
                                  part):
                out[job.gang_id].append(job)
        return out

    def append_audit(self, record: AuditRecord, seal: Callable[[AuditRecord], AuditRecord]) -> AuditRecord:
        with self._tx() as db:
            return self._append_audit(db, record, seal)

    @staticmethod
    def _append_audit(db: sqlite3.Connection, record: AuditRecord,
                      seal: Callable[[AuditRecord], AuditRecord]) -> AuditRecord:
        last = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        sealed = seal(replace(record, seq=last["seq"] + 1 if last else 1, prev=last["hash"] if last else GENESIS))
        db.execute("INSERT INTO audit (seq, at, actor, action, subject, detail, prev, hash, signature)"
                   " VALUES (?,?,?,?,?,?,?,?,?)",
                   (sealed.seq, sealed.at, sealed.actor, sealed.action, sealed.subject,
                    json.dumps(sealed.detail, sort_keys=True), sealed.prev, sealed.hash, sealed.signature))
        return sealed

    def add_join_token(self, token_id: str, secret_sha256: str, name: str, attributes: dict, now: float,
                       expires_at: float) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO join_tokens (id, secret_sha256, name, attributes, created_at, expires_at)"
                       " VALUES (?,?,?,?,?,?)", (token_id, secret_sha256, name, json.dumps(attributes), now, expires_at))

    def use_join_token(self, token_id: str, secret_sha256: str, now: float) -> tuple[str, dict]:
        with self._tx() as db:
            row = db.execute("SELECT * FROM join_tokens WHERE id=?", (token_id,)).fetchone()
            if row is None or not hmac.compare_digest(row["secret_sha256"], secret_sha256):
                raise PermissionDenied("join token: not one this federation issued")
            if row["used_at"]:
                raise PermissionDenied(f"join token for {row['name']}: already used")
            if row["expires_at"] <= now:
                raise PermissionDenied(f"join token for {row['name']}: expired")
            db.execute("UPDATE join_tokens SET used_at=? WHERE id=?", (now, token_id))
            return row["name"], json.loads(row["attributes"])

    def remember_certificate(self, serial: str, name: str, now: float) -> None:
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO certificates (serial, name, first_seen) VALUES (?,?,?)",
                       (serial, name, now))

    def revoke_certificates(self, name: str, now: float) -> list[str]:
        with self._tx() as db:
            serials = [r["serial"] for r in db.execute(
                "SELECT serial FROM certificates WHERE name=? AND revoked_at=0", (name,))]
            db.execute("UPDATE certificates SET revoked_at=? WHERE name=? AND revoked_at=0", (now, name))
            return serials

    def revoked_serials(self) -> set[str]:
        return {r["serial"] for r in self._read("SELECT serial FROM certificates WHERE revoked_at>0", ())}

    def request_stop(self, job_id: str, number: int, reason: str, now: float) -> bool:
        with self._tx() as db:
            cur = db.execute(
                f"UPDATE attempts SET stop_requested_at=?, stop_reason=? WHERE job_id=? AND number=?"
                f" AND stop_requested_at=0 AND state IN ({','.join('?' * len(_LIVE))})",
                (now, reason[:2000], job_id, number, *_LIVE))
            return cur.rowcount == 1

    def stops_since(self, since: float) -> int:
        return self._read("SELECT COUNT(*) AS n FROM attempts WHERE stop_requested_at >= ? AND stop_requested_at > 0",
                          (since,))[0]["n"]

    def usage_records(self, since: float = 0.0) -> list[UsageRecord]:
        rows = self._read(
            "SELECT a.job_id, a.number, a.site, a.gpu_model, a.started_at, a.ended_at, j.tenant, j.queue,"
            " json_extract(j.spec, '$.spec.resources.cpus') AS cpus,"
            " json_extract(j.spec, '$.spec.resources.memory') AS memory,"
            " json_extract(j.spec, '$.spec.resources.gpus') AS gpus"
            " FROM attempts a JOIN jobs j ON j.id = a.job_id"
            " WHERE a.started_at > 0 AND (a.ended_at = 0 OR a.ended_at >= ?) ORDER BY a.started_at", (since,))
        return [UsageRecord(r["job_id"], r["number"], r["tenant"], r["queue"], r["site"], r["gpu_model"],
                            float(r["cpus"] or 0), float(r["memory"] or 0), float(r["gpus"] or 0),
                            r["started_at"], r["ended_at"]) for r in rows]

    def _read(self, sql: str, args: tuple) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def live_attempts(self, site: str | None = None, jobs: Iterable[str] | None = None) -> list[tuple[Attempt, Job]]:
        sql = f"SELECT * FROM attempts WHERE state IN ({','.join('?' * len(_LIVE))})"
        args: list = list(_LIVE)
        if site is not None:
            sql += " AND site=?"
            args.append(site)
        with self._lock:
            if jobs is None:
                rows = self._db.execute(sql, args).fetchall()
            else:
                ids = sorted(set(jobs))
                rows = [r for chunk in range(0, len(ids), 500) for r in self._db.execute(
                    sql + f" AND job_id IN ({','.join('?' * len(ids[chunk:chunk + 500]))})",
                    args + ids[chunk:chunk + 500]).fetchall()]
            attempts = [_attempt(r) for r in rows]
            jobs = {j.id: j for j in self._jobs_by_id({a.job_id for a in attempts})}
        return [(a, jobs[a.job_id]) for a in attempts]

    def _jobs_by_id(self, ids: set[str]) -> list[Job]:
        out: list[Job] = []
        ids_list = sorted(ids)
        for chunk in range(0, len(ids_list), 500):
            part = ids_list[chunk:chunk + 500]
            out += self._jobs(f"SELECT * FROM jobs WHERE id IN ({','.join('?' * len(part))})", part)
        return out

    # ----------------------------------------------------------- artifacts

    def put_artifact(self, job_id: str, attempt: int, name: str, data: bytes, now: float) -> bool:
        digest = hashlib.sha256(data).hexdigest()
        with self._tx() as db:
            row = db.execute("SELECT sha256 FROM artifacts WHERE job_id=? AND attempt=? AND name=?",
                             (job_id, attempt, name)).fetchone()
            if row is not None:
                if row["sha256"] != digest:
                    raise Conflict(f"{name} of {job_id}/{attempt} was already stored with other content")
                return False
            db.execute("INSERT INTO artifacts (job_id, attempt, name, data, sha256, created_at) VALUES (?,?,?,?,?,?)",
                       (job_id, attempt, name, data, digest, now))
            return True

    def get_artifact(self, job_id: str, attempt: int, name: str) -> tuple[bytes, str]:
        row = self._read("SELECT data, sha256 FROM artifacts WHERE job_id=? AND attempt=? AND name=?",
                         (job_id, attempt, name))
        if not row:
            raise NotFound(f"{name} of {job_id}/{attempt} not found")
        return bytes(row[0]["data"]), row[0]["sha256"]

    def artifact_refs(self, job_ids: Iterable[str], attempt: int = 0) -> dict[str, list[tuple[str, str, int]]]:
        ids = sorted(set(job_ids))
        out: dict[str, list[tuple[str, str, int]]] = {}
        for chunk in range(0, len(ids), 500):
            part = ids[chunk:chunk + 500]
            for r in self._read(f"SELECT job_id, name, sha256, LENGTH(data) AS size FROM artifacts WHERE attempt=?"
                                f" AND job_id IN ({','.join('?' * len(part))}) ORDER BY job_id, name",
                                (attempt, *part)):
                out.setdefault(r["job_id"], []).append((r["name"], r["sha256"], r["size"]))
        return out

    # ----------------------------------------------------------- federated training

    def save_training(self, t: Training) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO trainings (id, tenant, actor, spec, state, round, model_job, message, created_at,"
                       " updated_at) VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET state=excluded.state,"
                       " round=excluded.round, model_job=excluded.model_job, message=excluded.message,"
                       " updated_at=excluded.updated_at",
                       (t.id, t.tenant, t.actor, t.spec.model_dump_json(), t.state.value, t.round, t.model_job,
                        t.message, t.created_at, t.updated_at))

    def trainings(self, active: bool = False, tenant: str | None = None) -> list[Training]:
        sql, args = "SELECT * FROM trainings WHERE 1=1", []
        if active:
            sql += " AND state=?"
            args.append(TrainingState.RUNNING.value)
        if tenant is not None:
            sql += " AND tenant=?"
            args.append(tenant)
        return [_training(r) for r in self._read(sql + " ORDER BY created_at, id", tuple(args))]

    def get_training(self, training_id: str) -> Training:
        rows = self._read("SELECT * FROM trainings WHERE id=?", (training_id,))
        if not rows:
            raise NotFound(f"training {training_id} not found")
        return _training(rows[0])

    def save_round(self, r: Round) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO rounds (training_id, number, attempt, state, participants, aggregator,"
                       " steps, aggregate_job, reveals, reported, lost, bytes_moved, metrics, started_at, ended_at)"
                       " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       (r.training_id, r.number, r.attempt, r.state.value, json.dumps(list(r.participants)),
                        r.aggregator, json.dumps(r.steps, sort_keys=True), r.aggregate_job,
                        json.dumps(r.reveals, sort_keys=True),
                        json.dumps(list(r.reported)), json.dumps(list(r.lost)), r.bytes_moved,
                        json.dumps(r.metrics, sort_keys=True), r.started_at, r.ended_at))

    def rounds(self, training_id: str) -> list[Round]:
        return [Round(r["training_id"], r["number"], r["attempt"], RoundState(r["state"]),
                      tuple(json.loads(r["participants"])), r["aggregator"], json.loads(r["steps"]),
                      r["aggregate_job"], json.loads(r["reveals"]), tuple(json.loads(r["reported"])),
                      tuple(json.loads(r["lost"])), r["bytes_moved"], json.loads(r["metrics"]), r["started_at"],
                      r["ended_at"])
                for r in self._read("SELECT * FROM rounds WHERE training_id=? ORDER BY number, attempt",
                                    (training_id,))]

    # ----------------------------------------------------------- logs

    def append_log(self, job_id: str, number: int, offset: int, data: bytes) -> int:
        with self._tx() as db:
            have = db.execute("SELECT COALESCE(SUM(LENGTH(data)), 0) FROM logs WHERE job_id=? AND attempt=?",
                              (job_id, number)).fetchone()[0]
            if offset > have or offset + len(data) <= have:
                return have  # a gap (resent later from an earlier offset) or bytes already held
            new = data[have - offset:][:max(0, MAX_LOG_BYTES_PER_ATTEMPT - have)]
            if new:
                db.execute("INSERT INTO logs (job_id, attempt, offset, data) VALUES (?,?,?,?)",
                           (job_id, number, have, new))
            return have + len(new)

    def read_log(self, job_id: str, offset: int = 0) -> bytes:
        with self._lock:
            rows = self._db.execute("SELECT data FROM logs WHERE job_id=? ORDER BY attempt, offset",
                                    (job_id,)).fetchall()
        return b"".join(r[0] for r in rows)[offset:]

    # ----------------------------------------------------------- sites

    def upsert_site(self, site: SiteRecord) -> SiteRecord:
        with self._tx() as db:
            self._sites = None
            db.execute(
                "INSERT INTO sites (name, jurisdiction, region, labels, datasets, cpus, memory, gpus, state,"
                " registered_at, last_heartbeat, inventory, autonomous, agreement_key) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT(name) DO UPDATE SET jurisdiction=excluded.jurisdiction, region=excluded.region,"
                " labels=excluded.labels, datasets=excluded.datasets, cpus=excluded.cpus,"
                " memory=excluded.memory, gpus=excluded.gpus, registered_at=excluded.registered_at,"
                " last_heartbeat=excluded.last_heartbeat, inventory=excluded.inventory,"
                " autonomous=excluded.autonomous, agreement_key=excluded.agreement_key",
                (site.name, site.jurisdiction, site.region, json.dumps(site.labels, sort_keys=True),
                 json.dumps([d.__dict__ for d in site.datasets]), site.capacity.cpus, site.capacity.memory,
                 site.capacity.gpus, site.state.value, site.registered_at, site.last_heartbeat,
                 inventory_to_json(site.inventory), int(site.autonomous), site.agreement_key))
            return _site(db.execute("SELECT * FROM sites WHERE name=?", (site.name,)).fetchone())

    def get_site(self, name: str) -> SiteRecord:
        with self._lock:
            row = self._db.execute("SELECT * FROM sites WHERE name=?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"site {name} not found")
        return _site(row)

    def list_sites(self) -> list[SiteRecord]:
        with self._lock:
            if self._sites is None:
                self._sites = [_site(r) for r in self._db.execute("SELECT * FROM sites ORDER BY name").fetchall()]
            return list(self._sites)

    def set_site_state(self, name: str, state: SiteState) -> SiteRecord:
        with self._tx() as db:
            self._sites = None
            if db.execute("UPDATE sites SET state=? WHERE name=?", (state.value, name)).rowcount == 0:
                raise NotFound(f"site {name} not found")
            return _site(db.execute("SELECT * FROM sites WHERE name=?", (name,)).fetchone())

    def heartbeat(self, name: str, capacity: Capacity | None, now: float,
                  inventory: Inventory | None = None) -> SiteRecord:
        with self._tx() as db:
            self._sites = None
            if inventory is not None:
                db.execute("UPDATE sites SET inventory=? WHERE name=?", (inventory_to_json(inventory), name))
            if capacity is None:
                n = db.execute("UPDATE sites SET last_heartbeat=? WHERE name=?", (now, name)).rowcount
            else:
                n = db.execute("UPDATE sites SET last_heartbeat=?, cpus=?, memory=?, gpus=? WHERE name=?",
                               (now, capacity.cpus, capacity.memory, capacity.gpus, name)).rowcount
            if n == 0:
                raise NotFound(f"site {name} is not registered")
            return _site(db.execute("SELECT * FROM sites WHERE name=?", (name,)).fetchone())


def _training(r: sqlite3.Row) -> Training:
    return Training(r["id"], r["tenant"], r["actor"], FederatedTrainingSpec.model_validate_json(r["spec"]),
                    TrainingState(r["state"]), r["round"], r["model_job"], r["message"], r["created_at"],
                    r["updated_at"])


def _attempt(r: sqlite3.Row) -> Attempt:
    return Attempt(job_id=r["job_id"], number=r["number"], site=r["site"], state=AttemptState(r["state"]),
                   message=r["message"], created_at=r["created_at"], started_at=r["started_at"],
                   ended_at=r["ended_at"], binding=binding_from_json(r["binding"]), gpu_model=r["gpu_model"],
                   stop_requested_at=r["stop_requested_at"], stop_reason=r["stop_reason"])


def _site(r: sqlite3.Row) -> SiteRecord:
    return SiteRecord(
        name=r["name"], jurisdiction=r["jurisdiction"], region=r["region"], labels=json.loads(r["labels"]),
        datasets=tuple(DatasetRecord(**d) for d in json.loads(r["datasets"])),
        capacity=Capacity(r["cpus"], r["memory"], r["gpus"]), state=SiteState(r["state"]),
        registered_at=r["registered_at"], last_heartbeat=r["last_heartbeat"],
        inventory=inventory_from_json(r["inventory"]), autonomous=bool(r["autonomous"]),
        agreement_key=r["agreement_key"])


def _explanation_json(e: Explanation | None) -> str | None:
    if e is None:
        return None
    return json.dumps({"summary": e.summary, "evaluated_at": e.evaluated_at, "verdicts": [list(v) for v in e.verdicts]})


def _job_message(state: AttemptState, site: str, detail: str) -> str:
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
