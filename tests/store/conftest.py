"""The store conformance suite runs against every backend: each test gets a factory of
opened stores of one backend, listening to their commits."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from sse_jobs.records import Event
from sse_jobs.store import SQLiteStore, Store
from sse_jobs.store.postgres import PostgresStore
from stores import BACKENDS, Opened, OpenStore


@pytest.fixture(params=BACKENDS)
async def open_store(request: pytest.FixtureRequest,
                     tmp_path: Path) -> AsyncIterator[OpenStore]:
    """Opens stores of one backend, all on the same database (a second one reopens it)."""
    opened: list[Store] = []
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None

    def backend(node: str, lease: float) -> Store:
        if url is None:
            return SQLiteStore(tmp_path / "store.db")
        return PostgresStore(url, node=node, lease_timeout=lease)

    async def make(listener: Callable[[list[Event]], None] | None = None, *,
                   node: str = "node-1", lease: float = LEASE) -> Opened:
        result = Opened(backend(node, lease))
        await result.store.open(listener or result.published.extend)
        opened.append(result.store)
        return result

    yield make
    for store in opened:
        await store.close()


LEASE = 30.0


@pytest.fixture
async def opened(open_store: OpenStore) -> Opened:
    return await open_store()
