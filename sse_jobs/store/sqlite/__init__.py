"""The SQLite store: the embedded default, one server per database file."""

from sse_jobs.store.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore"]
