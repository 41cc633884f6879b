"""The store backends under test, for the conformance suite (``tests/store``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sse_jobs.events import EventDraft
from sse_jobs.records import Event, JobRecord
from sse_jobs.store import Store


@dataclass
class Opened:
    """A store of the backend under test, and every event it handed to its listener."""

    store: Store
    published: list[Event] = field(default_factory=list)


# Opens a store of the backend under test on the test's database; each store is another
# node (``node=``) of it.
OpenStore = Callable[..., Awaitable[Opened]]


async def claim(store: Store, now: float, limit: int,
                draft: Callable[[JobRecord], EventDraft]) -> list[tuple[JobRecord, Event]]:
    """Reserve up to ``limit`` jobs and start each: what a node does to run them."""
    return [await store.start(job.id, now, draft) for job in await store.reserve(now, limit)]
