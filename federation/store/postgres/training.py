"""Federated trainings and their rounds."""
from __future__ import annotations

import json

from federation.errors import NotFound
from federation.store.postgres.database import Database
from federation.store.sqlite.rows import round_from_row, training_from_row
from training.model import Round, Training, TrainingState


class TrainingTables(Database):
    def save_training(self, t: Training) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO trainings (id, tenant, actor, spec, state, round, model_job, message, created_at,"
                       " updated_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (id) DO UPDATE SET"
                       " state=excluded.state, round=excluded.round, model_job=excluded.model_job,"
                       " message=excluded.message, updated_at=excluded.updated_at",
                       (t.id, t.tenant, t.actor, t.spec.model_dump_json(), t.state.value, t.round, t.model_job,
                        t.message, t.created_at, t.updated_at))

    def trainings(self, active: bool = False, tenant: str | None = None) -> list[Training]:
        sql, args = "SELECT * FROM trainings WHERE true", []
        if active:
            sql += " AND state=%s"
            args.append(TrainingState.RUNNING.value)
        if tenant is not None:
            sql += " AND tenant=%s"
            args.append(tenant)
        return [training_from_row(r) for r in self._read(sql + " ORDER BY created_at, id", args)]

    def get_training(self, training_id: str) -> Training:
        rows = self._read("SELECT * FROM trainings WHERE id=%s", (training_id,))
        if not rows:
            raise NotFound(f"training {training_id} not found")
        return training_from_row(rows[0])

    def save_round(self, r: Round) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO rounds (training_id, number, attempt, state, participants, aggregator, steps,"
                       " aggregate_job, reveals, reported, lost, bytes_moved, metrics, started_at, ended_at, keys)"
                       " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
                       " ON CONFLICT (training_id, number, attempt) DO UPDATE SET state=excluded.state,"
                       " participants=excluded.participants, aggregator=excluded.aggregator, steps=excluded.steps,"
                       " aggregate_job=excluded.aggregate_job, reveals=excluded.reveals, reported=excluded.reported,"
                       " lost=excluded.lost, bytes_moved=excluded.bytes_moved, metrics=excluded.metrics,"
                       " started_at=excluded.started_at, ended_at=excluded.ended_at, keys=excluded.keys",
                       (r.training_id, r.number, r.attempt, r.state.value, json.dumps(list(r.participants)),
                        r.aggregator, json.dumps(r.steps, sort_keys=True), r.aggregate_job,
                        json.dumps(r.reveals, sort_keys=True),
                        json.dumps(list(r.reported)), json.dumps(list(r.lost)), r.bytes_moved,
                        json.dumps(r.metrics, sort_keys=True), r.started_at, r.ended_at,
                        json.dumps(r.keys, sort_keys=True)))

    def rounds(self, training_id: str) -> list[Round]:
        return [round_from_row(r)
                for r in self._read("SELECT * FROM rounds WHERE training_id=%s ORDER BY number, attempt",
                                    (training_id,))]
