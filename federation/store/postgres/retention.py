"""Retention: removing jobs that ended long ago, keeping their usage and final state
(federation.store.retention decides which)."""
from __future__ import annotations

from collections.abc import Sequence

from federation.errors import NotFound
from federation.jobs import Job
from federation.store import retention
from federation.store.base import Compaction
from federation.store.postgres.database import Conn
from federation.store.postgres.jobs import JobTables
from federation.store.retention import TERMINAL_SQL, Candidate
from federation.store.sqlite.attempts import LIVE
from training.model import TrainingState

CANDIDATES = ("SELECT id, array_id, gang_id, state, updated_at FROM jobs"
              f" WHERE state IN {TERMINAL_SQL} AND updated_at < %s{{after}} ORDER BY updated_at, id LIMIT %s")
RESOURCE = "COALESCE((j.spec::jsonb #>> '{{spec,resources,{0}}}')::float8, 0)"
KEEP_USAGE = (
    "INSERT INTO compacted_usage (job_id, attempt, tenant, queue, site, gpu_model, price, cpus, memory, gpus,"
    " started_at, ended_at) SELECT a.job_id, a.number, j.tenant, j.queue, a.site, a.gpu_model, a.price, "
    + ", ".join(RESOURCE.format(r) for r in ("cpus", "memory", "gpus")) +
    ", a.started_at, a.ended_at FROM attempts a JOIN jobs j ON j.id = a.job_id"
    " WHERE a.started_at > 0 AND a.job_id = ANY(%s) ON CONFLICT DO NOTHING")
KEEP_STATE = ("INSERT INTO compacted_jobs (id, tenant, array_id, gang_id, state, ended_at)"
              " SELECT id, tenant, array_id, gang_id, state, updated_at FROM jobs WHERE id = ANY(%s)"
              " ON CONFLICT DO NOTHING")
REMOVE = ("DELETE FROM logs WHERE job_id = ANY(%s)", "DELETE FROM artifacts WHERE job_id = ANY(%s)",
          "DELETE FROM submissions WHERE (job_ids::jsonb) ->> 0 = ANY(%s)",
          "DELETE FROM attempts WHERE job_id = ANY(%s)", "DELETE FROM jobs WHERE id = ANY(%s)")


class RetentionTables(JobTables):
    def compact(self, ended_before: float, limit: int, after: tuple[float, str] | None = None) -> Compaction:
        if limit < 1:
            raise ValueError("limit: at least 1")
        sql = CANDIDATES.format(after="" if after is None else " AND (updated_at, id) > (%s, %s)")
        with self._tx() as db:
            # No row locks needed: an ended job never changes again, and an attempt once ended never lives again.
            page = [Candidate(r["id"], r["array_id"], r["gang_id"], r["state"], r["updated_at"])
                    for r in db.execute(sql, (ended_before, *(after or ()), limit))]
            if not page:
                return Compaction(0, None)
            members = _members(db, page)
            ids = {c.id for c in page} | {m.id for group in members.values() for m in group}
            held = _busy(db, sorted(ids), ended_before) | _in_trainings(db)
            doomed, resume = retention.plan(page, members, held, ended_before, limit, full=len(page) == limit)
            if doomed:
                for statement in (KEEP_USAGE, KEEP_STATE, *REMOVE):
                    db.execute(statement, (doomed,))
        return Compaction(len(doomed), resume)

    def get_job(self, job_id: str) -> Job:
        try:
            return super().get_job(job_id)
        except NotFound:
            rows = self._read("SELECT state FROM compacted_jobs WHERE id=%s", (job_id,))
            if not rows:
                raise
            raise NotFound(f"job {job_id} not found: it {rows[0]['state']} and was removed after the retention "
                           "period (policy spec.retention.jobs)") from None


def _members(db: Conn, page: Sequence[Candidate]) -> dict[str, list[Candidate]]:
    """Per array and gang of the page, all of its elements or parts."""
    out: dict[str, list[Candidate]] = {}
    arrays, gangs = retention.grouped(page)
    for column, keys in (("array_id", arrays), ("gang_id", gangs)):
        if keys:
            for r in db.execute(f"SELECT id, array_id, gang_id, state, updated_at FROM jobs WHERE {column} = ANY(%s)"
                                " ORDER BY id", (keys,)):
                c = Candidate(r["id"], r["array_id"], r["gang_id"], r["state"], r["updated_at"])
                out.setdefault(c.unit, []).append(c)
    return out


def _busy(db: Conn, ids: Sequence[str], ended_before: float) -> set[str]:
    """Those of `ids` with an attempt still live, or one that ended at or after `ended_before`."""
    return {r["job_id"] for r in db.execute(
        "SELECT DISTINCT job_id FROM attempts WHERE job_id = ANY(%s) AND (state = ANY(%s) OR ended_at >= %s)",
        (list(ids), list(LIVE), ended_before))}


def _in_trainings(db: Conn) -> set[str]:
    models = [r["model_job"] for r in db.execute("SELECT model_job FROM trainings WHERE model_job != ''")]
    rounds = [(r["steps"], r["aggregate_job"], r["reveals"], r["keys"]) for r in db.execute(
        "SELECT r.steps, r.aggregate_job, r.reveals, r.keys FROM rounds r JOIN trainings t ON t.id = r.training_id"
        " WHERE t.state = %s", (TrainingState.RUNNING.value,))]
    return retention.training_jobs(models, rounds)
