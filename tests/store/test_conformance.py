"""What every store must do (``sse_jobs.store.base.Store``), on a real database of each
backend: transitions guarded, sequences contiguous, events encoded from their drafts and
published after commit in commit order, deliveries stored with their events, reads
filtered and paged, and everything still there after reopening."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import orjson
import pytest

from sse_jobs import events
from sse_jobs.errors import IllegalTransition, NotFound, Unavailable
from sse_jobs.events import EventDraft, event_data
from sse_jobs.records import Change, DeliveryAttempt, Event, JobRecord, NewJob, ProgressUpdate
from sse_jobs.states import EventName, JobState
from stores import Opened, OpenStore, claim

A, B, C = "01M8900000000000000000000A", "01M8900000000000000000000B", "01M8900000000000000000000C"
ERROR = {"type": "exception", "message": "boom"}


def new_job(job_id: str, *, priority: int = 0, principal: str = "", key: str | None = None,
            webhook: str | None = None, created_at: float | None = None) -> NewJob:
    at = time.time() if created_at is None else created_at
    return NewJob(id=job_id, type="echo", params={"n": 1}, priority=priority, max_attempts=3,
                  timeout=5, created_at=at,
                  first_event=lambda position: events.queued(at, position)._replace(
                      webhook=webhook),
                  idempotency_key=key, request_hash="h", principal=principal,
                  callback_url=webhook)


def processing(job: JobRecord) -> EventDraft:
    return events.processing(time.time(), job.attempt)


def change(draft: EventDraft, **columns: object) -> Change:
    return Change(draft, **columns)  # type: ignore[arg-type]


async def started(opened: Opened, *job_ids: str) -> list[JobRecord]:
    for job_id in job_ids:
        await opened.store.create_job(new_job(job_id), 100)
    claimed = await claim(opened.store, time.time(), len(job_ids), processing)
    return [record for record, _ in claimed]


async def test_illegal_transitions_are_refused_and_change_nothing(opened: Opened) -> None:
    sqlite, published = opened.store, opened.published
    await sqlite.create_job(new_job(A), 100)
    job_id = A
    with pytest.raises(IllegalTransition, match="queued"):
        await sqlite.record(job_id, change(events.completed(time.time(), A, b"1")))
    [(claimed, _event)] = await claim(sqlite, time.time(), 1, processing)
    assert claimed.state is JobState.PROCESSING
    with pytest.raises(IllegalTransition, match="processing"):  # cancel only if still queued
        await sqlite.record(job_id, change(events.cancelled(time.time(), ERROR),
                                           only_from=frozenset({JobState.QUEUED})))
    done, _ = await sqlite.record(job_id, change(events.completed(time.time(), A, b"1")))
    for draft in (events.retrying(time.time(), 2, time.time(), ERROR),
                  events.completed(time.time(), A, b"1"), events.failed(time.time(), ERROR),
                  events.cancelled(time.time(), ERROR)):  # terminal: no way out
        with pytest.raises(IllegalTransition):
            await sqlite.record(job_id, change(draft))
    with pytest.raises(NotFound):
        await sqlite.record(C, change(events.failed(time.time(), ERROR)))
    assert done.last_event_id == 3
    assert [(e.seq, e.name) for e in published] == [
        (1, EventName.QUEUED), (2, EventName.PROCESSING), (3, EventName.COMPLETED)]
    assert [e.id for e in published] == [1, 2, 3]


async def test_progress_is_grouped_with_contiguous_sequences_and_stale_attempts_dropped(
    opened: Opened,
) -> None:
    sqlite, published = opened.store, opened.published
    await started(opened, A, B)
    updates = [ProgressUpdate(job_id, 1, float(p), f"{p}", None, time.time())
               for p in range(5) for job_id in (A, B)]
    updates.append(ProgressUpdate(A, 7, 99.0, "stale", None, 0))
    stored = await sqlite.record_progress(updates)
    assert len(stored) == 10
    for job_id in (A, B):
        seqs = [e.seq for e in published if e.job_id == job_id]
        assert seqs == list(range(1, 8))
        record = await sqlite.get_job(job_id)
        assert record is not None
        assert (record.progress, record.message, record.last_event_id) == (4.0, "4", 7)
    assert [e.id for e in published] == list(range(1, len(published) + 1))
    replay = await sqlite.job_events(A, 3, 100)
    assert [e.seq for e in replay] == [4, 5, 6, 7]


async def test_a_listener_that_fails_loses_no_write_and_stops_no_later_one(
    open_store: OpenStore,
) -> None:
    heard: list[Event] = []

    def listener(events: Sequence[Event]) -> None:
        heard.extend(events)
        if len(heard) == 1:
            raise RuntimeError("a broken subscriber")

    sqlite = (await open_store(listener)).store
    first, created = await sqlite.create_job(new_job(A), 100)
    second, _ = await sqlite.create_job(new_job(B), 100)
    assert created
    assert [e.job_id for e in heard] == [first.id, second.id]
    assert [e.seq for e in await sqlite.job_events(first.id, 0, 10)] == [1]


async def test_a_large_progress_batch_is_stored_whole_and_in_order(opened: Opened) -> None:
    """237 events: inserted as two statements of 100 rows, three of 10, seven of 1."""
    sqlite, published = opened.store, opened.published
    await started(opened, A)
    updates = [ProgressUpdate(A, 1, p / 3, f"{p}", float(p), time.time()) for p in range(237)]
    stored = await sqlite.record_progress(updates)
    assert [e.seq for e in stored] == list(range(3, 240))
    replay = await sqlite.job_events(A, 2, 1000)
    assert replay == stored
    assert [orjson.loads(e.data)["message"] for e in replay] == [f"{p}" for p in range(237)]
    assert [e.id for e in published] == list(range(1, 240))


async def test_each_event_is_its_draft_encoded_with_the_seq_it_was_given(
    opened: Opened,
) -> None:
    at = 1_700_000_000.25
    record, created = await opened.store.create_job(new_job(A, created_at=at), 100)
    assert created
    assert record.state is JobState.QUEUED
    assert record.last_event_id == 1
    assert record.params == {"n": 1}
    [(claimed, started_event)] = await claim(opened.store,
        at + 1, 1, lambda job: events.processing(at + 1, job.attempt))
    assert claimed.attempt == 1
    assert claimed.started_at == at + 1
    done, completed = await opened.store.record(A, change(
        events.completed(at + 2, A, b'{"ok": true}'), result=b'{"ok": true}'))
    assert done.result == b'{"ok": true}'
    assert done.finished_at == at + 2
    assert done.progress == 100
    queued_event = opened.published[0]
    assert queued_event.data == event_data(A, 1, events.queued(at, 1))
    assert started_event.data == event_data(A, 2, events.processing(at + 1, 1))
    assert completed.data == event_data(A, 3, events.completed(at + 2, A, b'{"ok": true}'))
    assert orjson.loads(completed.data)["state"] == "completed"
    assert await opened.store.job_events(A, 0, 10) == opened.published


async def test_an_idempotency_key_stores_one_job_per_principal(opened: Opened) -> None:
    store = opened.store
    first, created = await store.create_job(new_job(A, principal="alice", key="k"), 100)
    again, created_again = await store.create_job(new_job(B, principal="alice", key="k"), 100)
    other, created_other = await store.create_job(new_job(C, principal="bob", key="k"), 100)
    assert (created, created_again, created_other) == (True, False, True)
    assert again.id == first.id == A
    assert other.id == C
    assert (await opened.store.job_by_idempotency_key("alice", "k")) == first
    assert await opened.store.job_by_idempotency_key("carol", "k") is None
    assert await opened.store.get_job(B) is None
    assert [e.job_id for e in opened.published] == [A, C]


async def test_claims_take_the_highest_priority_then_the_oldest_and_only_due_jobs(
    opened: Opened,
) -> None:
    store = opened.store
    created = {}
    for job_id, priority in ((A, 0), (B, 5), (C, 0)):
        created[job_id], _ = await store.create_job(new_job(job_id, priority=priority), 10)
    positions = [orjson.loads(e.data)["position"] for e in opened.published]
    assert positions == [1, 1, 3]  # B went ahead of A; C has A and B before it
    with pytest.raises(Unavailable, match="full"):
        await store.create_job(new_job("01M8900000000000000000000D"), max_queued=3)
    first = await claim(store, time.time(), 2, processing)
    assert [record.id for record, _ in first] == [B, A]
    now = time.time()
    await store.record(A, change(events.retrying(now, 2, now + 60, ERROR), error=ERROR,
                                 not_before=now + 60))
    assert await store.next_run_at() == created[C].not_before == created[C].created_at
    [(third, _)] = await claim(store, time.time(), 5, processing)
    assert third.id == C
    assert await claim(store, time.time(), 5, processing) == []  # A waits for its retry
    assert await store.next_run_at() == pytest.approx(now + 60)
    [(retried, event)] = await claim(store, now + 61, 5, processing)
    assert (retried.id, retried.attempt, event.seq) == (A, 2, 4)
    assert retried.error == ERROR


async def test_a_refunded_retry_does_not_spend_an_attempt(opened: Opened) -> None:
    [job] = await started(opened, A)
    now = time.time()
    requeued, _ = await opened.store.record(A, change(
        events.retrying(now, 1, now, ERROR), error=ERROR, not_before=now, refund_attempt=True))
    assert (requeued.state, requeued.attempt) == (JobState.QUEUED, job.attempt - 1)
    [(again, _)] = await claim(opened.store, time.time(), 1, processing)
    assert again.attempt == 1


async def test_cancel_requests_mark_only_processing_jobs(opened: Opened) -> None:
    await opened.store.create_job(new_job(A), 100)
    assert await opened.store.request_cancel(A) is None
    await claim(opened.store, time.time(), 1, processing)
    marked = await opened.store.request_cancel(A)
    assert marked is not None
    assert marked.cancel_requested
    assert [j.id for j in await opened.store.jobs_in_state(JobState.PROCESSING)] == [A]
    assert opened.published[-1].name is EventName.PROCESSING  # a request stores no event


async def test_listing_filters_pages_newest_first_and_keeps_principals_apart(
    opened: Opened,
) -> None:
    store = opened.store
    for job_id, principal in ((A, "alice"), (B, "alice"), (C, "bob")):
        await store.create_job(new_job(job_id, principal=principal), 100)
    await claim(store, time.time(), 1, processing)  # A
    everyone = await store.list_jobs(principal=None, states=[], types=[], before=None, limit=10)
    assert [j.id for j in everyone] == [C, B, A]
    alice = await store.list_jobs(principal="alice", states=[], types=[], before=None, limit=1)
    assert [j.id for j in alice] == [B]
    after = await store.list_jobs(principal="alice", states=[], types=[], before=B, limit=10)
    assert [j.id for j in after] == [A]
    queued = await store.list_jobs(principal=None, states=[JobState.QUEUED], types=["echo"],
                                   before=None, limit=10)
    assert [j.id for j in queued] == [C, B]
    assert await store.list_jobs(principal=None, states=[], types=["other"], before=None,
                                 limit=10) == []
    assert (await store.count_active("alice"), await store.count_active("carol")) == (2, 0)
    assert sorted(await store.job_counts()) == [("echo", "processing", 1), ("echo", "queued", 2)]
    assert sorted(await store.job_counts("alice")) == [("echo", "processing", 1),
                                                       ("echo", "queued", 1)]
    assert await store.job_counts("bob") == [("echo", "queued", 1)]
    assert await store.job_counts("carol") == []


async def test_the_global_sequence_orders_every_event_and_filters_by_principal(
    opened: Opened,
) -> None:
    store = opened.store
    assert await store.last_event_id() == 0
    await store.create_job(new_job(A, principal="alice"), 100)
    await store.create_job(new_job(B, principal="bob"), 100)
    await claim(store, time.time(), 2, processing)
    everything = await store.all_events(0, 100, None)
    assert [e.id for e in everything] == [1, 2, 3, 4]
    assert everything == opened.published
    assert [(e.job_id, e.seq) for e in await store.all_events(0, 100, "bob")] == [(B, 1), (B, 2)]
    assert [e.id for e in await store.all_events(2, 1, None)] == [3]
    assert all(e.principal == "alice" for e in await store.all_events(0, 100, "alice"))
    assert await store.last_event_id() == 4


async def test_the_last_event_id_is_the_highest_ever_assigned_even_after_deletes(
    open_store: OpenStore,
) -> None:
    opened = await open_store()
    store = opened.store
    await store.create_job(new_job(A), 100)
    await store.create_job(new_job(B), 100)
    await store.record(B, change(events.cancelled(time.time(), ERROR), error=ERROR))
    assert await store.last_event_id() == 3
    assert await store.delete_job(B)  # the newest events are gone, their ids stay taken
    assert await store.last_event_id() == 3
    await store.close()
    reopened = (await open_store()).store
    assert await reopened.last_event_id() == 3
    await reopened.create_job(new_job(C), 100)
    assert [e.id for e in await reopened.all_events(0, 10, None)] == [1, 4]


async def test_only_a_finished_job_is_deleted_and_with_it_its_events_and_deliveries(
    opened: Opened,
) -> None:
    store = opened.store
    await store.create_job(new_job(A, webhook="https://example.com/hook"), 100)
    assert not await store.delete_job(A)  # queued
    await store.record(A, change(events.cancelled(time.time(), ERROR)._replace(
        webhook="https://example.com/hook"), error=ERROR))
    assert len((await store.job_deliveries(A))[0]) == 2
    assert await store.delete_job(A)
    assert await store.get_job(A) is None
    assert await store.job_events(A, 0, 10) == []
    assert await store.job_deliveries(A) == ([], [])
    assert not await store.delete_job(A)


async def test_retention_finds_jobs_finished_before_a_cutoff_oldest_first(opened: Opened) -> None:
    store = opened.store
    for job_id in (A, B, C):
        await store.create_job(new_job(job_id), 100)
    await store.record(B, change(events.cancelled(100.0, ERROR), error=ERROR))
    await store.record(A, change(events.cancelled(200.0, ERROR), error=ERROR))
    assert await store.finished_before(300.0, 10) == [B, A]
    assert await store.finished_before(150.0, 10) == [B]
    assert await store.finished_before(300.0, 1) == [B]


async def test_deliveries_are_stored_with_their_events_and_keep_every_attempt(
    opened: Opened,
) -> None:
    store, url = opened.store, "https://example.com/hook"
    await store.create_job(new_job(A, webhook=url), 100)
    await claim(store, time.time(), 1, processing)  # no webhook in this draft
    await store.record_progress([ProgressUpdate(A, 1, 50.0, None, None, time.time(), url)])
    deliveries, attempts = await store.job_deliveries(A)
    assert [(d.seq, d.event, d.url, d.state, d.attempts) for d in deliveries] == [
        (1, "queued", url, "pending", 0), (3, "progress", url, "pending", 0)]
    assert attempts == []
    now = time.time() + 1
    due = await store.claim_deliveries(now, 10, hold=60)
    assert [d.seq for d in due] == [1, 3]
    assert await store.claim_deliveries(now, 10, hold=60) == []  # held for the first taker
    await store.release_deliveries([due[1].id], now)  # its sender stopped before posting it
    [released] = await store.claim_deliveries(now, 10, hold=60)
    assert released.id == due[1].id
    first = due[0]
    await store.record_attempt(DeliveryAttempt(first.id, 1, time.time(), 500, "HTTP 500", 0.01),
                               "pending", now + 100)
    await store.record_attempt(DeliveryAttempt(due[1].id, 1, time.time(), 200, None, 0.01),
                               "delivered", time.time())
    assert await store.next_delivery_at() == pytest.approx(now + 100)
    [again] = await store.claim_deliveries(now + 101, 10, hold=60)
    assert (again.id, again.attempts) == (first.id, 1)
    await store.record_attempt(DeliveryAttempt(first.id, 2, time.time(), 410, "HTTP 410", 0.02),
                               "dead", time.time())
    assert await store.claim_deliveries(now + 10_000, 10, hold=60) == []
    assert await store.retry_delivery(A, due[1].id, time.time()) is None  # not dead
    retried = await store.retry_delivery(A, first.id, time.time())
    assert retried is not None
    assert (retried.state, retried.attempts) == ("pending", 2)
    deliveries, attempts = await store.job_deliveries(A)
    assert [(a.delivery_id, a.number, a.status) for a in attempts] == [
        (first.id, 1, 500), (first.id, 2, 410), (due[1].id, 1, 200)]
    assert [d.state for d in deliveries] == ["pending", "delivered"]


async def test_a_token_bucket_is_taken_from_and_refills(opened: Opened) -> None:
    store = opened.store
    assert [await store.take_token("alice", 0.5, 2) for _ in range(2)] == [0.0, 0.0]
    wait = await store.take_token("alice", 0.5, 2)
    assert 1.5 < wait <= 2.0  # empty: one token comes back every 2 s
    assert await store.take_token("bob", 0.5, 2) == 0.0  # a bucket per key
    assert await store.take_token("fast", 1000.0, 1) == 0.0
    assert await store.take_token("fast", 1000.0, 1) <= 0.001


async def test_a_secret_is_made_once_and_kept(open_store: OpenStore) -> None:
    store = (await open_store()).store
    made = await store.secret("key", lambda: b"first")
    assert made == b"first"
    assert await store.secret("key", lambda: b"second") == b"first"
    await store.ping()


async def test_everything_is_there_after_reopening_and_ids_continue(
    open_store: OpenStore,
) -> None:
    first = await open_store()
    await first.store.create_job(new_job(A), 100)
    await claim(first.store, time.time(), 1, processing)
    await first.store.close()
    second = await open_store()
    await second.store.create_job(new_job(B), 100)
    assert [e.id for e in second.published] == [3]
    assert [(e.job_id, e.seq) for e in await second.store.all_events(0, 10, None)] == [
        (A, 1), (A, 2), (B, 1)]
    record = await second.store.get_job(A)
    assert record is not None
    assert record.state is JobState.PROCESSING


async def test_a_reserved_job_stays_queued_until_started_and_only_its_node_starts_it(
    opened: Opened,
) -> None:
    store = opened.store
    for job_id, priority in ((A, 0), (B, 9)):
        await store.create_job(new_job(job_id, priority=priority), 100)
    reserved = await store.reserve(time.time(), 5)
    assert [(job.id, job.state, job.attempt) for job in reserved] == [
        (B, JobState.QUEUED, 0), (A, JobState.QUEUED, 0)]
    assert await store.reserve(time.time(), 5) == []  # taken: nobody reserves them again
    assert await store.next_run_at() is None  # nothing runnable that is not reserved
    assert [e.name for e in opened.published] == [EventName.QUEUED, EventName.QUEUED]
    await store.create_job(new_job(C), 10)
    assert orjson.loads(opened.published[-1].data)["position"] == 3  # they count as queued
    started, event = await store.start(B, 1_700_000_000.5, processing)
    assert (started.state, started.attempt, started.started_at) == (
        JobState.PROCESSING, 1, 1_700_000_000.5)
    assert (event.seq, event.name) == (2, EventName.PROCESSING)
    with pytest.raises(IllegalTransition):  # started: not reserved any more
        await store.start(B, time.time(), processing)
    await store.release([A])
    with pytest.raises(IllegalTransition, match="not reserved"):
        await store.start(A, time.time(), processing)
    [again] = await store.reserve(time.time(), 1)  # A is older than C
    assert again.id == A
    await store.record(A, change(events.cancelled(time.time(), ERROR), error=ERROR,
                                 only_from=frozenset({JobState.QUEUED})))
    with pytest.raises(IllegalTransition, match="cancelled"):  # cancelled while held
        await store.start(A, time.time(), processing)
    with pytest.raises(NotFound):
        await store.start("01M8900000000000000000000Z", time.time(), processing)


async def test_reservations_of_a_server_that_stopped_are_given_back(
    open_store: OpenStore,
) -> None:
    first = await open_store(lease=0.3)
    await first.store.create_job(new_job(A), 100)
    [held] = await first.store.reserve(time.time(), 1)
    await first.store.close()
    if first.store.shared:  # another node: the reservation's lease must run out first
        await asyncio.sleep(0.4)  # what is under test is the clock
    second = await open_store(node="node-2")
    [again] = await second.store.reserve(time.time(), 1)
    assert again.id == held.id == A
