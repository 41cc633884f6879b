"""Test helpers for /graphql: a POST, and the graphql-transport-ws protocol spoken with
aiohttp's WebSocket client, bounded in time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

PROTOCOL = "graphql-transport-ws"

JOB_FIELDS = """id type state params progress message attempt maxAttempts priority timeout
createdAt startedAt finishedAt result lastEventId rerunOf runAt tags
error { type message exception traceback } links { self events ws cancel result }"""
EVENT_FIELDS = "id seq jobId event state at data"
JOB_EVENTS = f"""subscription ($job: ID!, $after: Int) {{
  jobEvents(jobId: $job, afterSeq: $after) {{ {EVENT_FIELDS} }} }}"""
ALL_EVENTS = f"subscription ($after: Int) {{ events(afterId: $after) {{ {EVENT_FIELDS} }} }}"


async def gql(http: aiohttp.ClientSession, url: str, query: str,
              variables: dict[str, Any] | None = None,
              headers: dict[str, str] | None = None) -> dict[str, Any]:
    """POST one operation to ``url`` (the server's /graphql); its JSON answer."""
    async with http.post(url, json={"query": query, "variables": variables or {}},
                         headers=headers) as response:
        assert response.status == 200, await response.text()
        assert response.content_type == "application/json"
        answer: dict[str, Any] = await response.json()
        return answer


def codes(answer: dict[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in answer.get("errors", [])]


@dataclass
class Subscribed:
    """What one subscription received until it ended."""

    events: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    completed: bool = False
    close_code: int | None = None

    @property
    def seqs(self) -> list[int]:
        return [e["seq"] for e in self.events]


class GraphQLSocket:
    """One graphql-transport-ws connection."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = 0
        self._held: dict[str, list[dict[str, Any]]] = {}  # other subscriptions' messages

    async def init(self, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        await self.ws.send_str(orjson.dumps({"type": "connection_init",
                                             "payload": payload or {}}).decode())
        return await self.message()

    async def subscribe(self, query: str, variables: dict[str, Any] | None = None) -> str:
        self._ids += 1
        ident = str(self._ids)
        await self.ws.send_str(orjson.dumps({"id": ident, "type": "subscribe", "payload": {
            "query": query, "variables": variables or {}}}).decode())
        return ident

    async def message(self) -> dict[str, Any]:
        """The next protocol message; ``{"type": "closed", "code": N}`` once closed."""
        message = await self.ws.receive()
        if message.type is aiohttp.WSMsgType.TEXT:
            decoded: dict[str, Any] = orjson.loads(message.data)
            return decoded
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                aiohttp.WSMsgType.CLOSING), message
        return {"type": "closed", "code": self.ws.close_code}

    async def collect(self, ident: str, max_events: int | None = None) -> Subscribed:
        """Read subscription ``ident`` until it completes, errs, the socket closes, or
        ``max_events`` events arrived."""
        got = Subscribed()
        held = self._held.setdefault(ident, [])
        while max_events is None or len(got.events) < max_events:
            message = held.pop(0) if held else await self.message()
            if message["type"] == "closed":
                got.close_code = message["code"]
                break
            if message.get("id") != ident:
                self._held.setdefault(message.get("id", ""), []).append(message)
                continue
            if message["type"] == "next":
                payload = message["payload"]
                got.errors += payload.get("errors", [])
                if payload.get("data"):
                    got.events.append(next(iter(payload["data"].values())))
            elif message["type"] == "error":
                got.errors += message["payload"]
                break
            elif message["type"] == "complete":
                got.completed = True
                break
        return got


@asynccontextmanager
async def graphql_socket(http: aiohttp.ClientSession, url: str, *,
                         headers: dict[str, str] | None = None,
                         timeout: float = 30.0) -> AsyncIterator[GraphQLSocket]:
    async with asyncio.timeout(timeout), http.ws_connect(
            url.replace("http://", "ws://"), protocols=[PROTOCOL], headers=headers) as ws:
        assert ws.protocol == PROTOCOL
        yield GraphQLSocket(ws)


async def subscription(http: aiohttp.ClientSession, url: str, query: str,
                       variables: dict[str, Any] | None = None,
                       payload: dict[str, Any] | None = None) -> Subscribed:
    """Connect, init, run one subscription to its end."""
    async with graphql_socket(http, url) as socket:
        ack = await socket.init(payload)
        assert ack["type"] == "connection_ack", ack
        return await socket.collect(await socket.subscribe(query, variables))
