"""The broker's fan-out limit: commits beyond the burst are held, then go out together."""

from __future__ import annotations

import asyncio

import pytest

from sse_jobs.records import Event
from sse_jobs.states import EventName
from sse_jobs.streams.broker import (
    FAN_OUT_BURST,
    PUSH_SLICE,
    SMALL_FAN_OUT,
    Broker,
    Subscription,
    SubscriptionClosed,
)

RATE = 20.0
JOB = "01M8900000000000000000000A"


def event(ident: int) -> Event:
    return Event(ident, JOB, ident, EventName.PROGRESS, b"{}", "anonymous")


def commit_each(broker: Broker, idents: range) -> None:
    """One commit per event, published as the store does after each."""
    for ident in idents:
        broker.publish([event(ident)])


def crowd(broker: Broker) -> list[Subscription]:
    """Enough other streams of the job that each fan-out is one the limit applies to."""
    return [broker.subscribe(JOB, "anonymous") for _ in range(SMALL_FAN_OUT)]


async def taken_at_once(subscription: Subscription) -> list[int]:
    """What the subscription holds right now. A fan-out made at once has pushed its events
    before this coroutine runs, so the short timeout can only fail a held fan-out."""
    try:
        batch = await asyncio.wait_for(subscription.next_batch(), timeout=0.001)
    except TimeoutError:
        return []
    return [e.id for e in batch]


async def test_without_a_rate_every_commit_goes_out_at_once() -> None:
    broker = Broker(queue_size=100)
    subscription = broker.subscribe(None, "anonymous")
    for ident in range(1, 11):
        broker.publish([event(ident)])
        assert await taken_at_once(subscription) == [ident]


async def test_commits_beyond_the_burst_are_held_and_go_out_together_in_order() -> None:
    broker = Broker(queue_size=100, rate=RATE)
    crowd(broker)
    everyone, of_job = broker.subscribe(None, "anonymous"), broker.subscribe(JOB, "anonymous")
    burst = int(FAN_OUT_BURST)
    commit_each(broker, range(1, burst + 2))
    broker.publish([event(burst + 2), event(burst + 3)])
    for subscription in (everyone, of_job):
        assert await taken_at_once(subscription) == list(range(1, burst + 1))
    loop = asyncio.get_running_loop()
    held_since = loop.time()
    for subscription in (everyone, of_job):
        batch = await asyncio.wait_for(subscription.next_batch(), timeout=5)
        assert [e.id for e in batch] == [burst + 1, burst + 2, burst + 3]
    assert loop.time() - held_since >= 0.9 / RATE  # the bucket was empty: one token's time


async def test_after_a_quiet_spell_a_commit_goes_out_at_once() -> None:
    broker = Broker(queue_size=100, rate=RATE)
    crowd(broker)
    subscription = broker.subscribe(None, "anonymous")
    commit_each(broker, range(1, int(FAN_OUT_BURST) + 1))
    assert len(await taken_at_once(subscription)) == FAN_OUT_BURST
    await asyncio.sleep(1.1 / RATE)  # the quiet spell under test: one token comes back
    broker.publish([event(10)])
    assert await taken_at_once(subscription) == [10]
    broker.publish([event(11)])
    assert await taken_at_once(subscription) == []  # spent again: held


async def test_shutdown_ends_every_subscription_and_holds_nothing_after() -> None:
    broker = Broker(queue_size=100, rate=RATE)
    crowd(broker)
    subscription = broker.subscribe(JOB, "anonymous")
    commit_each(broker, range(1, int(FAN_OUT_BURST) + 3))
    assert len(await taken_at_once(subscription)) == FAN_OUT_BURST
    broker.close_all()
    with pytest.raises(SubscriptionClosed):  # the held events are stored: the client
        await subscription.next_batch()  # replays them when it reconnects
    late = broker.subscribe(JOB, "anonymous")
    broker.publish([event(100)])
    assert await taken_at_once(late) == [100]  # after shutdown began, nothing is held


