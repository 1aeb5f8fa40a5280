"""SQLite store (WAL mode): the embedded default.

One connection guarded by a lock (database.py); each group of tables has a module whose
class holds its operations, and `SQLiteStore` composes them behind the `Store` interface.
"""
from __future__ import annotations

from federation.store.base import Store
from federation.store.sqlite.attempts import AttemptTables
from federation.store.sqlite.files import FileTables
from federation.store.sqlite.leadership import LeadershipTables
from federation.store.sqlite.retention import RetentionTables
from federation.store.sqlite.sites import SiteTables
from federation.store.sqlite.training import TrainingTables
from federation.store.sqlite.trust import TrustTables

__all__ = ["SQLiteStore"]


class SQLiteStore(RetentionTables, AttemptTables, SiteTables, TrainingTables, FileTables, TrustTables, LeadershipTables,
                  Store):
    """Jobs and their attempts, sites, federated trainings, files and logs, the trust records, the
    leadership, and retention."""
