"""The SQLite store: one database file in WAL mode, one writer, group commit.

All writes go through a single writer task. It takes every write request waiting at
that moment and applies them in one transaction, so under load many progress events
cost one commit (group commit), and an event's ``seq`` and global ``id`` are assigned
without races. The listener hears a transaction's events only after it has committed.

The writer's connection lives on a thread of its own, and a whole transaction, ``BEGIN``
to ``COMMIT`` with every write op in between, runs there in one call: one trip between
the event loop and the thread per transaction. (aiosqlite makes every statement its own
trip; a write op of three statements then cost six thread switches, and batches of
submissions held up the claims and outcomes of running jobs behind them.) Reads are one
statement each and use a second connection through aiosqlite, which WAL lets run
alongside the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import orjson

from sse_jobs.errors import SseJobsError, Unavailable
from sse_jobs.events import EventDraft, event_data, iso, progress_data
from sse_jobs.ratelimit import KeyedLimiter
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
Q = load_queries(__package__ or "sse_jobs.store.sqlite")
PRAGMAS = [Q["pragma_journal_mode"], Q["pragma_synchronous"], Q["pragma_temp_store"]]
RECORD = {event: Q[f"record_{event.value}"] for event in (
    EventName.RETRYING, EventName.COMPLETED, EventName.FAILED, EventName.CANCELLED)}
MAX_WRITES_PER_TRANSACTION = 512
# Rows per multi-row INSERT of events, largest first; 100 rows bind 500 variables, within
# even old SQLite builds' limit of 999.
EVENT_INSERT_SIZES = (100, 10, 1)
EVENT_COLUMNS = 5
# One INSERT of that many rows is one statement step for them all: insert_event with its
# VALUES group repeated (constant text; every value is still a bound parameter).
INSERT_EVENTS = {size: Q["insert_event"] + ", (?, ?, ?, ?, ?)" * (size - 1)
                 for size in EVENT_INSERT_SIZES}
RETRY_AFTER_STORAGE_ERROR = 5
QUEUE_FULL_RETRY_AFTER = 5
TERMINAL = orjson.dumps(sorted(TERMINAL_STATES)).decode()
ACTIVE = orjson.dumps(sorted(ACTIVE_STATES)).decode()

# A write: runs on the writer thread inside its transaction, returns its value and the
# events it stored.
WriteOp = Callable[[sqlite3.Connection], tuple[Any, list[Event]]]


class SQLiteStore(Store):
    """Jobs and events in one SQLite file."""

    def __init__(self, path: Path, *, busy_timeout: float = 5.0) -> None:
        self.path = path
        self._busy_timeout = busy_timeout
        self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._writer: sqlite3.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._pending: deque[tuple[WriteOp, asyncio.Future[Any]]] = deque()
        self._wakeup = asyncio.Event()
        self._writer_task: asyncio.Task[None] | None = None
        self._listener: EventListener = lambda events: None
        self._next_event_id = 1
        self._closing = False
        self._lock_fd: int | None = None
        self._limiters: dict[tuple[float, float], KeyedLimiter] = {}
        # Why the newest write transaction failed on storage (None: it committed).
        self._write_refused: str | None = None

    async def open(self, listener: EventListener | None) -> None:
        if listener is not None:
            self._listener = listener
        self._lock_database()
        try:
            self._writer = await asyncio.get_running_loop().run_in_executor(
                self._writer_thread, self._open_writer)
            self._reader = await aiosqlite.connect(self.path, isolation_level=None,
                                                   timeout=self._busy_timeout)
            self._reader.row_factory = sqlite3.Row
            for pragma in [*PRAGMAS, Q["pragma_query_only"]]:
                await self._reader.execute(pragma)
        except sqlite3.Error as exc:
            await self.close()
            raise Unavailable(f"cannot open database {self.path}: {exc}") from exc
        self._writer_task = asyncio.create_task(self._run_writer(), name="sqlite-writer")

    def _lock_database(self) -> None:
        """Hold an exclusive lock beside the database for as long as the store is open: the
        single-writer design (event ids assigned in memory) allows one server per file.
        The kernel drops the lock when the process dies, even on kill -9."""
        fd = os.open(f"{self.path}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Unavailable(f"another sse-jobs server is using {self.path}") from None
        self._lock_fd = fd

    async def close(self) -> None:
        self._closing = True
        self._wakeup.set()
        if self._writer_task is not None:
            await self._writer_task
            self._writer_task = None
        if self._reader is not None:
            await self._reader.close()
            self._reader = None
        if self._writer is not None:
            await self.on_writer_thread(sqlite3.Connection.close)
            self._writer = None
        self._writer_thread.shutdown()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def on_writer_thread(self, call: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``call`` with the writer's connection, on the thread that owns it."""
        assert self._writer is not None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer_thread, call, self._writer)

    def _open_writer(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=self._busy_timeout)
        try:
            conn.row_factory = sqlite3.Row
            for pragma in PRAGMAS:
                conn.execute(pragma)
            self._migrate(conn)
            conn.execute(Q["release_all"])  # one server per file: the last one is gone
            self._next_event_id = 1 + _scalar(conn, Q["next_event_id"])
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Apply the migrations newer than the database's ``user_version``, each in one
        transaction with the version it brings: a migration is applied whole or not at all."""
        for version, script in load_migrations(__package__ or "sse_jobs.store.sqlite"):
            if version <= _scalar(conn, Q["user_version"]):
                continue
            try:
                # executescript runs the script's statements as SQLite parses them (no
                # splitting on ";" that a string literal or trigger body could contain).
                conn.executescript(f"BEGIN IMMEDIATE;\n{script}\n"
                                   f"PRAGMA user_version = {version:d};\nCOMMIT;")
            except sqlite3.Error:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            log.info("database %s migrated to schema version %d", self.path, version)

    # -- the writer -------------------------------------------------------------------

    async def _write(self, op: WriteOp) -> Any:
        if self._closing:
            raise Unavailable("the store is closing", retry_after=RETRY_AFTER_STORAGE_ERROR)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((op, future))
        self._wakeup.set()
        # Shielded: a caller that goes away (client disconnect) must not cancel a write
        # that may already be committed; the writer settles the future either way.
        return await asyncio.shield(future)

    async def _run_writer(self) -> None:
        while self._pending or not self._closing:
            if not self._pending:
                await self._wakeup.wait()
                self._wakeup.clear()
                continue
            count = min(len(self._pending), MAX_WRITES_PER_TRANSACTION)
            batch = [self._pending.popleft() for _ in range(count)]
            await self._commit(batch)

    async def _commit(self, batch: list[tuple[WriteOp, asyncio.Future[Any]]]) -> None:
        # Every future of the batch is settled whatever fails here: a writer task that died
        # would leave every later write, and so a graceful shutdown, waiting for ever.
        ops = [op for op, _future in batch]
        try:
            outcomes, events = await self.on_writer_thread(
                lambda conn: self._transaction(conn, ops))
        except Exception as exc:  # the thread could not run it at all: every caller hears
            log.exception("database writer failed, %d requests refused", len(ops))
            outcomes, events = [exc] * len(ops), []
        if events:
            try:
                self._listener(events)
            except Exception:  # stored all the same: streams catch up by replay
                log.exception("handing %d committed events to the listener failed",
                              len(events))
        for (_op, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    def _transaction(
        self, conn: sqlite3.Connection, ops: list[WriteOp]
    ) -> tuple[list[Any], list[Event]]:
        """Apply ``ops`` in one transaction, on the writer thread: each op's value (or the
        error that refused it) and the events stored, none if the transaction failed."""
        outcomes: list[Any] = []
        events: list[Event] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op in ops:
                try:
                    value, stored = op(conn)
                except SseJobsError as refusal:  # refused before writing anything
                    outcomes.append(refusal)
                    continue
                outcomes.append(value)
                events.extend(stored)
            conn.execute("COMMIT")
        except Exception as exc:  # the writer must outlive any one batch
            log.error("database write failed, %d requests refused: %s", len(ops), exc,
                      exc_info=not isinstance(exc, sqlite3.Error))  # a bug: its traceback
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            with contextlib.suppress(sqlite3.Error):
                self._next_event_id = 1 + _scalar(conn, Q["next_event_id"])
            if not isinstance(exc, sqlite3.Error):
                return [exc] * len(ops), []
            self._write_refused = f"storage is not writable: {exc}"
            error = Unavailable(self._write_refused, retry_after=RETRY_AFTER_STORAGE_ERROR)
            return [error] * len(ops), []
        self._write_refused = None
        return outcomes, events

    def _new_event(
        self, job_id: str, seq: int, name: EventName, data: bytes, principal: str
    ) -> Event:
        event = Event(self._next_event_id, job_id, seq, name, data, principal)
        self._next_event_id += 1
        return event

    @staticmethod
    def _event_row(event: Event) -> tuple[Any, ...]:
        return (event.id, event.job_id, event.seq, event.name.value, event.data)

    # -- writes -----------------------------------------------------------------------

    def _store_event(self, conn: sqlite3.Connection, job_id: str, seq: int,
                     draft: EventDraft, principal: str) -> Event:
        """Give ``draft`` its global id, store it, and the delivery it calls for."""
        event = self._new_event(job_id, seq, draft.name, event_data(job_id, seq, draft),
                                principal)
        conn.execute(Q["insert_event"], self._event_row(event))
        if draft.webhook is not None:
            _insert_deliveries(conn, [(event, draft.webhook)])
        return event

    async def create_jobs(self, news: Sequence[NewJob],
                          max_queued: int) -> list[tuple[JobRecord, bool] | SseJobsError]:
        def op(conn: sqlite3.Connection) -> tuple[list[Any], list[Event]]:
            outcomes: list[tuple[JobRecord, bool] | SseJobsError] = []
            stored: list[Event] = []
            for new in news:
                outcome, event = self._create(conn, new, max_queued)
                outcomes.append(outcome)
                stored += event
            return outcomes, stored

        result: list[tuple[JobRecord, bool] | SseJobsError] = await self._write(op)
        return result

    def _create(self, conn: sqlite3.Connection, new: NewJob, max_queued: int
                ) -> tuple[tuple[JobRecord, bool] | SseJobsError, list[Event]]:
        if new.idempotency_key is not None:
            existing = _fetch_job(conn, Q["select_job_by_key"],
                                  (new.principal, new.idempotency_key))
            if existing is not None:
                return (existing, False), []
        queued, ahead = conn.execute(Q["queue_depth"], {
            "priority": new.priority, "id": new.id}).fetchone()
        if queued >= max_queued:
            return Unavailable("the job queue is full", retry_after=QUEUE_FULL_RETRY_AFTER), []
        record = _fetch_job(conn, Q["insert_job"], {
            "id": new.id, "type": new.type, "params": orjson.dumps(new.params).decode(),
            "priority": new.priority, "max_attempts": new.max_attempts,
            "timeout": new.timeout, "created_at": new.created_at,
            "idempotency_key": new.idempotency_key, "request_hash": new.request_hash,
            "principal": new.principal, "callback_url": new.callback_url,
            "callback_events": new.callback_events, "rerun_of": new.rerun_of,
            "run_at": new.run_at, "tags": _json_list(new.tags),
        })
        assert record is not None
        if new.tags:
            conn.execute(Q["insert_tags"], {"id": new.id, "tags": _json_list(new.tags)})
        first = new.first_event(ahead + 1)
        return (record, True), [self._store_event(conn, new.id, 1, first, new.principal)]

    async def record(self, job_id: str, change: Change) -> tuple[JobRecord, Event]:
        def op(conn: sqlite3.Connection) -> tuple[tuple[JobRecord, Event], list[Event]]:
            record = _fetch_job(conn, RECORD[change.name], {
                "id": job_id, "allowed": _json_list(change.allowed),
                "state": change.state.value, "at": change.event.at,
                "error": None if change.error is None else orjson.dumps(change.error).decode(),
                "result": change.result, "result_file": change.result_file,
                "not_before": change.not_before, "refund": int(change.refund_attempt),
                "attempt": None if change.fence is None else change.fence.attempt,
            })
            if record is None:
                raise refusal(job_id, _scalar(conn, Q["select_state"], (job_id,)), change)
            event = self._store_event(conn, job_id, record.last_event_id, change.event,
                                      record.principal)
            return (record, event), [event]

        result: tuple[JobRecord, Event] = await self._write(op)
        return result

    async def record_progress(self, updates: Sequence[ProgressUpdate]) -> list[Event]:
        # The hottest write: a flooding job sends tens of thousands of these a second, so
        # the rows are built in one pass with nothing made twice.
        def op(conn: sqlite3.Connection) -> tuple[list[Event], list[Event]]:
            events: list[Event] = []
            values: list[Any] = []  # the rows' columns, one after another
            deliveries: list[tuple[Event, str]] = []
            last_at, at_text = None, None
            for (job_id, attempt), group in by_attempt(updates).items():
                last = group[-1]
                row = _first_row(conn, Q["progress"], {
                    "id": job_id, "attempt": attempt, "progress": last.progress,
                    "message": last.message, "count": len(group),
                })
                if row is None:
                    continue  # the attempt has ended; its late progress is moot
                seq, principal = row[0] - len(group) + 1, row[1]
                ident = self._next_event_id
                for _job, _attempt, progress, message, eta, at, webhook in group:
                    if at != last_at:
                        last_at, at_text = at, iso(at)
                    data = progress_data(job_id, seq, at_text, progress, message, eta)
                    event = Event(ident, job_id, seq, EventName.PROGRESS, data, principal)
                    events.append(event)
                    values += (ident, job_id, seq, "progress", data)
                    if webhook is not None:
                        deliveries.append((event, webhook))
                    ident += 1
                    seq += 1
                self._next_event_id = ident
            _insert_events(conn, values)
            _insert_deliveries(conn, deliveries)
            return events, events

        result: list[Event] = await self._write(op)
        return result

    # -- one node: no leases, nobody else to hear from ------------------------------------

    def on_cancel(self, callback: Callable[[str], None]) -> None:
        """Never called: every cancel is requested on this one node."""

    def on_queued(self, callback: Callable[[int | None], None]) -> None:
        """Never called: every job is queued on this one node."""

    async def renew_leases(self, job_ids: Sequence[str]) -> dict[str, bool]:
        rows = await self._read(Q["processing_of"], {"ids": _json_list(job_ids)})
        return {row[0]: bool(row[1]) for row in rows}

    async def expired_attempts(self, limit: int) -> list[JobRecord]:
        return []  # a dead process's attempts are recovered when the next one starts

    async def take_token(self, key: str, rate: float, burst: float) -> float:
        limiter = self._limiters.get((rate, burst))
        if limiter is None:
            limiter = self._limiters[(rate, burst)] = KeyedLimiter(rate, burst)
        return limiter.take(key)

    async def hold(self, task: str, seconds: float) -> bool:
        return True

    async def request_cancel(self, job_id: str) -> JobRecord | None:
        def op(conn: sqlite3.Connection) -> tuple[JobRecord | None, list[Event]]:
            return _fetch_job(conn, Q["request_cancel"], (job_id,)), []

        result: JobRecord | None = await self._write(op)
        return result

    async def reserve(self, now: float, limit: int, limits: Limits | None = None
                      ) -> list[JobRecord]:
        limited = dict(limits or {})

        def op(conn: sqlite3.Connection) -> tuple[list[JobRecord], list[Event]]:
            candidates = conn.execute(Q["reserve_candidates"], {
                "now": now, "limit": limit, "limited": _json_list(limited)}).fetchall()
            if limited:
                busy = {row[0]: row[1] for row in conn.execute(
                    Q["busy_of_types"], {"types": _json_list(limited)})}
                for name, room in rooms(limited, busy, limit).items():
                    candidates += conn.execute(Q["reserve_candidates_of_type"], {
                        "type": name, "now": now, "limit": room}).fetchall()
            ids = best(candidates, limit)
            rows = conn.execute(Q["reserve"], {"ids": _json_list(ids)}).fetchall() if ids else []
            return sorted(map(job_record, rows), key=lambda r: (-r.priority, r.id)), []

        result: list[JobRecord] = await self._write(op)
        return result

    async def start(self, job_id: str, at: float, draft: DraftFor) -> tuple[JobRecord, Event]:
        def op(conn: sqlite3.Connection) -> tuple[tuple[JobRecord, Event], list[Event]]:
            record = _fetch_job(conn, Q["start"], {"id": job_id, "now": at})
            if record is None:
                state = _scalar(conn, Q["select_state"], (job_id,))
                raise refusal(job_id, state, None)
            made = draft(record)
            event = self._store_event(conn, job_id, record.last_event_id, made,
                                      record.principal)
            return (record, event), [event]

        result: tuple[JobRecord, Event] = await self._write(op)
        return result

    async def release(self, job_ids: Sequence[str]) -> None:
        def op(conn: sqlite3.Connection) -> tuple[None, list[Event]]:
            conn.execute(Q["release"], {"ids": _json_list(job_ids)})
            return None, []

        if job_ids:
            await self._write(op)

    async def delete_job(self, job_id: str) -> bool:
        def op(conn: sqlite3.Connection) -> tuple[bool, list[Event]]:
            row = _first_row(conn, Q["delete_job"], {"id": job_id, "states": TERMINAL})
            if row is not None:
                for name in ("delete_events", "delete_attempts", "delete_deliveries",
                             "delete_tags"):
                    conn.execute(Q[name], (job_id,))
            return row is not None, []

        result: bool = await self._write(op)
        return result

    async def release_deliveries(self, delivery_ids: Sequence[int], now: float) -> None:
        def op(conn: sqlite3.Connection) -> tuple[None, list[Event]]:
            conn.execute(Q["release_deliveries"], {"ids": orjson.dumps(list(delivery_ids)).decode(),
                                                   "now": now})
            return None, []

        if delivery_ids:
            await self._write(op)

    async def record_attempt(self, attempt: DeliveryAttempt, state: str,
                             next_attempt_at: float) -> None:
        def op(conn: sqlite3.Connection) -> tuple[None, list[Event]]:
            params = {"id": attempt.delivery_id, "number": attempt.number, "at": attempt.at,
                      "status": attempt.status, "error": attempt.error,
                      "duration": attempt.duration, "state": state,
                      "next_attempt_at": next_attempt_at}
            conn.execute(Q["insert_attempt"], params)
            conn.execute(Q["update_delivery"], params)
            return None, []

        await self._write(op)

    async def retry_delivery(self, job_id: str, delivery_id: int, now: float) -> Delivery | None:
        def op(conn: sqlite3.Connection) -> tuple[Delivery | None, list[Event]]:
            row = _first_row(conn, Q["retry_delivery"],
                             {"id": delivery_id, "job_id": job_id, "now": now})
            return (None if row is None else delivery_record(row)), []

        result: Delivery | None = await self._write(op)
        return result

    # -- reads ------------------------------------------------------------------------

    async def _read(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        """One statement on the reader connection, run to its end: an unfinished SELECT
        would keep its read transaction open, and with it an old WAL snapshot for every
        later read."""
        if self._reader is None:
            raise Unavailable("the store is closed", retry_after=RETRY_AFTER_STORAGE_ERROR)
        try:
            return list(await self._reader.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            log.error("database read failed: %s", exc)
            raise Unavailable(f"storage is not readable: {exc}",
                              retry_after=RETRY_AFTER_STORAGE_ERROR) from exc

    async def _read_value(self, sql: str, params: Any = ()) -> Any:
        rows = await self._read(sql, params)
        return rows[0][0] if rows else None

    async def _read_job(self, sql: str, params: Any) -> JobRecord | None:
        rows = await self._read(sql, params)
        return job_record(rows[0]) if rows else None

    async def get_job(self, job_id: str) -> JobRecord | None:
        return await self._read_job(Q["select_job"], (job_id,))

    async def job_by_idempotency_key(self, principal: str, key: str) -> JobRecord | None:
        return await self._read_job(Q["select_job_by_key"], (principal, key))

    async def list_jobs(
        self, *, principal: str | None, states: Sequence[JobState], types: Sequence[str],
        before: str | None, limit: int, tags: Sequence[str] = (),
    ) -> list[JobRecord]:
        params = {"principal": principal, "any_state": not states, "states": _json_list(states),
                  "any_type": not types, "types": _json_list(types),
                  "before": before, "limit": limit, "any_tag": not tags,
                  "tags": _json_list(set(tags)), "tag_count": len(set(tags))}
        return [job_record(row) for row in await self._read(Q["list_jobs"], params)]

    async def jobs_in_state(self, state: JobState) -> list[JobRecord]:
        return [job_record(row) for row in await self._read(Q["jobs_in_state"], (state.value,))]

    async def next_run_at(self, limits: Limits | None = None) -> float | None:
        full: list[str] = []
        if limits:
            busy = {row[0]: row[1] for row in await self._read(
                Q["busy_of_types"], {"types": _json_list(limits)})}
            full = sorted(set(limits) - set(rooms(limits, busy, 1)))
        value = await self._read_value(Q["next_run_at"], {"full": _json_list(full)})
        return None if value is None else float(value)

    async def job_counts(self, principal: str | None = None) -> list[tuple[str, str, int]]:
        rows = await (self._read(Q["job_counts"]) if principal is None
                      else self._read(Q["principal_job_counts"], (principal,)))
        return [(row[0], row[1], row[2]) for row in rows]

    async def job_events(self, job_id: str, after_seq: int, limit: int) -> list[Event]:
        return [event_record(row) for row in await self._read(Q["job_events"],
                                                        (job_id, after_seq, limit))]

    async def all_events(self, after_id: int, limit: int, principal: str | None) -> list[Event]:
        params = {"after": after_id, "limit": limit, "principal": principal}
        return [event_record(row) for row in await self._read(Q["all_events"], params)]

    async def count_active(self, principal: str) -> int:
        result: int = await self._read_value(
            Q["count_active"], {"principal": principal, "states": ACTIVE})
        return result

    async def secret(self, name: str, new: Callable[[], bytes]) -> bytes:
        def op(conn: sqlite3.Connection) -> tuple[bytes, list[Event]]:
            conn.execute(Q["insert_secret"], (name, new()))
            return _scalar(conn, Q["select_secret"], (name,)), []

        result: bytes = await self._write(op)
        return result

    async def last_event_id(self) -> int:
        result: int = await self._read_value(Q["last_event_id"])
        return result

    async def finished_before(self, cutoff: float, limit: int) -> list[str]:
        return [row[0] for row in await self._read(Q["finished_before"], (cutoff, limit))]

    async def claim_deliveries(self, now: float, limit: int, hold: float) -> list[Delivery]:
        def op(conn: sqlite3.Connection) -> tuple[list[Delivery], list[Event]]:
            rows = conn.execute(Q["claim_deliveries"],
                                {"now": now, "limit": limit, "until": now + hold}).fetchall()
            return sorted((delivery_record(row) for row in rows),
                          key=lambda d: (d.next_attempt_at, d.id)), []

        result: list[Delivery] = await self._write(op)
        return result

    async def next_delivery_at(self) -> float | None:
        value = await self._read_value(Q["next_delivery_at"])
        return None if value is None else float(value)

    async def job_deliveries(
        self, job_id: str
    ) -> tuple[list[Delivery], list[DeliveryAttempt]]:
        deliveries = [delivery_record(row)
                      for row in await self._read(Q["job_deliveries"], (job_id,))]
        attempts = [attempt_record(row)
                    for row in await self._read(Q["job_delivery_attempts"], (job_id,))]
        return deliveries, attempts

    async def ping(self) -> None:
        await self._read_value(Q["ping"])

    async def writable(self) -> None:
        """A full disk shows only when a write needs room, so this reports the newest write
        transaction: refused until one commits again (the engine keeps retrying what it
        could not record, so this follows the disk)."""
        if self._closing:
            raise Unavailable("the store is closed", retry_after=RETRY_AFTER_STORAGE_ERROR)
        if self._write_refused is not None:
            raise Unavailable(self._write_refused, retry_after=RETRY_AFTER_STORAGE_ERROR)


def _insert_events(conn: sqlite3.Connection, values: Sequence[Any]) -> None:
    """Insert event rows, given as their columns one after another, a hundred rows to a
    statement. Each statement step releases and retakes the GIL, and with the event loop
    holding it meanwhile, a row at a time (``executemany``) made the writer wait for the
    GIL once per event."""
    start = 0
    for size in EVENT_INSERT_SIZES:
        width = size * EVENT_COLUMNS
        while len(values) - start >= width:
            conn.execute(INSERT_EVENTS[size], values[start:start + width])
            start += width


def _insert_deliveries(conn: sqlite3.Connection, deliveries: Sequence[tuple[Event, str]]) -> None:
    """Store webhook deliveries in their events' transaction: a webhook can only go out for
    a stored event, and none is lost in a crash."""
    if deliveries:
        now = time.time()
        conn.executemany(Q["insert_delivery"], [
            (event.job_id, event.seq, event.name.value, url, now, now)
            for event, url in deliveries])


def _json_list(values: Iterable[str]) -> str:
    return orjson.dumps([str(value) for value in values]).decode()


def _first_row(conn: sqlite3.Connection, sql: str, params: Any) -> sqlite3.Row | None:
    rows: list[sqlite3.Row] = conn.execute(sql, params).fetchall()
    return rows[0] if rows else None


def _scalar(conn: sqlite3.Connection, sql: str, params: Any = ()) -> Any:
    row = _first_row(conn, sql, params)
    return None if row is None else row[0]


def _fetch_job(conn: sqlite3.Connection, sql: str, params: Any) -> JobRecord | None:
    row = _first_row(conn, sql, params)
    return None if row is None else job_record(row)
