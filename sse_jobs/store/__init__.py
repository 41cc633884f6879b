"""Job storage: one small interface, one implementation per database."""

from sse_jobs.config import Settings
from sse_jobs.errors import Unavailable
from sse_jobs.store.base import Store
from sse_jobs.store.sqlite import SQLiteStore

__all__ = ["SQLiteStore", "Store", "store_for"]


def store_for(settings: Settings, node: str) -> Store:
    """The store the settings ask for: the one place that picks a backend. ``node``
    names this process to the others sharing a database (it owns its attempts' leases)."""
    url = settings.postgres_url
    if url is None:
        return SQLiteStore(settings.sqlite_path)
    try:  # the driver is an extra: only a PostgreSQL deployment needs it
        from sse_jobs.store.postgres import PostgresStore
    except ImportError as exc:
        raise Unavailable(f"--db is a PostgreSQL URL, but its driver is missing ({exc}); "
                          "install it with: pip install 'sse-jobs[postgres]'") from None
    return PostgresStore(url, node=node, lease_timeout=settings.lease_timeout)
