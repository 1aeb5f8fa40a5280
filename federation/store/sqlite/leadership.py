"""Which replica leads, and the fence that keeps a deposed one from writing (`Store.fence`)."""
from __future__ import annotations

import sqlite3

from federation.store.base import Leadership
from federation.store.sqlite.database import Database


class LeadershipTables(Database):
    def acquire_leadership(self, holder: str, address: str, now: float, ttl_s: float) -> Leadership:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                current = _row(self._db)
                if current is None or current.holder == holder or not current.live(now):
                    continuing = current is not None and current.holder == holder and current.live(now)
                    term = current.term if continuing else (current.term + 1 if current else 1)
                    since = current.since if continuing else now
                    current = Leadership(holder, address, term, since, now + ttl_s)
                    self._db.execute(
                        "INSERT INTO leadership (id, holder, address, term, since, expires_at) VALUES (1,?,?,?,?,?) "
                        "ON CONFLICT(id) DO UPDATE SET holder=excluded.holder, address=excluded.address, "
                        "term=excluded.term, since=excluded.since, expires_at=excluded.expires_at",
                        (holder, address, term, since, now + ttl_s))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return current

    def leadership(self) -> Leadership | None:
        with self._lock:
            return _row(self._db)

    def fence(self, term: int | None) -> None:
        self._term = term


def _row(db: sqlite3.Connection) -> Leadership | None:
    row = db.execute("SELECT holder, address, term, since, expires_at FROM leadership WHERE id=1").fetchone()
    return Leadership(row["holder"], row["address"], row["term"], row["since"], row["expires_at"]) if row else None
