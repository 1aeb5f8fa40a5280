"""PostgreSQL store (psycopg 3): for several federation replicas sharing one database.

A small pool of connections (database.py); each group of tables has a module whose class holds its
operations, as in the SQLite store, and `PostgresStore` composes them behind the `Store` interface.
Rows decode with the SQLite store's helpers (federation.store.sqlite.rows).
"""
from __future__ import annotations

from federation.store.base import Store
from federation.store.postgres.attempts import AttemptTables
from federation.store.postgres.files import FileTables
from federation.store.postgres.leadership import LeadershipTables
from federation.store.postgres.retention import RetentionTables
from federation.store.postgres.sites import SiteTables
from federation.store.postgres.training import TrainingTables
from federation.store.postgres.trust import TrustTables

__all__ = ["PostgresStore"]


class PostgresStore(RetentionTables, AttemptTables, SiteTables, TrainingTables, FileTables, TrustTables,
                    LeadershipTables, Store):
    """Jobs and their attempts, sites, federated trainings, files and logs, the trust records, the
    leadership, and retention."""
