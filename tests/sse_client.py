"""Test helpers that read event streams with our own parser, bounded in time."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from sse_jobs.eventstream import EventStreamParser, ServerSentEvent

TERMINAL = {"completed", "failed", "cancelled"}


@dataclass
class StreamRead:
    status: int
    headers: dict[str, str]
    events: list[ServerSentEvent] = field(default_factory=list)
    comments: int = 0
    retry: int | None = None
    closed_by_server: bool = False

    @property
    def ids(self) -> list[int]:
        return [int(e.id) for e in self.events if e.id is not None]

    @property
    def names(self) -> list[str]:
        return [e.event for e in self.events]

    def data(self) -> list[dict[str, Any]]:
        return [orjson.loads(e.data) for e in self.events]


async def read_stream(
    session: aiohttp.ClientSession,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    max_events: int | None = None,
    until_terminal: bool = True,
    min_comments: int | None = None,
    timeout: float = 30.0,
) -> StreamRead:
    """Read ``url`` until the server closes it, a terminal event, ``max_events`` events,
    or ``min_comments`` comments; fails the test if ``timeout`` passes first."""
    async with asyncio.timeout(timeout), session.get(url, headers=headers) as response:
        read = StreamRead(response.status, dict(response.headers))
        if response.status != 200:
            return read
        parser = EventStreamParser()
        async for chunk in response.content.iter_any():
            read.events.extend(parser.feed(chunk))
            read.comments, read.retry = parser.comments, parser.retry
            if until_terminal and any(e.event in TERMINAL for e in read.events):
                break
            if max_events is not None and len(read.events) >= max_events:
                break
            if min_comments is not None and read.comments >= min_comments:
                break
        else:
            read.closed_by_server = True
        return read
