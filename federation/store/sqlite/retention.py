"""Retention: removing jobs that ended long ago, keeping their usage and final state
(federation.store.retention decides which)."""
from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from federation.errors import NotFound
from federation.jobs import Job
from federation.store import retention
from federation.store.base import Compaction
from federation.store.retention import TERMINAL_SQL, Candidate
from federation.store.sqlite.attempts import LIVE
from federation.store.sqlite.jobs import JobTables
from training.model import TrainingState

CHUNK = 400
CANDIDATES = ("SELECT id, array_id, gang_id, state, updated_at FROM jobs INDEXED BY jobs_ended"
              f" WHERE state IN {TERMINAL_SQL} AND updated_at < ?{{after}} ORDER BY updated_at, id LIMIT ?")
RESOURCE = "COALESCE(json_extract(j.spec, '$.spec.resources.{0}'), 0)"
KEEP_USAGE = (
    "INSERT OR IGNORE INTO compacted_usage (job_id, attempt, tenant, queue, site, gpu_model, price, cpus, memory,"
    " gpus, started_at, ended_at) SELECT a.job_id, a.number, j.tenant, j.queue, a.site, a.gpu_model, a.price, "
    + ", ".join(RESOURCE.format(r) for r in ("cpus", "memory", "gpus")) +
    ", a.started_at, a.ended_at FROM attempts a JOIN jobs j ON j.id = a.job_id"
    " WHERE a.started_at > 0 AND a.job_id IN ({marks})")
KEEP_STATE = ("INSERT OR IGNORE INTO compacted_jobs (id, tenant, array_id, gang_id, state, ended_at)"
              " SELECT id, tenant, array_id, gang_id, state, updated_at FROM jobs WHERE id IN ({marks})")
REMOVE = ("DELETE FROM logs WHERE job_id IN ({marks})", "DELETE FROM artifacts WHERE job_id IN ({marks})",
          "DELETE FROM submissions WHERE json_extract(job_ids, '$[0]') IN ({marks})",
          "DELETE FROM attempts WHERE job_id IN ({marks})", "DELETE FROM jobs WHERE id IN ({marks})")


class RetentionTables(JobTables):
    def compact(self, ended_before: float, limit: int, after: tuple[float, str] | None = None) -> Compaction:
        if limit < 1:
            raise ValueError("limit: at least 1")
        sql = CANDIDATES.format(after="" if after is None else " AND (updated_at, id) > (?, ?)")
        with self._tx() as db:
            page = [Candidate(r["id"], r["array_id"], r["gang_id"], r["state"], r["updated_at"])
                    for r in db.execute(sql, (ended_before, *(after or ()), limit))]
            if not page:
                return Compaction(0, None)
            members = _members(db, page)
            ids = {c.id for c in page} | {m.id for group in members.values() for m in group}
            held = _busy(db, sorted(ids), ended_before) | _in_trainings(db)
            doomed, resume = retention.plan(page, members, held, ended_before, limit, full=len(page) == limit)
            for chunk in _chunks(doomed):
                marks = ",".join("?" * len(chunk))
                for statement in (KEEP_USAGE, KEEP_STATE, *REMOVE):
                    db.execute(statement.format(marks=marks), chunk)
        return Compaction(len(doomed), resume)

    def get_job(self, job_id: str) -> Job:
        try:
            return super().get_job(job_id)
        except NotFound:
            rows = self._read("SELECT state FROM compacted_jobs WHERE id=?", (job_id,))
            if not rows:
                raise
            raise NotFound(f"job {job_id} not found: it {rows[0]['state']} and was removed after the retention "
                           "period (policy spec.retention.jobs)") from None


def _chunks(ids: Sequence[str]) -> list[list[str]]:
    return [list(ids[i:i + CHUNK]) for i in range(0, len(ids), CHUNK)]


def _members(db: sqlite3.Connection, page: Sequence[Candidate]) -> dict[str, list[Candidate]]:
    """Per array and gang of the page, all of its elements or parts."""
    out: dict[str, list[Candidate]] = {}
    arrays, gangs = retention.grouped(page)
    for column, keys in (("array_id", arrays), ("gang_id", gangs)):
        for chunk in _chunks(keys):
            for r in db.execute(f"SELECT id, array_id, gang_id, state, updated_at FROM jobs WHERE {column} IN"
                                f" ({','.join('?' * len(chunk))})", chunk):
                c = Candidate(r["id"], r["array_id"], r["gang_id"], r["state"], r["updated_at"])
                out.setdefault(c.unit, []).append(c)
    return out


def _busy(db: sqlite3.Connection, ids: Sequence[str], ended_before: float) -> set[str]:
    """Those of `ids` with an attempt still live, or one that ended at or after `ended_before`."""
    out: set[str] = set()
    for chunk in _chunks(ids):
        out.update(r["job_id"] for r in db.execute(
            f"SELECT DISTINCT job_id FROM attempts WHERE job_id IN ({','.join('?' * len(chunk))})"
            f" AND (state IN ({','.join('?' * len(LIVE))}) OR ended_at >= ?)", (*chunk, *LIVE, ended_before)))
    return out


def _in_trainings(db: sqlite3.Connection) -> set[str]:
    models = [r["model_job"] for r in db.execute("SELECT model_job FROM trainings WHERE model_job != ''")]
    rounds = [(r["steps"], r["aggregate_job"], r["reveals"], r["keys"]) for r in db.execute(
        "SELECT r.steps, r.aggregate_job, r.reveals, r.keys FROM rounds r JOIN trainings t ON t.id = r.training_id"
        " WHERE t.state = ?", (TrainingState.RUNNING.value,))]
    return retention.training_jobs(models, rounds)
