"""A small pool of PostgreSQL connections, and its transactions.

Several replicas of the federation (processes) and their threads write at once, so every write
goes through `_tx`: one transaction, READ COMMITTED, whose statements take the locks that make it
serialize with the others where it must (the job row FOR UPDATE, an advisory lock for the audit
chain, a log and the leadership, ON CONFLICT for inserts that may race). A store bound to a term
(`fence`) first reads the leadership row FOR SHARE, so a new term cannot begin until it commits,
and it cannot write under a term that has ended or a lease that has run out. Reads of more than one statement take
one snapshot (`_snapshot`).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from federation.errors import Deposed, Unavailable
from federation.store.postgres.schema import create
from federation.store.sqlite.rows import SpecCache

# Rows are dicts (dict_row). Typed Any so that the SQLite store's row decoders (federation.store.sqlite.rows),
# which read rows by column name and are annotated with sqlite3.Row, take them as they are.
Conn = psycopg.Connection[Any]
Args = Sequence[Any]
# pg_advisory_xact_lock(int, int) keys: a space apart from the one-bigint keys in schema.py.
LOG_LOCKS = 0x6665_6401


class Database:
    def __init__(self, url: str, pool_size: int = 4, connect_timeout_s: float = 10.0) -> None:
        self._specs = SpecCache()
        self._term: int | None = None                  # see Store.fence
        self._clock: Callable[[], float] | None = None   # None: the database's own (see fence)
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(connect_timeout_s))) as conn:
                create(conn)
        except psycopg.OperationalError as e:
            raise Unavailable(f"store {redact(url)}: cannot connect to PostgreSQL: {str(e).strip()}") from None
        self._pool = ConnectionPool(url, min_size=1, max_size=pool_size, open=False, name="fedctl-store",
                                    kwargs={"autocommit": True, "row_factory": dict_row}, timeout=30.0)
        self._pool.open(wait=True, timeout=connect_timeout_s)

    @contextmanager
    def _tx(self) -> Iterator[Conn]:
        try:
            with self._pool.connection() as conn, conn.transaction():
                if self._term is not None:
                    self._check_term(conn)
                yield conn
        except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as e:
            # Rolled back whole: the caller may try again (submissions are idempotent by request id).
            raise Unavailable(f"the store was busy ({type(e).__name__}); nothing was written: retry") from None

    def _check_term(self, conn: Conn) -> None:
        row = conn.execute("SELECT term, expires_at, extract(epoch from clock_timestamp()) AS now"
                           " FROM leadership WHERE id=1 FOR SHARE").fetchone()
        if row is None or row["term"] != self._term:
            raise Deposed(f"this replica led in term {self._term}, and another term has begun: it may not write")
        if row["expires_at"] <= (self._clock() if self._clock else float(row["now"])):
            raise Deposed(f"this replica's lease on term {self._term} ran out: it may not write until it leads again")

    @contextmanager
    def _snapshot(self) -> Iterator[Conn]:
        """Reads of several statements, all of one committed state."""
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield conn

    def _read(self, sql: str, args: Args = ()) -> list[Any]:
        with self._pool.connection() as conn:
            return conn.execute(sql, args).fetchall()

    def close(self) -> None:
        self._pool.close()

    def get_meta(self, key: str, default: str = "") -> str:
        rows = self._read("SELECT value FROM meta WHERE key=%s", (key,))
        return rows[0]["value"] if rows else default

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO meta (key, value) VALUES (%s,%s)"
                       " ON CONFLICT (key) DO UPDATE SET value=excluded.value", (key, value))


def lock_log(db: Conn, job_id: str, number: int) -> None:
    """Appends to one attempt's log take turns until the transaction ends."""
    db.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOG_LOCKS, f"{job_id}/{number}"))


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)
