"""Re-runs, delayed jobs, tags and per-type concurrency limits, on every store backend:
what is stored comes back, a delayed job is not reserved before its time, the listing
filters by tags, and a limited type never has more jobs reserved or running than its
limit while the other types keep being reserved."""

from __future__ import annotations

import dataclasses
import time

import pytest
from test_conformance import ERROR, change, new_job, processing

from sse_jobs import events
from sse_jobs.records import NewJob
from sse_jobs.states import JobState
from stores import Opened

IDS = [f"01M89000000000000000000{n:03d}" for n in range(20)]


def job(n: int, **fields: object) -> NewJob:
    return dataclasses.replace(new_job(IDS[n]), **fields)  # type: ignore[arg-type]


async def test_a_delayed_job_is_reserved_only_once_due_and_a_past_run_at_is_at_once(
    opened: Opened,
) -> None:
    store, now = opened.store, time.time()
    later, _ = await store.create_job(job(0, run_at=now + 3600), 10)
    past, _ = await store.create_job(job(1, run_at=now - 3600), 10)
    assert (later.run_at, later.not_before, later.state) == (
        now + 3600, now + 3600, JobState.QUEUED)
    assert past.run_at == now - 3600
    assert past.not_before == past.created_at  # a time past: as soon as a worker is free
    assert [r.id for r in await store.reserve(time.time(), 5)] == [IDS[1]]
    assert await store.next_run_at() == pytest.approx(now + 3600)
    assert [r.id for r in await store.reserve(now + 3601, 5)] == [IDS[0]]


async def test_rerun_of_and_tags_are_stored_and_read_back(opened: Opened) -> None:
    store = opened.store
    await store.create_job(job(0, tags=("nightly", "team:a")), 10)
    rerun, _ = await store.create_job(job(1, rerun_of=IDS[0]), 10)
    assert (rerun.rerun_of, rerun.tags, rerun.run_at) == (IDS[0], (), None)
    stored = await store.get_job(IDS[0])
    assert stored is not None
    assert (stored.tags, stored.rerun_of) == (("nightly", "team:a"), None)


async def test_the_listing_keeps_the_jobs_that_have_every_tag_asked_for(opened: Opened) -> None:
    store = opened.store
    for n, tags in enumerate([("a",), ("a", "b"), ("b",), ()]):
        await store.create_job(job(n, tags=tags), 10)

    async def tagged(*tags: str) -> list[str]:
        listed = await store.list_jobs(principal=None, states=[], types=[], before=None,
                                       limit=10, tags=tags)
        return [r.id for r in listed]

    assert await tagged("a") == [IDS[1], IDS[0]]
    assert await tagged("a", "b") == [IDS[1]]
    assert await tagged("a", "a") == [IDS[1], IDS[0]]  # a tag named twice is one tag
    assert await tagged("c") == []
    assert len(await tagged()) == 4
    [(started, _)] = [await store.start(r.id, time.time(), processing)
                      for r in await store.reserve(time.time(), 1)]
    await store.record(started.id, change(events.failed(time.time(), ERROR), error=ERROR))
    assert await store.delete_job(started.id)
    assert started.id not in await tagged("a")


async def test_a_limited_type_gets_only_its_free_slots_and_the_others_keep_flowing(
    opened: Opened,
) -> None:
    store = opened.store
    for n in range(4):  # the limited type first, and ahead in priority
        await store.create_job(job(n, type="slow", priority=5), 10)
    for n in range(4, 7):
        await store.create_job(job(n, type="fast"), 10)
    limits = {"slow": 2}
    first = await store.reserve(time.time(), 3, limits)
    assert [(r.id, r.type) for r in first] == [(IDS[0], "slow"), (IDS[1], "slow"),
                                               (IDS[4], "fast")]
    # Both slots are taken (reserved, then running): only the other type is reserved.
    await store.start(IDS[0], time.time(), processing)
    assert [r.id for r in await store.reserve(time.time(), 5, limits)] == [IDS[5], IDS[6]]
    assert await store.next_run_at(limits) is None  # slow waits for a slot, not for time
    await store.record(IDS[0], change(events.completed(time.time(), IDS[0], b"1")))
    assert await store.next_run_at(limits) is not None
    assert [r.id for r in await store.reserve(time.time(), 5, limits)] == [IDS[2]]
    assert [r.id for r in await store.reserve(time.time(), 5, {"slow": 3})] == [IDS[3]]
