"""What runs inside a worker process: the ``JobContext`` a job sees, and the call wrapper.

Progress travels to the server over one pipe shared by all workers. Each message is a
single ``os.write`` of at most ``PIPE_BUF`` bytes, which POSIX makes atomic, so workers need
no lock to share it — a worker killed mid-job can never leave a lock held or half a
message in the pipe. Cancellation travels the other way as one shared byte per pool slot.

A second pipe is the lifeline: the server holds its only write end and never writes, so a
worker reads end-of-file exactly when the server is gone, even after kill -9, and exits
instead of running an orphaned attempt to its end (the next server runs it again).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import struct
import threading
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from sse_jobs.errors import JobCancelled
from sse_jobs.registry import REGISTRY

MAX_MESSAGE_CHARS = 500  # keeps every frame under PIPE_BUF (4096) even fully escaped
FRAME_HEADER = struct.Struct("!I")

_channel_fd: int | None = None
_cancel_flags: Any = None


ORPHANED_EXIT_CODE = 70


def init_worker(channel: Connection, cancel_flags: Any, lifeline: Connection) -> None:
    """Pool initializer: remember the progress pipe and the cancel flags of this process,
    and watch the lifeline."""
    global _channel_fd, _cancel_flags  # noqa: PLW0603 - per-process state set once at start
    # Ctrl-C reaches the whole foreground process group; the server, not the job, decides
    # what happens to a running attempt on shutdown.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _channel_fd = channel.fileno()
    _cancel_flags = cancel_flags
    threading.Thread(target=_exit_when_server_is_gone, args=(lifeline.fileno(),),
                     name="lifeline", daemon=True).start()
    _send(["w", os.getpid()])  # lets the server count live workers


def _exit_when_server_is_gone(lifeline_fd: int) -> None:
    with contextlib.suppress(OSError):
        os.read(lifeline_fd, 1)  # returns only at end-of-file: the server has exited
    os._exit(ORPHANED_EXIT_CODE)


def _send(message: list[Any]) -> None:
    body = orjson.dumps(message)
    frame = FRAME_HEADER.pack(len(body)) + body
    assert len(frame) <= 4096, "progress frames must stay atomic"
    if _channel_fd is not None:
        os.write(_channel_fd, frame)


@dataclass(frozen=True, slots=True)
class WorkerCall:
    """Everything a worker needs to run one attempt; plain data, cheap to pickle."""

    job_id: str
    attempt: int
    type_name: str
    module: str
    params: dict[str, Any]
    slot: int
    result_dir: str


class JobContext:
    """The job's handle on the server: report progress, notice cancellation, write results."""

    def __init__(self, call: WorkerCall) -> None:
        self.job_id = call.job_id
        self.attempt = call.attempt
        self._call = call
        self.result_file: str | None = None

    @property
    def cancelled(self) -> bool:
        """True once the job has been asked to stop; long loops should check it."""
        return bool(_cancel_flags is not None and _cancel_flags[self._call.slot])

    def progress(self, percent: float, message: str | None = None) -> None:
        """Report ``percent`` (0-100) done; raises ``JobCancelled`` if the job was cancelled."""
        value = float(percent)
        if math.isnan(value):
            raise ValueError("progress percent must be a number, not NaN")
        value = min(100.0, max(0.0, value))
        text = None if message is None else str(message)[:MAX_MESSAGE_CHARS]
        _send(["p", self.job_id, self.attempt, value, text])
        if self.cancelled:
            raise JobCancelled(self.job_id)

    def result_path(self, name: str) -> Path:
        """A path for a result file called ``name``; its contents become the job's result."""
        if (not name or name in {".", ".."} or "/" in name or "\\" in name
                or not name.isprintable() or len(name) > 255):
            raise ValueError(f"result file name {name!r} must be a plain, printable file name")
        directory = Path(self._call.result_dir) / self.job_id
        directory.mkdir(parents=True, exist_ok=True)
        self.result_file = name
        return directory / name


def run_attempt(call: WorkerCall, debug: bool) -> tuple[Any, ...]:
    """Run one attempt and describe how it ended; never raises, so any exception travels.

    Returns ``("ok", result_json, result_file)``, ``("cancelled",)`` or
    ``("error", exception_class, message, traceback_or_None)``.
    """
    ctx = JobContext(call)
    try:
        job_type = REGISTRY.load(call.module, call.type_name)
        params = job_type.params.model_validate(call.params)
        value = job_type.func(ctx, params)
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        return ("ok", orjson.dumps(value), ctx.result_file)
    except JobCancelled:
        return ("cancelled",)
    except Exception as exc:  # noqa: BLE001 - every failure of job code is reported, not raised
        return ("error", type(exc).__name__, str(exc)[:2000],
                traceback.format_exc() if debug else None)