async def test_a_fan_out_to_a_few_streams_is_never_held() -> None:
    broker = Broker(queue_size=100, rate=RATE)
    few = [broker.subscribe(JOB, "anonymous") for _ in range(SMALL_FAN_OUT)]
    for ident in range(1, int(FAN_OUT_BURST) * 3):  # far beyond the burst
        broker.publish([event(ident)])
        for subscription in few:
            assert await taken_at_once(subscription) == [ident]
    more = crowd(broker)  # now each fan-out wakes many: the limit applies again
    commit_each(broker, range(100, 100 + int(FAN_OUT_BURST) + 1))
    assert len(await taken_at_once(more[0])) < FAN_OUT_BURST + 1


async def test_a_fan_out_wakes_streams_a_slice_per_loop_turn_and_keeps_every_order() -> None:
    broker = Broker(queue_size=100)
    streams = [broker.subscribe(None, "anonymous") for _ in range(3 * PUSH_SLICE + 5)]
    seen_between: list[int] = []
    broker.publish([event(1)])
    asyncio.get_running_loop().call_soon(
        lambda: seen_between.append(sum(1 for s in streams if s.buffered)))
    broker.publish([event(2), event(3)])  # queued behind the first, never ahead of it
    batches = await asyncio.wait_for(
        asyncio.gather(*(stream.next_batch() for stream in streams)), timeout=5)
    assert seen_between == [2 * PUSH_SLICE]  # the loop ran after two of the four slices
    for batch in batches:
        assert [e.id for e in batch] in ([1, 2, 3], [1])
    for stream, batch in zip(streams, batches, strict=True):
        if len(batch) == 1:
            rest = await asyncio.wait_for(stream.next_batch(), timeout=5)
            assert [e.id for e in rest] == [2, 3]


async def test_commits_made_while_a_fan_out_is_pushed_go_out_together_after_its_last_slice(
) -> None:
    broker = Broker(queue_size=100)
    streams = [broker.subscribe(None, "anonymous") for _ in range(3 * PUSH_SLICE + 5)]
    received: list[list[list[int]]] = [[] for _ in streams]

    async def read(stream: Subscription, batches: list[list[int]]) -> None:
        while sum(map(len, batches)) < 4:
            batches.append([e.id for e in await stream.next_batch()])

    async with asyncio.timeout(5), asyncio.TaskGroup() as readers:
        for stream, batches in zip(streams, received, strict=True):
            readers.create_task(read(stream, batches))
        await asyncio.sleep(0)  # every reader waits for its first batch
        commit_each(broker, range(1, 5))
    # Queued one fan-out per commit, the streams of the first slice would each have read
    # 1, 2, 3 and 4 apiece, and the queue would grow with the commit rate.
    assert received == [[[1], [2, 3, 4]]] * len(streams)


async def test_the_next_fan_out_starts_a_turn_after_the_last_slice_of_the_one_before() -> None:
    broker = Broker(queue_size=100)
    streams = [broker.subscribe(None, "anonymous") for _ in range(2 * PUSH_SLICE + 5)]
    loop = asyncio.get_running_loop()
    woken_per_turn: list[int] = []
    total = 2 * len(streams)  # nobody reads: each stream buffers both fan-outs' events
    done = loop.create_future()
    broker.publish([event(1)])  # wakes the first slice at once
    broker.publish([event(2)])
    before = sum(stream.buffered for stream in streams)

    def each_turn() -> None:
        # Scheduled like the broker's slices, so exactly one of them runs between two calls.
        nonlocal before
        now = sum(stream.buffered for stream in streams)
        woken_per_turn.append(now - before)
        before = now
        if now < total and len(woken_per_turn) < 100:
            loop.call_soon(each_turn)
        else:
            done.set_result(None)

    loop.call_soon(each_turn)
    await asyncio.wait_for(done, timeout=5)
    assert before == total
    # Started in the same turn as the last slice, the second fan-out would wake 5 + 64.
    assert max(woken_per_turn) <= PUSH_SLICE
