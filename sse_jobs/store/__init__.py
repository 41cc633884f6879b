"""Job storage: one small interface, one implementation per database."""

from sse_jobs.config import Settings
from sse_jobs.store.base import Store
from sse_jobs.store.sqlite import SQLiteStore

__all__ = ["SQLiteStore", "Store", "store_for"]


def store_for(settings: Settings) -> Store:
    """The store the settings ask for: the one place that picks a backend, so a new one
    (PostgreSQL for several nodes) slots in here and not in the web layer."""
    return SQLiteStore(settings.db)
