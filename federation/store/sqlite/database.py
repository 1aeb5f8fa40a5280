"""One SQLite connection guarded by a lock, and its transactions.

The federation is the only writer and every operation is a short transaction, so
this is simpler and faster than a pool. Every write goes through `_tx`.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from federation.errors import Deposed
from federation.sites import SiteRecord
from federation.store.sqlite.rows import SpecCache
from federation.store.sqlite.schema import create_or_upgrade


class Database:
    def __init__(self, path: str | Path) -> None:
        path = str(path)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            _owner_only(path)
        # Replicas of one federation share the file: a writer waits its turn rather than failing.
        self._db = _connect(path)
        self._lock = threading.RLock()
        self._specs = SpecCache()
        self._sites: list[SiteRecord] | None = None   # this process is the store's only writer
        self._term: int | None = None                  # see Store.fence
        self._clock: Callable[[], float] = time.time
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        create_or_upgrade(self._db)
        # The leader renews its lease on a connection of its own: never queued behind the main
        # lock, which a big read (every pending job, at scale) can hold for seconds.
        self._lease_db = self._db if path == ":memory:" else _connect(path)
        self._lease_lock = self._lock if path == ":memory:" else threading.Lock()
        self._readers = None if path == ":memory:" else _Readers(path)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if self._term is not None:
                    self._check_term(self._db)
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _check_term(self, db: sqlite3.Connection) -> None:
        row = db.execute("SELECT term, expires_at FROM leadership WHERE id=1").fetchone()
        if row is None or row["term"] != self._term:
            raise Deposed(f"this replica led in term {self._term}, and another term has begun: it may not write")
        if row["expires_at"] <= self._clock():
            raise Deposed(f"this replica's lease on term {self._term} ran out: it may not write until it leads again")

    @contextmanager
    def _reading(self, statements: int = 2) -> Iterator[sqlite3.Connection]:
        """A connection to read committed rows from: one of the readers, else (in memory) the writer's.
        A read of more than one statement reads them all from one snapshot."""
        if self._readers is None:
            with self._lock:
                yield self._db
            return
        with self._readers.connection() as db:
            if statements == 1:
                yield db
                return
            db.execute("BEGIN")
            try:
                yield db
            finally:
                db.execute("COMMIT")

    def _read(self, sql: str, args: tuple) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def close(self) -> None:
        if self._readers is not None:
            self._readers.close()
        with self._lease_lock:
            self._lease_db.close()
        with self._lock:
            self._db.close()

    def get_meta(self, key: str, default: str = "") -> str:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row["value"] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO meta (key, value) VALUES (?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                       (key, value))


class _Readers:
    """Read-only connections to the store's file, reused; as many as readers at once."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._free: list[sqlite3.Connection] = []
        self._open: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._free.pop() if self._free else None
        if db is None:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA query_only=ON")
            with self._lock:
                self._open.append(db)
        try:
            yield db
        finally:
            with self._lock:
                self._free.append(db)

    def close(self) -> None:
        with self._lock:
            for db in self._open:
                db.close()
            self._open.clear()
            self._free.clear()


def _connect(path: str) -> sqlite3.Connection:
    # Replicas of one federation share the file: a writer waits its turn rather than failing.
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
    db.row_factory = sqlite3.Row
    return db


def _owner_only(path: str) -> None:
    """The store holds every spec, log and audit record: readable by its owner only. SQLite makes
    its -wal and -shm files with the database file's mode, so they follow."""
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    os.chmod(path, 0o600)
