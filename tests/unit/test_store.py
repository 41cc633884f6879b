"""The SQLite store on a real file: transitions guarded, sequences contiguous."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import orjson
import pytest

from sse_jobs.errors import IllegalTransition, NotFound
from sse_jobs.records import Change, Event, NewJob, ProgressUpdate
from sse_jobs.states import EventName, JobState
from sse_jobs.store import SQLiteStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[tuple[SQLiteStore, list[Event]]]:
    published: list[Event] = []
    sqlite = SQLiteStore(tmp_path / "store.db")
    await sqlite.open(published.extend)
    yield sqlite, published
    await sqlite.close()


def new_job(job_id: str) -> NewJob:
    return NewJob(id=job_id, type="echo", params={}, priority=0, max_attempts=1, timeout=5,
                  created_at=time.time())


async def test_illegal_transitions_are_refused_and_change_nothing(
    store: tuple[SQLiteStore, list[Event]],
) -> None:
    sqlite, published = store
    await sqlite.create_job(new_job("01M8900000000000000000000A"))
    job_id = "01M8900000000000000000000A"
    with pytest.raises(IllegalTransition, match="queued"):
        await sqlite.record(job_id, Change(EventName.COMPLETED, time.time()))
    [(claimed, _event)] = await sqlite.claim(time.time(), 1)
    assert claimed.state is JobState.PROCESSING
    with pytest.raises(IllegalTransition, match="processing"):  # cancel only if still queued
        await sqlite.record(job_id, Change(EventName.CANCELLED, time.time(),
                                           only_from=frozenset({JobState.QUEUED})))
    done, _ = await sqlite.record(job_id, Change(EventName.COMPLETED, time.time()))
    for event in (EventName.RETRYING, EventName.COMPLETED, EventName.FAILED,
                  EventName.CANCELLED):  # terminal: no way out
        with pytest.raises(IllegalTransition):
            await sqlite.record(job_id, Change(event, time.time()))
    with pytest.raises(NotFound):
        await sqlite.record("01M8900000000000000000000Z", Change(EventName.FAILED, time.time()))
    assert done.last_event_id == 3
    assert [(e.seq, e.name) for e in published] == [
        (1, EventName.QUEUED), (2, EventName.PROCESSING), (3, EventName.COMPLETED)]
    assert [e.id for e in published] == [1, 2, 3]


async def test_progress_is_grouped_with_contiguous_sequences_and_stale_attempts_dropped(
    store: tuple[SQLiteStore, list[Event]],
) -> None:
    sqlite, published = store
    for job_id in ("01M8900000000000000000000A", "01M8900000000000000000000B"):
        await sqlite.create_job(new_job(job_id))
    await sqlite.claim(time.time(), 2)
    updates = [ProgressUpdate(job_id, 1, float(p), f"{p}", None, time.time())
               for p in range(5) for job_id in ("01M8900000000000000000000A",
                                                "01M8900000000000000000000B")]
    updates.append(ProgressUpdate("01M8900000000000000000000A", 7, 99.0, "stale", None, 0))
    stored = await sqlite.record_progress(updates)
    assert len(stored) == 10
    for job_id in ("01M8900000000000000000000A", "01M8900000000000000000000B"):
        seqs = [e.seq for e in published if e.job_id == job_id]
        assert seqs == list(range(1, 8))
        record = await sqlite.get_job(job_id)
        assert record is not None
        assert (record.progress, record.message, record.last_event_id) == (4.0, "4", 7)
    assert [e.id for e in published] == list(range(1, len(published) + 1))
    replay = await sqlite.job_events("01M8900000000000000000000A", 3, 100)
    assert [e.seq for e in replay] == [4, 5, 6, 7]


async def test_a_listener_that_fails_loses_no_write_and_stops_no_later_one(
    tmp_path: Path,
) -> None:
    heard: list[Event] = []

    def listener(events: Sequence[Event]) -> None:
        heard.extend(events)
        if len(heard) == 1:
            raise RuntimeError("a broken subscriber")

    sqlite = SQLiteStore(tmp_path / "store.db")
    await sqlite.open(listener)
    try:
        first, created = await sqlite.create_job(new_job("01M8900000000000000000000A"))
        second, _ = await sqlite.create_job(new_job("01M8900000000000000000000B"))
        assert created
        assert [e.job_id for e in heard] == [first.id, second.id]
        assert [e.seq for e in await sqlite.job_events(first.id, 0, 10)] == [1]
    finally:
        await sqlite.close()


async def test_a_large_progress_batch_is_stored_whole_and_in_order(
    store: tuple[SQLiteStore, list[Event]],
) -> None:
    """237 events: inserted as two statements of 100 rows, three of 10, seven of 1."""
    sqlite, published = store
    job_id = "01M8900000000000000000000A"
    await sqlite.create_job(new_job(job_id))
    await sqlite.claim(time.time(), 1)
    updates = [ProgressUpdate(job_id, 1, p / 3, f"{p}", float(p), time.time())
               for p in range(237)]
    stored = await sqlite.record_progress(updates)
    assert [e.seq for e in stored] == list(range(3, 240))
    replay = await sqlite.job_events(job_id, 2, 1000)
    assert replay == stored
    assert [orjson.loads(e.data)["message"] for e in replay] == [f"{p}" for p in range(237)]
    assert [e.id for e in published] == list(range(1, 240))
