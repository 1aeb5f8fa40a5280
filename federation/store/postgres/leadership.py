"""Which replica leads, and the fence that keeps a deposed one from writing (`Store.fence`)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from federation.store.base import Leadership
from federation.store.postgres.database import Conn, Database
from federation.store.postgres.schema import LEADERSHIP_LOCK


class LeadershipTables(Database):
    def acquire_leadership(self, holder: str, address: str, now: float, ttl_s: float) -> Leadership:
        # Not fenced: a plain transaction. The advisory lock makes replicas racing for the first lease
        # take turns (there is no row yet to lock); the UPDATE waits for fenced writers (FOR SHARE).
        with self._pool.connection() as db, db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (LEADERSHIP_LOCK,))
            current = _row(db)
            if current is not None and current.holder != holder and current.live(now):
                return current   # held by another
            if current is not None and current.holder == holder and current.live(now):
                current = replace(current, address=address, expires_at=now + ttl_s)   # renewed: the same term
            else:
                current = Leadership(holder, address, current.term + 1 if current else 1, now, now + ttl_s)
            db.execute(
                "INSERT INTO leadership (id, holder, address, term, since, expires_at) VALUES (1,%s,%s,%s,%s,%s)"
                " ON CONFLICT (id) DO UPDATE SET holder=excluded.holder, address=excluded.address,"
                " term=excluded.term, since=excluded.since, expires_at=excluded.expires_at",
                (current.holder, current.address, current.term, current.since, current.expires_at))
        return current

    def leadership(self) -> Leadership | None:
        with self._pool.connection() as db:
            return _row(db)

    def newest_heartbeat(self) -> float:
        (row,) = self._read("SELECT MAX(last_heartbeat) AS newest FROM sites WHERE NOT autonomous")
        return float(row["newest"] or 0.0)

    def clock(self) -> float:
        (row,) = self._read("SELECT extract(epoch from clock_timestamp()) AS now")
        return float(row["now"])

    def fence(self, term: int | None, clock: Callable[[], float] | None = None) -> None:
        # Nothing cached to drop: sites are read afresh, and a stored job spec never changes.
        # Without a clock, the lease is judged by the database's, in the same statement.
        self._term, self._clock = term, clock


def _row(db: Conn) -> Leadership | None:
    row = db.execute("SELECT holder, address, term, since, expires_at FROM leadership WHERE id=1").fetchone()
    return Leadership(row["holder"], row["address"], row["term"], row["since"], row["expires_at"]) if row else None
