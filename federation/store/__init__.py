"""Durable state of the federation, behind one interface."""
from federation.store.base import Leadership, NewSubmission, Store, SubmitRequest
from federation.store.sqlite import SQLiteStore

__all__ = ["Leadership", "NewSubmission", "SQLiteStore", "Store", "SubmitRequest", "open_store"]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_store(url: str) -> Store:
    """`postgresql://...` (or `postgres://...`): a PostgreSQL database, shared by replicas;
    `sqlite:///path/to.db`, a plain path, or `:memory:`: a SQLite file."""
    if url.startswith(POSTGRES_SCHEMES):
        from federation.store.postgres import PostgresStore  # psycopg only where it is used
        return PostgresStore(url)
    path = url.removeprefix("sqlite://")
    return SQLiteStore(path)
