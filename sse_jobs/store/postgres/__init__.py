"""The PostgreSQL store: many API and worker nodes on one database (contract section 9)."""

from sse_jobs.store.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
