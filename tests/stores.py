"""The store backends under test, for the conformance suite (``tests/store``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from sse_jobs.records import Event
from sse_jobs.store import SQLiteStore, Store

# Each backend, made on a fresh database (in ``directory``); PostgreSQL joins it with its store.
BACKENDS: dict[str, Callable[[Path], Store]] = {
    "sqlite": lambda directory: SQLiteStore(directory / "store.db"),
}


@dataclass
class Opened:
    """A store of the backend under test, and every event it handed to its listener."""

    store: Store
    published: list[Event] = field(default_factory=list)


OpenStore = Callable[..., Awaitable[Opened]]
