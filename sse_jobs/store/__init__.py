"""Job storage: one small interface, one implementation per database."""

from sse_jobs.store.base import Store
from sse_jobs.store.sqlite import SQLiteStore

__all__ = ["SQLiteStore", "Store"]
