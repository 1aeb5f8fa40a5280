"""Bytes kept for jobs: their input and output files (artifacts) and their attempts' logs."""
from __future__ import annotations

import hashlib
from collections.abc import Iterable

from federation.errors import Conflict, NotFound
from federation.store.base import MAX_LOG_BYTES_PER_ATTEMPT
from federation.store.postgres.database import Database, lock_log


class FileTables(Database):
    def put_artifact(self, job_id: str, attempt: int, name: str, data: bytes, now: float) -> bool:
        digest = hashlib.sha256(data).hexdigest()
        with self._tx() as db:
            # A racing insert of the same name waits for the other to commit, then inserts nothing.
            if db.execute("INSERT INTO artifacts (job_id, attempt, name, data, sha256, created_at)"
                          " VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING",
                          (job_id, attempt, name, data, digest, now)).rowcount == 1:
                return True
            row = db.execute("SELECT sha256 FROM artifacts WHERE job_id=%s AND attempt=%s AND name=%s",
                             (job_id, attempt, name)).fetchall()[0]
            if row["sha256"] != digest:
                raise Conflict(f"{name} of {job_id}/{attempt} was already stored with other content")
            return False

    def get_artifact(self, job_id: str, attempt: int, name: str) -> tuple[bytes, str]:
        rows = self._read("SELECT data, sha256 FROM artifacts WHERE job_id=%s AND attempt=%s AND name=%s",
                          (job_id, attempt, name))
        if not rows:
            raise NotFound(f"{name} of {job_id}/{attempt} not found")
        return bytes(rows[0]["data"]), rows[0]["sha256"]

    def artifact_refs(self, job_ids: Iterable[str], attempt: int = 0) -> dict[str, list[tuple[str, str, int]]]:
        out: dict[str, list[tuple[str, str, int]]] = {}
        for r in self._read("SELECT job_id, name, sha256, octet_length(data) AS size FROM artifacts"
                            " WHERE attempt=%s AND job_id = ANY(%s) ORDER BY job_id, name",
                            (attempt, sorted(set(job_ids)))):
            out.setdefault(r["job_id"], []).append((r["name"], r["sha256"], r["size"]))
        return out

    def append_log(self, job_id: str, number: int, offset: int, data: bytes) -> int:
        with self._tx() as db:
            lock_log(db, job_id, number)
            have = int(db.execute("SELECT COALESCE(SUM(octet_length(data)), 0) AS n FROM logs WHERE job_id=%s"
                                  " AND attempt=%s", (job_id, number)).fetchall()[0]["n"])
            if offset > have or offset + len(data) <= have:
                return have  # a gap (resent later from an earlier offset) or bytes already held
            new = data[have - offset:][:max(0, MAX_LOG_BYTES_PER_ATTEMPT - have)]
            if new:
                db.execute('INSERT INTO logs (job_id, attempt, "offset", data) VALUES (%s,%s,%s,%s)',
                           (job_id, number, have, new))
            return have + len(new)

    def read_log(self, job_id: str, offset: int = 0) -> bytes:
        rows = self._read('SELECT data FROM logs WHERE job_id=%s ORDER BY attempt, "offset"', (job_id,))
        return b"".join(r["data"] for r in rows)[offset:]
