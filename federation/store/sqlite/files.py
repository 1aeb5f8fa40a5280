"""Bytes kept for jobs: their input and output files (artifacts) and their attempts' logs."""
from __future__ import annotations

import hashlib
from collections.abc import Iterable

from federation.errors import Conflict, NotFound
from federation.store.base import MAX_LOG_BYTES_PER_ATTEMPT
from federation.store.sqlite.database import Database


class FileTables(Database):
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
