"""Test helpers that read a job's WebSocket with aiohttp's client, bounded in time."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson


@dataclass
class WsRead:
    frames: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    pings: int = 0

    @property
    def ids(self) -> list[int]:
        return [f["id"] for f in self.frames]

    @property
    def names(self) -> list[str]:
        return [f["event"] for f in self.frames]


async def read_ws(session: aiohttp.ClientSession, url: str, *,
                  headers: dict[str, str] | None = None, max_frames: int | None = None,
                  min_pings: int | None = None, timeout: float = 30.0) -> WsRead:
    """Read text frames from ``url`` until the server closes, ``max_frames`` frames or
    ``min_pings`` pings; fails the test if ``timeout`` passes first."""
    async with asyncio.timeout(timeout), session.ws_connect(
            url, headers=headers, autoping=min_pings is None) as ws:
        return await read_frames(ws, max_frames=max_frames, min_pings=min_pings)


async def read_frames(ws: aiohttp.ClientWebSocketResponse, *, max_frames: int | None = None,
                      min_pings: int | None = None) -> WsRead:
    read = WsRead()
    while max_frames is None or len(read.frames) < max_frames:
        message = await ws.receive()
        if message.type is aiohttp.WSMsgType.TEXT:
            read.frames.append(orjson.loads(message.data))
        elif message.type is aiohttp.WSMsgType.PING:
            read.pings += 1
            await ws.pong(message.data)
            if min_pings is not None and read.pings >= min_pings:
                break
        elif message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                              aiohttp.WSMsgType.CLOSING):
            read.close_code = ws.close_code
            break
        else:
            raise AssertionError(f"unexpected WebSocket message {message!r}")
    return read


async def handshake_status(session: aiohttp.ClientSession, url: str,
                           headers: dict[str, str] | None = None) -> int:
    """The HTTP status a refused WebSocket handshake got (fails if it was accepted)."""
    try:
        async with session.ws_connect(url, headers=headers):
            pass
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status
    raise AssertionError(f"{url} accepted the WebSocket")


def small_receive_buffer(addr_info: Any) -> socket.socket:
    """A client socket with a tiny receive buffer: a client that stops reading then
    stalls the server's writes quickly, as a slow phone would."""
    family, type_, proto, _name, _address = addr_info
    sock = socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


def small_send_buffers(server: Any) -> None:
    """Accepted sockets inherit the listening socket's send buffer: make it tiny, so that
    a client that stops reading stalls the server's writes after a few kilobytes."""
    for site in server.runner.sites:
        for sock in site._server.sockets:  # type: ignore[union-attr]
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
