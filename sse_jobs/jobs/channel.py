"""The channel between worker processes and the server: progress frames one way, a
cancel flag per pool slot the other.

Progress travels over one pipe shared by all workers. Each frame is a single
``os.write`` of at most ``PIPE_BUF`` bytes, which POSIX makes atomic, so workers need no
lock to share it: a worker killed mid-job can never leave a lock held or half a frame in
the pipe. A frame is a 4-byte big-endian length and a JSON array: ``["w", pid]`` when a
worker process starts, ``["s", job_id, attempt]`` when an attempt starts in it, and
``["p", job_id, attempt, percent, message]`` for each progress report.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import orjson

MAX_MESSAGE_CHARS = 500  # keeps every frame under PIPE_BUF (4096) even fully escaped
FRAME_HEADER = struct.Struct("!I")
PIPE_BUF = 4096

# Set once in each worker process by ``attach`` (the pool's initializer).
_channel_fd: int | None = None
_cancel_flags: Any = None


def attach(channel_fd: int, cancel_flags: Any) -> None:
    """Remember this worker's end of the progress pipe and the pool's cancel flags."""
    global _channel_fd, _cancel_flags
    _channel_fd, _cancel_flags = channel_fd, cancel_flags


def send(message: list[Any]) -> None:
    """Write one frame; a no-op outside a worker (a job function called directly)."""
    body = orjson.dumps(message)
    frame = FRAME_HEADER.pack(len(body)) + body
    assert len(frame) <= PIPE_BUF, "progress frames must stay atomic"
    if _channel_fd is not None:
        os.write(_channel_fd, frame)


def cancel_requested(slot: int) -> bool:
    """Whether the server asked the attempt in pool slot ``slot`` to stop."""
    return bool(_cancel_flags is not None and slot >= 0 and _cancel_flags[slot])
