"""Which replica leads, and the fence that keeps a deposed one from writing (`Store.fence`)."""
from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

from federation.store.base import Leadership
from federation.store.sqlite.database import Database


class LeadershipTables(Database):
    def acquire_leadership(self, holder: str, address: str, now: float, ttl_s: float) -> Leadership:
        with self._lease_lock:
            db = self._lease_db
            db.execute("BEGIN IMMEDIATE")
            try:
                current = _row(db)
                if current is None or current.holder == holder or not current.live(now):
                    if current is not None and current.holder == holder and current.live(now):
                        term, since = current.term, current.since
                    else:
                        term, since = (current.term + 1 if current else 1), now
                    current = Leadership(holder, address, term, since, now + ttl_s)
                    db.execute(
                        "INSERT INTO leadership (id, holder, address, term, since, expires_at) VALUES (1,?,?,?,?,?) "
                        "ON CONFLICT(id) DO UPDATE SET holder=excluded.holder, address=excluded.address, "
                        "term=excluded.term, since=excluded.since, expires_at=excluded.expires_at",
                        (holder, address, term, since, now + ttl_s))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        return current

    def leadership(self) -> Leadership | None:
        with self._lock:
            return _row(self._db)

    def newest_heartbeat(self) -> float:
        with self._lock:
            row = self._db.execute("SELECT MAX(last_heartbeat) AS newest FROM sites WHERE autonomous=0").fetchone()
        return float(row["newest"] or 0.0)

    def fence(self, term: int | None, clock: Callable[[], float] | None = None) -> None:
        self._term, self._clock = term, clock or time.time
        self._sites = None   # another writer led before this term: what this process cached may be stale


def _row(db: sqlite3.Connection) -> Leadership | None:
    row = db.execute("SELECT holder, address, term, since, expires_at FROM leadership WHERE id=1").fetchone()
    return Leadership(row["holder"], row["address"], row["term"], row["since"], row["expires_at"]) if row else None
