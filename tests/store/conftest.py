"""The store conformance suite runs against every backend: each test gets a factory of
opened stores of one backend, listening to their commits."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from sse_jobs.records import Event
from sse_jobs.store import Store
from stores import BACKENDS, Opened, OpenStore


@pytest.fixture(params=sorted(BACKENDS))
async def open_store(request: pytest.FixtureRequest,
                     tmp_path: Path) -> AsyncIterator[OpenStore]:
    """Opens stores of one backend, all on the same database (a second one reopens it)."""
    opened: list[Store] = []
    backend = BACKENDS[request.param]

    async def make(listener: Callable[[list[Event]], None] | None = None) -> Opened:
        result = Opened(backend(tmp_path))
        await result.store.open(listener or result.published.extend)
        opened.append(result.store)
        return result

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
async def opened(open_store: OpenStore) -> Opened:
    return await open_store()
