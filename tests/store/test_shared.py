"""What a store shared by many nodes must do besides (``Store.shared``): each store here is
another node on the same database, all in this process. One global event order that no
late commit can break, claims taken once, leases that fence and expire, cancels heard
everywhere, periodic tasks held by one node at a time."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from sse_jobs import events
from sse_jobs.errors import IllegalTransition
from sse_jobs.records import Change, Event, Fence, JobRecord, NewJob, ProgressUpdate
from sse_jobs.states import JobState
from stores import Opened, OpenStore, claim

ERROR = {"type": "crashed", "message": "gone"}


@pytest.fixture
async def nodes(open_store: OpenStore) -> list[Opened]:
    first = await open_store(node="node-1")
    if not first.store.shared:
        pytest.skip("a store for one node: nothing to share")
    return [first, await open_store(node="node-2"), await open_store(node="node-3")]


def job_id(n: int) -> str:
    return f"01M89{n:021d}"


def new_job(n: int, key: str | None = None) -> NewJob:
    now = time.time()
    return NewJob(id=job_id(n), type="echo", params={}, priority=0, max_attempts=3,
                  timeout=5, created_at=now, first_event=lambda position: events.queued(
                      now, position), idempotency_key=key, request_hash="h")


def processing(job: JobRecord) -> events.EventDraft:
    return events.processing(time.time(), job.attempt)


async def within(seconds: float, predicate: object) -> None:
    async with asyncio.timeout(seconds):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.01)


async def test_a_reader_resuming_anywhere_sees_every_event_once_in_order_under_concurrent_writers(
    nodes: list[Opened],
) -> None:
    """Three nodes write at once (jobs, claims, progress) while a reader resumes the global
    stream from wherever it got to, over and over: ids must come 1, 2, 3, ... to the end,
    with no gap and no repeat, though transactions commit in any order; and every node's
    listener must hear the same sequence."""
    per_node = 40
    done = asyncio.Event()

    async def write(node: int, opened: Opened) -> None:
        for n in range(per_node):
            number = node * 1000 + n
            await opened.store.create_job(new_job(number), 100)
            if n % 3 == 0:
                claimed = await claim(opened.store, time.time(), 2, processing)
                await asyncio.gather(*(opened.store.record_progress(
                    [ProgressUpdate(job.id, job.attempt, p, None, None, time.time())
                     for p in (10.0, 20.0)]) for job, _ in claimed))

    seen: list[Event] = []

    async def read(reader: Opened) -> None:
        while True:
            finished = done.is_set()
            page = await reader.store.all_events(seen[-1].id if seen else 0, 7, None)
            seen.extend(page)
            if finished and not page:
                return
            await asyncio.sleep(0)

    reading = asyncio.create_task(read(nodes[0]))
    await asyncio.gather(*(write(node, opened) for node, opened in enumerate(nodes)))
    done.set()
    await asyncio.wait_for(reading, 30)
    total = await nodes[0].store.last_event_id()
    assert [e.id for e in seen] == list(range(1, total + 1))
    for opened in nodes:
        await within(10, lambda o=opened: len(o.published) == total)
        assert [e.id for e in opened.published] == list(range(1, total + 1))
        assert opened.published == seen
    by_job: dict[str, list[int]] = {}
    for event in seen:
        by_job.setdefault(event.job_id, []).append(event.seq)
    assert all(seqs == list(range(1, len(seqs) + 1)) for seqs in by_job.values())


async def test_nodes_claiming_at_once_take_each_job_exactly_once(nodes: list[Opened]) -> None:
    for n in range(60):
        await nodes[0].store.create_job(new_job(n), 100)

    async def claim_all(opened: Opened) -> list[str]:
        taken = []
        while claimed := await claim(opened.store, time.time(), 3, processing):
            taken += [job.id for job, _ in claimed]
        return taken

    taken = await asyncio.gather(*(claim_all(opened) for opened in nodes))
    everything = [job for node in taken for job in node]
    assert sorted(everything) == sorted(job_id(n) for n in range(60))
    assert all(taken), "every node got some work"


async def test_an_idempotency_key_makes_one_job_across_nodes(nodes: list[Opened]) -> None:
    results = await asyncio.gather(*(opened.store.create_job(new_job(n, key="same"), 100)
                                     for n, opened in enumerate(nodes)))
    assert sorted(created for _, created in results) == [False, False, True]
    assert len({record.id for record, _ in results}) == 1


async def test_a_lease_fences_the_owners_writes_once_it_expires_and_another_node_ends_it(
    open_store: OpenStore,
) -> None:
    owner = await open_store(node="owner", lease=0.5)
    if not owner.store.shared:
        pytest.skip("a store for one node has no leases")
    other = await open_store(node="other", lease=0.5)
    await owner.store.create_job(new_job(1), 100)
    [(job, _)] = await claim(owner.store, time.time(), 1, processing)
    assert await other.store.expired_attempts(10) == []
    assert await other.store.record_progress(
        [ProgressUpdate(job.id, 1, 50.0, None, None, time.time())]) == []  # not its lease
    assert len(await owner.store.record_progress(
        [ProgressUpdate(job.id, 1, 50.0, None, None, time.time())])) == 1
    with pytest.raises(IllegalTransition):  # the lease still runs: not another's to end
        await other.store.record(job.id, Change(events.failed(time.time(), ERROR),
                                                fence=Fence(1, expired=True), error=ERROR))
    await asyncio.sleep(0.6)  # the lease runs out: what is under test is the clock
    [expired] = await other.store.expired_attempts(10)
    assert expired.id == job.id
    assert await owner.store.renew_leases([job.id]) == {}  # lost: stop the attempt
    assert await owner.store.record_progress(
        [ProgressUpdate(job.id, 1, 60.0, None, None, time.time())]) == []
    retried, event = await other.store.record(job.id, Change(
        events.retrying(time.time(), 2, time.time(), ERROR), fence=Fence(1, expired=True),
        error=ERROR, not_before=time.time()))
    assert (retried.state, event.seq) == (JobState.QUEUED, 4)
    [(again, _)] = await claim(other.store, time.time(), 1, processing)
    assert again.attempt == 2
    with pytest.raises(IllegalTransition, match="no longer in attempt 1"):  # a late outcome
        await owner.store.record(job.id, Change(events.completed(time.time(), job.id, b"1"),
                                                fence=Fence(1), result=b"1"))
    done, _ = await other.store.record(job.id, Change(
        events.completed(time.time(), job.id, b"2"), fence=Fence(2), result=b"2"))
    assert (done.state, done.result) == (JobState.COMPLETED, b"2")


async def test_renewal_keeps_a_lease_and_reports_a_cancel_request(
    nodes: list[Opened],
) -> None:
    owner, api = nodes[0], nodes[1]
    await api.store.create_job(new_job(1), 100)
    [(job, _)] = await claim(owner.store, time.time(), 1, processing)
    assert await owner.store.renew_leases([job.id]) == {job.id: False}
    assert await api.store.renew_leases([job.id]) == {}  # not its lease
    heard: list[str] = []
    owner.store.on_cancel(heard.append)
    marked = await api.store.request_cancel(job.id)
    assert marked is not None
    assert marked.cancel_requested
    await within(10, lambda: heard == [job.id])
    assert await owner.store.renew_leases([job.id]) == {job.id: True}


async def test_one_node_at_a_time_holds_a_periodic_task(nodes: list[Opened]) -> None:
    first, second = nodes[0].store, nodes[1].store
    assert await first.hold("sweep", 0.3)
    assert not await second.hold("sweep", 0.3)
    assert await first.hold("sweep", 0.3)  # renewed by its holder
    assert await second.hold("other task", 0.3)
    await asyncio.sleep(0.4)  # the hold runs out: what is under test is the clock
    assert await second.hold("sweep", 0.3)
    assert not await first.hold("sweep", 0.3)


async def test_a_token_bucket_is_shared_by_every_node(nodes: list[Opened]) -> None:
    waits = [await opened.store.take_token("alice", 0.1, 2) for opened in nodes]
    assert waits[:2] == [0.0, 0.0]
    assert waits[2] > 5  # the third node finds the bucket the others emptied


async def test_nodes_reserving_a_limited_type_at_once_never_exceed_its_limit(
    nodes: list[Opened],
) -> None:
    """Every node asks for many jobs of a type limited to 2, at the same moment, again and
    again: together they hold 2, never more; the unlimited type is shared out meanwhile."""

    for n in range(30):
        kind = "limited" if n % 2 else "echo"
        await nodes[0].store.create_job(dataclasses.replace(new_job(n), type=kind), 100)
    held: list[JobRecord] = []
    for _ in range(5):
        rounds = await asyncio.gather(*(opened.store.reserve(time.time(), 10, {"limited": 2})
                                        for opened in nodes))
        held += [job for node in rounds for job in node]
    assert len([job for job in held if job.type == "limited"]) == 2
    assert len([job for job in held if job.type == "echo"]) == 15
