"""Writing to a peer that may have stopped reading: every channel's writes are bounded by
``--send-timeout`` the same way."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from aiohttp import web

# What a channel adds to a payload on the wire at most: a chunk's size line and CRLFs, or
# a WebSocket frame header.
FRAMING_OVERHEAD = 32


def may_wait(request: web.Request, size: int) -> bool:
    """Whether writing ``size`` more bytes may wait on the peer.

    A write can wait only while writing is paused, which the transport does once its
    buffer is above the high-water mark, until the peer has read it down to the low one.
    So only a write made while paused, or one that may cross the mark, needs a timer: a
    timer for every write was the costliest step of fanning an event out to many streams.
    """
    transport, protocol = request.transport, request.protocol
    if transport is None or protocol.writing_paused:
        return True
    _low, high = transport.get_write_buffer_limits()
    return transport.get_write_buffer_size() + size + FRAMING_OVERHEAD > high


async def bounded(request: web.Request, write: Awaitable[None], size: int,
                  limit: float) -> None:
    """Await ``write`` (of ``size`` bytes), but raise ``TimeoutError`` rather than wait
    longer than ``limit`` seconds on a peer that stopped reading."""
    if not may_wait(request, size):
        await write
        return
    async with asyncio.timeout(limit):
        await write
