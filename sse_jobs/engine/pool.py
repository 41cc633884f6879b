"""The bounded process pool that runs job code, never on the event loop.

Built on pebble's ``ProcessPool``: unlike ``concurrent.futures.ProcessPoolExecutor`` it
can kill the one worker running a given task (on cancel or timeout) and replaces dead
workers without breaking the whole pool; loky can do neither for a single task.
Workers are started by a ``forkserver`` so they never inherit the server's threads or
open sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import pebble

from sse_jobs.jobs.channel import FRAME_HEADER
from sse_jobs.jobs.runtime import WorkerCall, init_worker, run_attempt

log = logging.getLogger(__name__)

# Linux fcntls; a larger pipe lets workers run ahead of short loop stalls.
F_SETPIPE_SZ, F_GETPIPE_SZ = 1031, 1032
PIPE_SIZE = 1 << 20
# One read of progress per loop wakeup: about 200 frames, which bounds how long handling
# them holds the event loop (and the GIL, which the store's writer thread wants too).
READ_SIZE = 16 * 1024

OutcomeKind = Literal["ok", "error", "cancelled", "timeout", "crashed", "killed"]
# One ``ctx.progress`` call, as received: job id, attempt, percent, message, receipt time.
# Plain arguments, not a record: tens of thousands arrive a second.
ProgressCallback = Callable[[str, int, float, str | None, float], None]
# An attempt began to run in a worker: job id, attempt, receipt time.
StartCallback = Callable[[str, int, float], None]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt ended.

    ``ok``: returned ``result`` (JSON bytes) and maybe a ``result_file``; ``error``: raised
    ``exception``/``message``; ``cancelled``: stopped itself after a cancel request;
    ``timeout``/``killed``: killed by us; ``crashed``: its process died.
    """

    kind: OutcomeKind
    result: bytes | None = None
    result_file: str | None = None
    exception: str | None = None
    message: str | None = None
    traceback: str | None = None


@dataclass(slots=True)
class _Running:
    slot: int
    future: Future[Any]


