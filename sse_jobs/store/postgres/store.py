"""The PostgreSQL store: one database shared by any number of nodes.

Writes, as in the SQLite store, go through one writer task per node that applies every
write waiting at that moment in one transaction (group commit), on a connection of its
own. What is new is that other nodes write too:

- **Per-job seq**: taken under the job row's lock in the writing transaction
  (``last_event_id = last_event_id + 1``), so it is gap-free whichever node writes.
- **Global ids in commit order**: a transaction that stores events takes the one
  ``event_counter`` row last, just before it commits, and holds its lock until then. Ids
  are therefore handed out in commit order, and a reader that has seen id N has seen
  every id below it: resuming at N can never skip an event that commits late (ids from a
  sequence could). Taking it last keeps the lock short, and since every transaction takes
  the job rows it needs first and the counter after, no two can deadlock over it.
- **Fan-out across nodes**: at commit, ``NOTIFY`` carries the newest id (ids only, far
  under the 8000-byte limit) to every node; each node then reads the events table from
  the last id it published, in id order, and hands them to its listener (the broker), with
  a slow poll as a safety net for a lost notification or connection. A node publishes its
  own commit at once when nothing of another node's lies between it and what it published.
- **Leases with fencing**: a reservation records the node and a lease (database time),
  which the attempt's start keeps; every write for an attempt requires this node's lease
  to be running, and ending another node's attempt requires its lease to have run out,
  so after a takeover the old node's late writes are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import orjson
import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from sse_jobs.errors import SseJobsError, Unavailable
from sse_jobs.events import EventDraft, event_data, iso, progress_data
from sse_jobs.ratelimit import TokenBucket
from sse_jobs.records import (
    Change,
    Delivery,
    DeliveryAttempt,
    Event,
    JobRecord,
    NewJob,
    ProgressUpdate,
)
from sse_jobs.states import ACTIVE_STATES, TERMINAL_STATES, EventName, JobState
from sse_jobs.store.base import DraftFor, EventListener, Limits, Store
from sse_jobs.store.rows import (
    attempt_record,
    best,
    by_attempt,
    delivery_record,
    event_record,
    job_record,
    refusal,
    rooms,
)
from sse_jobs.store.sql import load_migrations, load_queries

log = logging.getLogger(__name__)

T = TypeVar("T")
PACKAGE = __package__ or "sse_jobs.store.postgres"
Q = load_queries(PACKAGE)
RECORD = {event: Q[f"record_{event.value}"] for event in (
    EventName.RETRYING, EventName.COMPLETED, EventName.FAILED, EventName.CANCELLED)}
EVENTS_CHANNEL, CANCELS_CHANNEL, QUEUED_CHANNEL = (
    "sse_jobs_events", "sse_jobs_cancels", "sse_jobs_queued")
MAX_WRITES_PER_TRANSACTION = 512
RETRY_AFTER_STORAGE_ERROR = 5
QUEUE_FULL_RETRY_AFTER = 5
# A transaction that lost a deadlock or a serialization race is run again, this often.
TRANSIENT_RETRIES = 3
TRANSIENT = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
POLL_INTERVAL = 1.0  # the safety net under NOTIFY
TAIL_PAGE = 1000
READERS = 4
CONNECT_TIMEOUT = 10.0
LISTEN_RETRY = 1.0
TERMINAL = sorted(TERMINAL_STATES)
ACTIVE = sorted(ACTIVE_STATES)

# A write: runs in the writer's transaction; returns the events it stores (their ids still
# 0) and a function that makes its value once the events have their ids.
Built = tuple[Callable[[list[Event]], Any], list[Event]]
WriteOp = Callable[[AsyncConnection[Any]], Awaitable[Built]]


class PostgresStore(Store):
    """Jobs and events in a PostgreSQL database, shared by every node that opens it."""

    shared = True

    def __init__(self, url: str, *, node: str, lease_timeout: float) -> None:
        self.url = url
        self.node = node
        self._lease = lease_timeout
        self._pool: AsyncConnectionPool[AsyncConnection[Any]] | None = None
        self._writer: AsyncConnection[Any] | None = None
        self._pending: deque[tuple[WriteOp, asyncio.Future[Any]]] = deque()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: EventListener | None = None
        self._cancel_callbacks: list[Callable[[str], None]] = []
        self._queued_callbacks: list[Callable[[int | None], None]] = []
        self._published = 0  # the newest event id handed to the listener
        self._tail_wakeup = asyncio.Event()
        # Why the newest write transaction failed on storage (None: it committed).
        self._write_refused: str | None = None

    async def open(self, listener: EventListener | None) -> None:
        self._listener = listener
        try:
            self._pool = AsyncConnectionPool(
                self.url, min_size=1, max_size=READERS, open=False, timeout=CONNECT_TIMEOUT,
                kwargs={"autocommit": True})
            await self._pool.open(wait=True, timeout=CONNECT_TIMEOUT)
            self._writer = await self._connect()
            await self._migrate(self._writer)
            self._published = int(await self._read_value(Q["last_event_id"]))
        except (psycopg.Error, OSError, TimeoutError) as exc:
            await self.close()
            raise Unavailable(f"cannot open the PostgreSQL database: {_reason(exc)}") from exc
        self._tasks = [asyncio.create_task(self._run_writer(), name="postgres-writer"),
                       asyncio.create_task(self._listen(), name="postgres-listen")]
        if listener is not None:
            self._tasks.append(asyncio.create_task(self._tail(), name="postgres-tail"))

    async def close(self) -> None:
        self._closing = True
        self._wakeup.set()
        if self._tasks:
            writer, *others = self._tasks
            await writer  # it finishes the writes already waiting
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            self._tasks = []
        if self._writer is not None:
            await self._writer.close()
            self._writer = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _connect(self) -> AsyncConnection[Any]:
        return await AsyncConnection.connect(self.url, connect_timeout=int(CONNECT_TIMEOUT))

    async def _migrate(self, conn: AsyncConnection[Any]) -> None:
        """Apply the migrations the database has not seen, under an advisory lock so that
        nodes starting at once migrate it once; all of them in one transaction."""
        async with conn.transaction():
            await conn.execute(Q["migration_lock"])
            await conn.execute(Q["create_schema_version"])
            row = await (await conn.execute(Q["schema_version"])).fetchone()
            applied = row[0] if row else 0
            for version, script in load_migrations(PACKAGE):
                if version > applied:
                    await conn.execute(script.encode())  # several statements: simple protocol
                    await conn.execute(Q["set_schema_version"], {"version": version})
                    log.info("PostgreSQL database migrated to schema version %d", version)

    # -- the writer -------------------------------------------------------------------

    async def _write(self, op: WriteOp) -> Any:
        if self._closing:
            raise Unavailable("the store is closing", retry_after=RETRY_AFTER_STORAGE_ERROR)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((op, future))
        self._wakeup.set()
        # Shielded: a caller that goes away must not cancel a write that may already be
        # committed; the writer settles the future either way.
        return await asyncio.shield(future)

    async def _run_writer(self) -> None:
        while self._pending or not self._closing:
            if not self._pending:
                await self._wakeup.wait()
                self._wakeup.clear()
                continue
            count = min(len(self._pending), MAX_WRITES_PER_TRANSACTION)
            await self._commit([self._pending.popleft() for _ in range(count)])

    async def _commit(self, batch: list[tuple[WriteOp, asyncio.Future[Any]]]) -> None:
        # Every future of the batch is settled whatever fails here.
        ops = [op for op, _future in batch]
        outcomes, events = await self._transaction(ops)
        if events:
            self._published_own(events)
        for (_op, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def _transaction(self, ops: list[WriteOp]) -> tuple[list[Any], list[Event]]:
        """Apply ``ops`` in one transaction: each op's value (or the error that refused it)
        and the events stored, none if the transaction failed."""
        for tries in range(TRANSIENT_RETRIES + 1):
            try:
                conn = await self._writer_connection()
                async with conn.transaction():
                    applied = await self._apply(conn, ops)
                self._write_refused = None
                return applied
            except TRANSIENT as exc:
                if tries == TRANSIENT_RETRIES:
                    return [self._refused(exc)] * len(ops), []
                log.info("write transaction lost a race (%s); running it again", exc)
            except (psycopg.Error, OSError) as exc:
                log.error("database write failed, %d requests refused: %s", len(ops),
                          _reason(exc))
                return [self._refused(exc)] * len(ops), []
            except Exception as exc:  # a bug: its traceback, and the writer lives on
                log.exception("database writer failed, %d requests refused", len(ops))
                return [exc] * len(ops), []
        raise AssertionError("unreachable")

    def _refused(self, exc: BaseException) -> Unavailable:
        error = _unavailable(exc)
        self._write_refused = error.detail
        return error

    async def _writer_connection(self) -> AsyncConnection[Any]:
        if self._writer is None or self._writer.closed or self._writer.broken:
            if self._writer is not None:
                await self._writer.close()
            self._writer = None
            self._writer = await self._connect()
        return self._writer

    async def _apply(self, conn: AsyncConnection[Any],
                     ops: list[WriteOp]) -> tuple[list[Any], list[Event]]:
        built: list[tuple[Callable[[list[Event]], Any], int, int] | SseJobsError] = []
        events: list[Event] = []
        for op in ops:
            try:
                make, stored = await op(conn)
            except SseJobsError as refusal:  # refused before writing anything
                built.append(refusal)
                continue
            built.append((make, len(events), len(events) + len(stored)))
            events.extend(stored)
        if events:
            events = await self._store_events(conn, events)
        outcomes = [entry if isinstance(entry, SseJobsError)
                    else entry[0](events[entry[1]:entry[2]]) for entry in built]
        return outcomes, events

    async def _store_events(self, conn: AsyncConnection[Any], events: list[Event]) -> list[Event]:
        """Give ``events`` their global ids (last in the transaction: see the module's
        docstring), insert them, and notify every node at commit."""
        row = await (await conn.execute(Q["take_event_ids"], {"count": len(events)})).fetchone()
        assert row is not None
        first = row[0] - len(events) + 1
        numbered = [event._replace(id=first + n) for n, event in enumerate(events)]
        async with conn.cursor() as cursor, cursor.copy(Q["copy_events"]) as copy:
            for event in numbered:
                await copy.write_row((event.id, event.job_id, event.seq, event.name.value,
                                      event.data))
        await conn.execute(Q["notify_events"], {"last_id": str(numbered[-1].id)})
        return numbered

    # -- publishing: every node's events, in id order ----------------------------------

    def _published_own(self, events: list[Event]) -> None:
        """Our own commit: hand it over at once if it follows what was handed over;
        otherwise another node's events lie between, and the tail reads them all."""
        if self._listener is None:
            return
        if events[0].id == self._published + 1:
            self._publish(events)
        else:
            self._tail_wakeup.set()

    def _publish(self, events: list[Event]) -> None:
        fresh = [event for event in events if event.id > self._published]
        if not fresh or self._listener is None:
            return
        self._published = fresh[-1].id
        try:
            self._listener(fresh)
        except Exception:  # stored all the same: streams catch up by replay
            log.exception("handing %d committed events to the listener failed", len(fresh))

    async def _tail(self) -> None:
        """Read and publish the events after the newest one published: woken by NOTIFY
        (or our own commit out of turn), and every ``POLL_INTERVAL`` at least."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_INTERVAL):
                    await self._tail_wakeup.wait()
            self._tail_wakeup.clear()
            try:
                while page := await self.all_events(self._published, TAIL_PAGE, None):
                    self._publish(page)
                    if len(page) < TAIL_PAGE:
                        break
            except Unavailable as exc:
                log.warning("cannot read new events: %s", exc.detail)

    async def _listen(self) -> None:
        """Hear other nodes' commits and cancel requests, reconnecting when the
        connection drops (and then catching up, since notifications were missed)."""
        while True:
            try:
                async with await AsyncConnection.connect(
                        self.url, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT)) as conn:
                    for name in ("listen_events", "listen_cancels", "listen_queued"):
                        await conn.execute(Q[name])
                    self._tail_wakeup.set()
                    async for note in conn.notifies():
                        self._heard(note.channel, note.payload)
            except (psycopg.Error, OSError) as exc:
                log.warning("lost the PostgreSQL notification connection (%s); "
                            "reconnecting in %.0fs", _reason(exc), LISTEN_RETRY)
            await asyncio.sleep(LISTEN_RETRY)

    def _heard(self, channel: str, payload: str) -> None:
        if channel == EVENTS_CHANNEL:
            if payload.isdigit() and int(payload) > self._published:
                self._tail_wakeup.set()
        elif channel == CANCELS_CHANNEL:
            for callback in self._cancel_callbacks:
                callback(payload)
        elif channel == QUEUED_CHANNEL:
            priority = int(payload) if payload.lstrip("-").isdigit() else None
            for wake in self._queued_callbacks:
                wake(priority)

    # -- writes -----------------------------------------------------------------------

    def _draft_event(self, job_id: str, seq: int, draft: EventDraft, principal: str) -> Event:
        """An event to store (its id comes at the end of the transaction)."""
        return Event(0, job_id, seq, draft.name, event_data(job_id, seq, draft), principal)

    async def create_jobs(self, news: Sequence[NewJob],
                          max_queued: int) -> list[tuple[JobRecord, bool] | SseJobsError]:
        async def op(conn: AsyncConnection[Any]) -> Built:
            outcomes: list[tuple[JobRecord, bool] | SseJobsError] = []
            stored: list[Event] = []
            for new in news:
                outcome, event = await self._create(conn, new, max_queued)
                outcomes.append(outcome)
                stored += event
            created = [o[0].priority for o in outcomes if not isinstance(o, SseJobsError) and o[1]]
            if created:  # the best of them: nodes give back held jobs it outranks
                await conn.execute(Q["notify_queued"], {"priority": str(max(created))})
            return lambda _events: outcomes, stored

        result: list[tuple[JobRecord, bool] | SseJobsError] = await self._write(op)
        return result

    async def _create(self, conn: AsyncConnection[Any], new: NewJob, max_queued: int
                      ) -> tuple[tuple[JobRecord, bool] | SseJobsError, list[Event]]:
        by_key = {"principal": new.principal, "key": new.idempotency_key}
        if new.idempotency_key is not None:
            existing = await _job_row(conn, Q["select_job_by_key"], by_key)
            if existing is not None:
                return (existing, False), []
        cursor = await conn.execute(Q["queue_depth"], {"priority": new.priority, "id": new.id})
        queued, ahead = await cursor.fetchone() or (0, 0)
        if queued >= max_queued:
            return Unavailable("the job queue is full", retry_after=QUEUE_FULL_RETRY_AFTER), []
        record = await _job_row(conn, Q["insert_job"], {
            "id": new.id, "type": new.type, "params": orjson.dumps(new.params).decode(),
            "priority": new.priority, "max_attempts": new.max_attempts,
            "timeout": new.timeout, "created_at": new.created_at,
            "idempotency_key": new.idempotency_key, "request_hash": new.request_hash,
            "principal": new.principal, "callback_url": new.callback_url,
            "callback_events": new.callback_events, "rerun_of": new.rerun_of,
            "run_at": new.run_at, "tags": orjson.dumps(list(new.tags)).decode(),
        })
        if record is None:  # another node stored this key a moment ago
            stored = await _job_row(conn, Q["select_job_by_key"], by_key)
            assert stored is not None
            return (stored, False), []
        if new.tags:
            await conn.execute(Q["insert_tags"], {"id": new.id, "tags": list(new.tags)})
        first = new.first_event(ahead + 1)
        event = self._draft_event(new.id, 1, first, new.principal)
        await _insert_deliveries(conn, [(event, first.webhook)])
        return (record, True), [event]

    async def record(self, job_id: str, change: Change) -> tuple[JobRecord, Event]:
        async def op(conn: AsyncConnection[Any]) -> Built:
            fence = change.fence
            record = await _job_row(conn, RECORD[change.name], {
                "id": job_id, "allowed": sorted(change.allowed), "state": change.state.value,
                "at": change.event.at,
                "error": None if change.error is None else orjson.dumps(change.error).decode(),
                "result": change.result, "result_file": change.result_file,
                "not_before": change.not_before, "refund": int(change.refund_attempt),
                "attempt": None if fence is None else fence.attempt,
                "expired": fence is not None and fence.expired, "node": self.node,
            })
            if record is None:
                row = await (await conn.execute(Q["select_state"], {"id": job_id})).fetchone()
                raise refusal(job_id, None if row is None else row[0], change)
            event = self._draft_event(job_id, record.last_event_id, change.event,
                                      record.principal)
            await _insert_deliveries(conn, [(event, change.event.webhook)])
            if record.state is JobState.QUEUED:
                await conn.execute(Q["notify_queued"], {"priority": ""})
            return lambda events: (record, events[0]), [event]

        result: tuple[JobRecord, Event] = await self._write(op)
        return result

    async def record_progress(self, updates: Sequence[ProgressUpdate]) -> list[Event]:
        async def op(conn: AsyncConnection[Any]) -> Built:
            events: list[Event] = []
            deliveries: list[tuple[Event, str | None]] = []
            last_at, at_text = None, None
            for (job_id, attempt), group in by_attempt(updates).items():
                last = group[-1]
                cursor = await conn.execute(Q["progress"], {
                    "id": job_id, "attempt": attempt, "progress": last.progress,
                    "message": last.message, "count": len(group), "node": self.node})
                row = await cursor.fetchone()
                if row is None:
                    continue  # the attempt has ended, or this node lost its lease
                seq, principal = row[0] - len(group) + 1, row[1]
                for _job, _attempt, progress, message, eta, at, webhook in group:
                    if at != last_at:
                        last_at, at_text = at, iso(at)
                    data = progress_data(job_id, seq, at_text, progress, message, eta)
                    event = Event(0, job_id, seq, EventName.PROGRESS, data, principal)
                    events.append(event)
                    deliveries.append((event, webhook))
                    seq += 1
            await _insert_deliveries(conn, deliveries)
            return lambda stored: stored, events

        result: list[Event] = await self._write(op)
        return result

    async def request_cancel(self, job_id: str) -> JobRecord | None:
        async def op(conn: AsyncConnection[Any]) -> Built:
            record = await _job_row(conn, Q["request_cancel"], {"id": job_id})
            if record is not None:  # delivered at commit, to the node running it too
                await conn.execute(Q["notify_cancel"], {"id": job_id})
            return lambda _events: record, []

        result: JobRecord | None = await self._write(op)
        return result

    def on_cancel(self, callback: Callable[[str], None]) -> None:
        self._cancel_callbacks.append(callback)

    def on_queued(self, callback: Callable[[int | None], None]) -> None:
        self._queued_callbacks.append(callback)

    async def reserve(self, now: float, limit: int, limits: Limits | None = None
                      ) -> list[JobRecord]:
        limited = dict(limits or {})

        async def op(conn: AsyncConnection[Any]) -> Built:
            cursor = await conn.execute(Q["reserve_candidates"], {
                "now": now, "limit": limit, "limited": sorted(limited)})
            candidates = await cursor.fetchall()
            if limited:
                for name in sorted(limited):  # one order on every node: no deadlock
                    await conn.execute(Q["lock_type"], {"type": name})
                cursor = await conn.execute(Q["busy_of_types"], {"types": sorted(limited)})
                busy = {row[0]: int(row[1]) for row in await cursor.fetchall()}
                for name, room in rooms(limited, busy, limit).items():
                    cursor = await conn.execute(Q["reserve_candidates_of_type"], {
                        "type": name, "now": now, "limit": room})
                    candidates += await cursor.fetchall()
            ids = best(candidates, limit)
            cursor = await conn.execute(Q["reserve"], {
                "ids": ids, "node": self.node, "lease": self._lease})
            reserved = sorted(map(job_record, await cursor.fetchall()),
                              key=lambda r: (-r.priority, r.id))
            return lambda _events: reserved, []

        result: list[JobRecord] = await self._write(op)
        return result

    async def start(self, job_id: str, at: float, draft: DraftFor) -> tuple[JobRecord, Event]:
        async def op(conn: AsyncConnection[Any]) -> Built:
            record = await _job_row(conn, Q["start"], {
                "id": job_id, "now": at, "node": self.node, "lease": self._lease})
            if record is None:
                row = await (await conn.execute(Q["select_state"], {"id": job_id})).fetchone()
                raise refusal(job_id, None if row is None else row[0], None)
            made = draft(record)
            event = self._draft_event(job_id, record.last_event_id, made, record.principal)
            await _insert_deliveries(conn, [(event, made.webhook)])
            return lambda events: (record, events[0]), [event]

        result: tuple[JobRecord, Event] = await self._write(op)
        return result

    async def release(self, job_ids: Sequence[str]) -> None:
        async def op(conn: AsyncConnection[Any]) -> Built:
            await conn.execute(Q["release"], {"ids": list(job_ids), "node": self.node})
            await conn.execute(Q["notify_queued"], {"priority": ""})  # another may run them
            return lambda _events: None, []

        if job_ids:
            await self._write(op)

    async def renew_leases(self, job_ids: Sequence[str]) -> dict[str, bool]:
        async def op(conn: AsyncConnection[Any]) -> Built:
            cursor = await conn.execute(Q["renew_leases"], {
                "ids": list(job_ids), "node": self.node, "lease": self._lease})
            held = {row[0]: bool(row[1]) for row in await cursor.fetchall()}
            return lambda _events: held, []

        result: dict[str, bool] = await self._write(op)
        return result

    async def expired_attempts(self, limit: int) -> list[JobRecord]:
        return [job_record(row) for row in await self._read(Q["expired_attempts"],
                                                            {"limit": limit})]

    async def delete_job(self, job_id: str) -> bool:
        async def op(conn: AsyncConnection[Any]) -> Built:
            cursor = await conn.execute(Q["delete_job"], {"id": job_id, "states": TERMINAL})
            deleted = await cursor.fetchone() is not None
            if deleted:
                for name in ("delete_events", "delete_attempts", "delete_deliveries",
                             "delete_tags"):
                    await conn.execute(Q[name], {"id": job_id})
            return lambda _events: deleted, []

        result: bool = await self._write(op)
        return result

    async def claim_deliveries(self, now: float, limit: int, hold: float) -> list[Delivery]:
        async def op(conn: AsyncConnection[Any]) -> Built:
            cursor = await conn.execute(Q["claim_deliveries"],
                                        {"now": now, "limit": limit, "until": now + hold})
            claimed = sorted(map(delivery_record, await cursor.fetchall()),
                             key=lambda d: (d.next_attempt_at, d.id))
            return lambda _events: claimed, []

        result: list[Delivery] = await self._write(op)
        return result

    async def release_deliveries(self, delivery_ids: Sequence[int], now: float) -> None:
        async def op(conn: AsyncConnection[Any]) -> Built:
            await conn.execute(Q["release_deliveries"], {"ids": list(delivery_ids), "now": now})
            return lambda _events: None, []

        if delivery_ids:
            await self._write(op)

    async def record_attempt(self, attempt: DeliveryAttempt, state: str,
                             next_attempt_at: float) -> None:
        async def op(conn: AsyncConnection[Any]) -> Built:
            params = {"id": attempt.delivery_id, "number": attempt.number, "at": attempt.at,
                      "status": attempt.status, "error": attempt.error,
                      "duration": attempt.duration, "state": state,
                      "next_attempt_at": next_attempt_at}
            await conn.execute(Q["insert_attempt"], params)
            await conn.execute(Q["update_delivery"], params)
            return lambda _events: None, []

        await self._write(op)

    async def retry_delivery(self, job_id: str, delivery_id: int, now: float) -> Delivery | None:
        async def op(conn: AsyncConnection[Any]) -> Built:
            cursor = await conn.execute(Q["retry_delivery"],
                                        {"id": delivery_id, "job_id": job_id, "now": now})
            row = await cursor.fetchone()
            retried = None if row is None else delivery_record(row)
            return lambda _events: retried, []

        result: Delivery | None = await self._write(op)
        return result

    async def secret(self, name: str, new: Callable[[], bytes]) -> bytes:
        async def op(conn: AsyncConnection[Any]) -> Built:
            await conn.execute(Q["insert_secret"], {"name": name, "value": new()})
            row = await (await conn.execute(Q["select_secret"], {"name": name})).fetchone()
            assert row is not None
            value = bytes(row[0])
            return lambda _events: value, []

        result: bytes = await self._write(op)
        return result

    async def take_token(self, key: str, rate: float, burst: float) -> float:
        async def op(conn: AsyncConnection[Any]) -> Built:
            params = {"key": key, "burst": burst}
            await conn.execute(Q["ensure_rate_limit"], params)
            row = await (await conn.execute(Q["lock_rate_limit"], params)).fetchone()
            assert row is not None
            level, at, now = row
            bucket = TokenBucket(rate, burst, clock=lambda: float(now), state=(level, at))
            wait = bucket.take()
            level, at = bucket.state
            await conn.execute(Q["update_rate_limit"], {"key": key, "level": level, "at": at})
            return lambda _events: wait, []

        result: float = await self._write(op)
        return result

    async def hold(self, task: str, seconds: float) -> bool:
        async def op(conn: AsyncConnection[Any]) -> Built:
            cursor = await conn.execute(Q["hold_task"],
                                        {"task": task, "node": self.node, "seconds": seconds})
            held = await cursor.fetchone() is not None
            return lambda _events: held, []

        result: bool = await self._write(op)
        return result

    # -- reads ------------------------------------------------------------------------

    async def _read(self, query: str, params: dict[str, Any] | None = None) -> list[Any]:
        if self._pool is None:
            raise Unavailable("the store is closed", retry_after=RETRY_AFTER_STORAGE_ERROR)
        try:
            async with self._pool.connection() as conn:
                cursor = await conn.execute(query, params)
                return await cursor.fetchall()
        except (psycopg.Error, OSError) as exc:
            log.error("database read failed: %s", _reason(exc))
            raise Unavailable(f"storage is not readable: {_reason(exc)}",
                              retry_after=RETRY_AFTER_STORAGE_ERROR) from exc

    async def _read_value(self, query: str, params: dict[str, Any] | None = None) -> Any:
        rows = await self._read(query, params)
        return rows[0][0] if rows else None

    async def _read_job(self, query: str, params: dict[str, Any]) -> JobRecord | None:
        rows = await self._read(query, params)
        return job_record(rows[0]) if rows else None

    async def get_job(self, job_id: str) -> JobRecord | None:
        return await self._read_job(Q["select_job"], {"id": job_id})

    async def job_by_idempotency_key(self, principal: str, key: str) -> JobRecord | None:
        return await self._read_job(Q["select_job_by_key"], {"principal": principal, "key": key})

    async def list_jobs(
        self, *, principal: str | None, states: Sequence[JobState], types: Sequence[str],
        before: str | None, limit: int, tags: Sequence[str] = (),
    ) -> list[JobRecord]:
        params = {"principal": principal, "any_state": not states, "states": _texts(states),
                  "any_type": not types, "types": _texts(types), "before": before,
                  "limit": limit, "any_tag": not tags, "tags": sorted(set(tags)),
                  "tag_count": len(set(tags))}
        return [job_record(row) for row in await self._read(Q["list_jobs"], params)]

    async def jobs_in_state(self, state: JobState) -> list[JobRecord]:
        rows = await self._read(Q["jobs_in_state"], {"state": state.value})
        return [job_record(row) for row in rows]

    async def next_run_at(self, limits: Limits | None = None) -> float | None:
        full: list[str] = []
        if limits:
            rows = await self._read(Q["busy_of_types"], {"types": sorted(limits)})
            full = sorted(set(limits) - set(rooms(limits, {r[0]: int(r[1]) for r in rows}, 1)))
        value = await self._read_value(Q["next_run_at"], {"full": full})
        return None if value is None else float(value)

    async def job_counts(self, principal: str | None = None) -> list[tuple[str, str, int]]:
        rows = await (self._read(Q["job_counts"]) if principal is None else
                      self._read(Q["principal_job_counts"], {"principal": principal}))
        return [(row[0], row[1], int(row[2])) for row in rows]

    async def job_events(self, job_id: str, after_seq: int, limit: int) -> list[Event]:
        rows = await self._read(Q["job_events"], {"id": job_id, "after": after_seq,
                                                  "limit": limit})
        return [event_record(row) for row in rows]

    async def all_events(self, after_id: int, limit: int, principal: str | None) -> list[Event]:
        rows = await self._read(Q["all_events"], {"after": after_id, "limit": limit,
                                                  "principal": principal})
        return [event_record(row) for row in rows]

    async def count_active(self, principal: str) -> int:
        return int(await self._read_value(Q["count_active"],
                                          {"principal": principal, "states": ACTIVE}))

    async def last_event_id(self) -> int:
        return int(await self._read_value(Q["last_event_id"]))

    async def finished_before(self, cutoff: float, limit: int) -> list[str]:
        rows = await self._read(Q["finished_before"], {"cutoff": cutoff, "limit": limit})
        return [row[0] for row in rows]

    async def next_delivery_at(self) -> float | None:
        value = await self._read_value(Q["next_delivery_at"])
        return None if value is None else float(value)

    async def job_deliveries(self, job_id: str) -> tuple[list[Delivery], list[DeliveryAttempt]]:
        deliveries = await self._read(Q["job_deliveries"], {"id": job_id})
        attempts = await self._read(Q["job_delivery_attempts"], {"id": job_id})
        return [delivery_record(r) for r in deliveries], [attempt_record(r) for r in attempts]

    async def ping(self) -> None:
        await self._read_value(Q["ping"])

    async def writable(self) -> None:
        """Refused while the newest write transaction failed (until one commits), and while
        the server takes no writes at all (a standby, or read-only by setting)."""
        if self._write_refused is not None:
            raise Unavailable(self._write_refused, retry_after=RETRY_AFTER_STORAGE_ERROR)
        if await self._read_value(Q["read_only"]):
            raise Unavailable("the database is read-only (a standby, or "
                              "default_transaction_read_only)",
                              retry_after=RETRY_AFTER_STORAGE_ERROR)


async def _job_row(conn: AsyncConnection[Any], query: str,
                   params: dict[str, Any]) -> JobRecord | None:
    row = await (await conn.execute(query, params)).fetchone()
    return None if row is None else job_record(row)


async def _insert_deliveries(conn: AsyncConnection[Any],
                             deliveries: Iterable[tuple[Event, str | None]]) -> None:
    """Store webhook deliveries in their events' transaction: a webhook can only go out for
    a stored event, and none is lost in a crash."""
    now = time.time()
    rows = [{"job_id": event.job_id, "seq": event.seq, "event": event.name.value, "url": url,
             "now": now} for event, url in deliveries if url is not None]
    if rows:
        async with conn.cursor() as cursor:
            await cursor.executemany(Q["insert_delivery"], rows)


def _texts(values: Iterable[str]) -> list[str]:
    return [str(value) for value in values]


def _reason(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _unavailable(exc: BaseException) -> Unavailable:
    return Unavailable(f"storage is not writable: {_reason(exc)}",
                       retry_after=RETRY_AFTER_STORAGE_ERROR)
