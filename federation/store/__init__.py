"""Durable state of the federation, behind one interface."""
from federation.store.base import Leadership, Store, SubmitRequest
from federation.store.sqlite import SQLiteStore

__all__ = ["Leadership", "SQLiteStore", "Store", "SubmitRequest", "open_store"]


def open_store(url: str) -> Store:
    """`sqlite:///path/to.db`, a plain path, or `:memory:`."""
    path = url.removeprefix("sqlite://")
    return SQLiteStore(path)