class WorkerPool:
    """Runs at most ``workers`` attempts at once and streams what they report to callbacks.

    It takes an attempt only when a worker is free: an attempt waiting in pebble's queue
    could not be taken back for sure (pebble may already have passed it to a worker), so
    attempts waiting for a worker wait in the engine."""

    def __init__(self, workers: int, *, debug: bool = False,
                 preload: Sequence[str] = ()) -> None:
        """``preload``: modules the forkserver imports once (the job types' modules), so
        that each new worker starts with them loaded."""
        self.workers = workers
        self._debug = debug
        self._preload = ["sse_jobs.jobs.runtime", *preload]
        self._free_slots = list(range(workers))
        self._running: dict[str, _Running] = {}
        self._ctx = multiprocessing.get_context("forkserver")
        self._cancel_flags: Any = self._ctx.RawArray("b", workers)
        self._reader, self._writer = self._ctx.Pipe(duplex=False)
        # Workers get the read end; the write end stays here, never written to: the kernel
        # closes it when this process exits, however it exits, and the workers follow.
        self._lifeline_reader, self._lifeline_writer = self._ctx.Pipe(duplex=False)
        self._buffer = bytearray()
        self._pool: pebble.ProcessPool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_progress: ProgressCallback | None = None
        self._on_start: StartCallback | None = None
        self._reading = False
        self._worker_pids: set[int] = set()
        self._settling: set[asyncio.Task[None]] = set()
        self._pipe_size = READ_SIZE

    @property
    def free(self) -> int:
        """How many more attempts can start now."""
        return len(self._free_slots)

    @property
    def alive(self) -> bool:
        return self._pool is not None and self._pool.active

    def workers_alive(self) -> int:
        """Worker processes that announced themselves and still exist."""
        for pid in list(self._worker_pids):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                self._worker_pids.discard(pid)
            except PermissionError:
                pass  # alive, but no longer ours to signal
        return len(self._worker_pids)

    def start(self, on_start: StartCallback, on_progress: ProgressCallback) -> None:
        """Start the workers; ``on_start`` is called on the event loop when an attempt
        begins to run, ``on_progress`` for each of its reports."""
        self._loop = asyncio.get_running_loop()
        self._on_start, self._on_progress = on_start, on_progress
        self._ctx.set_forkserver_preload(self._preload)
        with contextlib.suppress(OSError):
            fcntl.fcntl(self._writer.fileno(), F_SETPIPE_SZ, PIPE_SIZE)
        self._pipe_size = fcntl.fcntl(self._writer.fileno(), F_GETPIPE_SZ)
        os.set_blocking(self._reader.fileno(), False)
        self._pool = pebble.ProcessPool(
            max_workers=self.workers, initializer=init_worker,
            initargs=(self._writer, self._cancel_flags, self._lifeline_reader),
            context=self._ctx,
        )
        self.resume_reading()

    def run(self, call: WorkerCall, timeout: float) -> asyncio.Future[Outcome]:
        """Start an attempt in a free slot (the caller checks ``free``); ``on_start`` says
        when it runs, ``timeout`` counts from then."""
        assert self._pool is not None
        assert self._loop is not None
        slot = self._free_slots.pop()
        self._cancel_flags[slot] = 0
        call = dataclasses.replace(call, slot=slot)
        outcome: asyncio.Future[Outcome] = self._loop.create_future()
        try:
            future = self._pool.schedule(run_attempt, args=(call, self._debug), timeout=timeout)
        except BaseException:  # refused (a pool that is no longer running): slot unused
            self._free_slots.append(slot)
            raise
        self._running[call.job_id] = _Running(slot, future)
        loop = self._loop

        def finished(done: Future[Any]) -> None:
            loop.call_soon_threadsafe(self._finish, call.job_id, done, outcome)

        future.add_done_callback(finished)
        return outcome

    def request_cancel(self, job_id: str) -> bool:
        """Ask a running attempt to stop at its next ``ctx.progress``; False if not running."""
        running = self._running.get(job_id)
        if running is None:
            return False
        self._cancel_flags[running.slot] = 1
        return True

    def kill(self, job_id: str) -> None:
        """Kill the worker running ``job_id`` now; pebble starts a replacement."""
        running = self._running.get(job_id)
        if running is not None:
            running.future.cancel()

    def pause_reading(self) -> None:
        """Stop reading progress; workers block on a full pipe, which is the backpressure."""
        if self._reading and self._loop is not None:
            self._loop.remove_reader(self._reader.fileno())
            self._reading = False

    def resume_reading(self) -> None:
        if not self._reading and self._loop is not None and self._pool is not None:
            self._loop.add_reader(self._reader.fileno(), self._read_progress)
            self._reading = True

    async def close(self) -> None:
        """Kill every worker and release the pipe; running attempts end as ``killed``.
        Idempotent."""
        if self._pool is None:
            return
        self.pause_reading()
        pool, self._pool = self._pool, None
        pool.stop()  # type: ignore[no-untyped-call]
        await asyncio.to_thread(pool.join, 10)
        for end in (self._reader, self._writer, self._lifeline_reader, self._lifeline_writer):
            end.close()

    def _finish(self, job_id: str, done: Future[Any], outcome: asyncio.Future[Outcome]) -> None:
        running = self._running.pop(job_id, None)
        if running is not None:
            self._free_slots.append(running.slot)
        assert self._loop is not None
        task = self._loop.create_task(self._settle(done, outcome))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(self, done: Future[Any], outcome: asyncio.Future[Outcome]) -> None:
        """Resolve the outcome once every progress frame of the attempt has been read.

        The frames were written before the result was sent, so they are among what the
        pipe holds now: reading up to its capacity (or until it is empty) gets them all.
        It is read a slice at a time, letting the loop run between slices."""
        budget = self._pipe_size
        while budget > 0 and self._pool is not None:
            read = self._read_progress()
            if read < READ_SIZE:
                break
            budget -= read
            await asyncio.sleep(0)
        if not outcome.done():
            outcome.set_result(_outcome_of(done))

    def _read_progress(self) -> int:
        """Read and dispatch one slice of frames; how many bytes were read."""
        try:
            chunk = os.read(self._reader.fileno(), READ_SIZE)
        except (BlockingIOError, OSError):
            return 0
        self._buffer += chunk
        self._dispatch_frames()
        return len(chunk)

    def _dispatch_frames(self) -> None:
        assert self._on_progress is not None
        assert self._on_start is not None
        buffer, offset, now = self._buffer, 0, time.time()
        length, header = len(buffer), FRAME_HEADER.size
        # Frames are decoded in place, through a view, rather than copied out one by one;
        # the view is released before the buffer is trimmed.
        with memoryview(buffer) as view:
            while length - offset >= header:
                (size,) = FRAME_HEADER.unpack_from(view, offset)
                end = offset + header + size
                if end > length:
                    break
                frame = orjson.loads(view[offset + header:end])
                offset = end
                if frame[0] == "p":
                    _kind, job_id, attempt, percent, message = frame
                    self._on_progress(job_id, attempt, percent, message, now)
                elif frame[0] == "s":
                    self._on_start(frame[1], frame[2], now)
                elif frame[0] == "w":
                    self._worker_pids.add(frame[1])
        del buffer[:offset]


def _outcome_of(done: Future[Any]) -> Outcome:
    try:
        value = done.result()
    except CancelledError:
        return Outcome("killed")
    except TimeoutError:
        return Outcome("timeout")
    except pebble.ProcessExpired as exc:
        return Outcome("crashed", message=f"worker process exited with code {exc.exitcode}")
    except Exception as exc:  # noqa: BLE001 - e.g. params that cannot be pickled
        return Outcome("error", exception=type(exc).__name__, message=str(exc))
    if value[0] == "ok":
        return Outcome("ok", result=value[1], result_file=value[2])
    if value[0] == "cancelled":
        return Outcome("cancelled")
    return Outcome("error", exception=value[1], message=value[2], traceback=value[3])
