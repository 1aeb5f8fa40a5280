"""Attempts: placing a job, what its site reports, stops asked for preemption, and usage."""
from __future__ import annotations

import random
from collections.abc import Iterable

from federation.errors import NotFound
from federation.gpus import binding_to_json
from federation.jobs import (
    Attempt,
    AttemptState,
    Explanation,
    Job,
    JobState,
    after_report,
    check_attempt,
)
from federation.queues import UsageRecord
from federation.spec.common import Resources
from federation.store.base import reported_end, started_at
from federation.store.sqlite.jobs import JobTables
from federation.store.sqlite.rows import attempt_from_row, job_from_row
from policies.gpus import Binding

LIVE = (AttemptState.ASSIGNED.value, AttemptState.RUNNING.value)


class AttemptTables(JobTables):
    def place_job(self, job_id: str, site: str, explanation: Explanation, now: float,
                  binding: Binding = (), gpu_model: str = "", node_type: str = "", price: float = 0.0
                  ) -> Attempt | None:
        with self._tx() as db:
            job = self._load(db, job_id)
            if job.state is not JobState.PENDING:
                return None
            attempt = Attempt(job_id=job_id, number=len(job.attempts) + 1, site=site, created_at=now,
                              binding=binding, gpu_model=gpu_model, node_type=node_type, price=price)
            self._save(db, job.with_state(JobState.PLACED, site=site, message=f"placed on {site}",
                                          updated_at=now, explanation=explanation))
            db.execute("INSERT INTO attempts (job_id, number, site, state, created_at, binding, gpu_model,"
                       " node_type, price)"
                       " VALUES (?,?,?,?,?,?,?,?,?)",
                       (job_id, attempt.number, site, attempt.state.value, now, binding_to_json(binding), gpu_model,
                        node_type, price))
            return attempt

    def apply_attempt_status(self, job_id: str, number: int, state: AttemptState, message: str,
                             now: float, jitter: float | None = None) -> Job | None:
        with self._tx() as db:
            row = db.execute("SELECT * FROM attempts WHERE job_id=? AND number=?", (job_id, number)).fetchone()
            if row is None:
                raise NotFound(f"attempt {number} of job {job_id} not found")
            attempt = attempt_from_row(row)
            if attempt.state is state:
                return None
            if not attempt.state.live:
                return None  # a late or repeated report of an attempt that already ended
            if state is AttemptState.STOPPED:
                state, message = reported_end(attempt, state, message, self._load(db, job_id).state.terminal)
            check_attempt(job_id, number, attempt.state, state)
            started = started_at(attempt, state, now)
            ended = 0.0 if state.live else now
            db.execute("UPDATE attempts SET state=?, message=?, started_at=?, ended_at=? WHERE job_id=? AND number=?",
                       (state.value, message[:2000], started, ended, job_id, number))
            changed = after_report(self._load(db, job_id), attempt, state, message, now,
                                   random.random() if jitter is None else jitter)
            if changed is not None:
                self._save(db, changed)
            return self._load(db, job_id)

    def request_stop(self, job_id: str, number: int, reason: str, now: float) -> bool:
        with self._tx() as db:
            cur = db.execute(
                f"UPDATE attempts SET stop_requested_at=?, stop_reason=? WHERE job_id=? AND number=?"
                f" AND stop_requested_at=0 AND state IN ({','.join('?' * len(LIVE))})",
                (now, reason[:2000], job_id, number, *LIVE))
            return cur.rowcount == 1

    def stops_since(self, since: float) -> int:
        return self._read("SELECT COUNT(*) AS n FROM attempts WHERE stop_requested_at >= ? AND stop_requested_at > 0",
                          (since,))[0]["n"]

    def usage_records(self, since: float = 0.0) -> list[UsageRecord]:
        rows = self._read(
            "SELECT a.job_id, a.number, a.site, a.gpu_model, a.price, a.started_at, a.ended_at, j.tenant, j.queue,"
            " json_extract(j.spec, '$.spec.resources.cpus') AS cpus,"
            " json_extract(j.spec, '$.spec.resources.memory') AS memory,"
            " json_extract(j.spec, '$.spec.resources.gpus') AS gpus"
            " FROM attempts a JOIN jobs j ON j.id = a.job_id"
            " WHERE a.started_at > 0 AND (a.ended_at = 0 OR a.ended_at >= ?)"
            # Those of jobs removed by retention (sqlite/retention.py): one statement, so never seen twice.
            " UNION ALL SELECT job_id, attempt, site, gpu_model, price, started_at, ended_at, tenant, queue, cpus,"
            " memory, gpus FROM compacted_usage WHERE ended_at >= ? ORDER BY started_at, job_id, number",
            (since, since))
        return [UsageRecord(r["job_id"], r["number"], r["tenant"], r["queue"], r["site"], r["gpu_model"],
                            float(r["cpus"] or 0), float(r["memory"] or 0), float(r["gpus"] or 0),
                            r["started_at"], r["ended_at"], float(r["price"] or 0)) for r in rows]

    def live_attempts(self, site: str | None = None, jobs: Iterable[str] | None = None) -> list[tuple[Attempt, Job]]:
        sql = f"SELECT * FROM attempts WHERE state IN ({','.join('?' * len(LIVE))})"
        args: list = list(LIVE)
        if site is not None:
            sql += " AND site=?"
            args.append(site)
        # One reader's snapshot, not the writer's lock: every scheduling cycle reads this.
        with self._reading() as db:
            if jobs is None:
                rows = db.execute(sql, args).fetchall()
            else:
                ids = sorted(set(jobs))
                rows = [r for chunk in range(0, len(ids), 500) for r in db.execute(
                    sql + f" AND job_id IN ({','.join('?' * len(ids[chunk:chunk + 500]))})",
                    args + ids[chunk:chunk + 500]).fetchall()]
            attempts = [attempt_from_row(r) for r in rows]
            job_rows = self._rows_of(db, {a.job_id for a in attempts})
        by_id = {r["id"]: job_from_row(r, history, self._specs) for r, history in job_rows}
        return [(a, by_id[a.job_id]) for a in attempts]

    def live_use(self) -> list[tuple[str, str, Resources]]:
        with self._reading(statements=1) as db:
            rows = db.execute("SELECT a.site, a.gpu_model, j.spec FROM attempts a JOIN jobs j ON j.id = a.job_id"
                              f" WHERE a.state IN ({','.join('?' * len(LIVE))})", LIVE).fetchall()
        return [(r["site"], r["gpu_model"], self._specs.get(r["spec"]).spec.resources) for r in rows]
