"""Webhooks against a real receiver on 127.0.0.1 that checks every signature."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import re
import signal
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psycopg
import pytest
from aiohttp import web
from standardwebhooks import Webhook

from conftest import MakeServer, Server, SpawnServer, Submit, wait_for
from sse_client import read_stream
from sse_jobs.web.keys import WEBHOOKS

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
FAST = {"webhook_allow_private": True, "webhook_secret": SECRET, "webhook_retry_base": 0.05,
        "webhook_retry_max": 0.2, "webhook_timeout": 0.5}


def spec_verify(headers: dict[str, str], body: bytes) -> bool:
    """The Standard Webhooks check, written from the spec, independent of our signer."""
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(part == f"v1,{expected}" for part in headers["webhook-signature"].split())


@dataclass
class Receiver:
    """A webhook endpoint; ``answer`` decides each response (the outside world we mock)."""

    url: str = ""
    received: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    answer: Callable[[int], Any] = lambda n: web.Response(status=204)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    on_receive: Callable[[dict[str, Any]], Any] | None = None
    current: web.Request | None = None  # the request being answered

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.current = request
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        assert spec_verify(headers, body), headers
        Webhook(SECRET).verify(body, headers)  # and the reference implementation agrees
        payload = orjson.loads(body)
        self.received.append((headers, payload))
        if self.on_receive is not None:
            await self.on_receive(payload)
        self.arrived.set()
        result = self.answer(len(self.received))
        if asyncio.iscoroutine(result):
            result = await result
        return result


@contextlib.asynccontextmanager
async def running_receiver() -> AsyncIterator[Receiver]:
    """A receiver listening on a port of its own on 127.0.0.1."""
    hook = Receiver()
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        hook.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
        yield hook
    finally:
        await runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as hook:
        yield hook


async def deliveries(http: aiohttp.ClientSession, server: Server, job_id: str) -> list[Any]:
    async with http.get(server.api(f"/jobs/{job_id}/deliveries")) as response:
        assert response.status == 200
        result: list[Any] = (await response.json())["deliveries"]
        return result


async def settled(http: aiohttp.ClientSession, server: Server, job_id: str,
                  state: str, count: int = 1) -> list[Any]:
    found: list[Any] = []

    async def done() -> bool:
        found[:] = await deliveries(http, server, job_id)
        return len(found) == count and all(d["state"] == state for d in found)

    await wait_for(done, timeout=15)
    return found


async def test_completed_job_is_announced_once_signed_and_after_its_event_is_stored(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    server = await make_server(**FAST)
    seen_state: list[str] = []

    async def check_stored(payload: dict[str, Any]) -> None:
        async with http.get(server.api(f"/jobs/{payload['job_id']}")) as response:
            seen_state.append((await response.json())["state"])

    receiver.on_receive = check_stored
    job = await submit(server, "echo", {"value": "secret-result"}, callback_url=receiver.url)
    read = await read_stream(http, server.api(f"/jobs/{job['id']}/events"))
    [delivery] = await settled(http, server, job["id"], "delivered")

    [(headers, payload)] = receiver.received
    completed = orjson.loads(read.events[-1].data)
    assert payload == {"type": "job.completed", "job_id": job["id"], "state": "completed",
                       "seq": read.ids[-1], "at": completed["at"],
                       "links": {"self": f"/api/v1/jobs/{job['id']}",
                                 "events": f"/api/v1/jobs/{job['id']}/events",
                                 "ws": f"/api/v1/jobs/{job['id']}/ws",
                                 "cancel": f"/api/v1/jobs/{job['id']}/cancel",
                                 "result": f"/api/v1/jobs/{job['id']}/result"}}
    assert headers["webhook-id"] == f"{job['id']}.{read.ids[-1]}"
    assert seen_state == ["completed"]  # the event was stored before the webhook went out
    assert delivery["webhook_id"] == headers["webhook-id"]
    assert [a["status"] for a in delivery["attempts"]] == [204]
    assert "secret-result" not in str(receiver.received)


async def test_receiver_failing_twice_gets_three_attempts(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    server = await make_server(**FAST)
    receiver.answer = lambda n: web.Response(status=503 if n <= 2 else 200)
    job = await submit(server, "echo", {"value": 1}, callback_url=receiver.url)
    [delivery] = await settled(http, server, job["id"], "delivered")
    assert [a["status"] for a in delivery["attempts"]] == [503, 503, 200]
    assert [a["number"] for a in delivery["attempts"]] == [1, 2, 3]
    ids = {headers["webhook-id"] for headers, _ in receiver.received}
    assert len(ids) == 1  # the same id on every retry, so receivers can drop duplicates


async def test_silent_receiver_is_dead_lettered_and_can_be_retried_by_hand(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    server = await make_server(**FAST, webhook_max_attempts=3)
    release = asyncio.Event()

    async def silent(n: int) -> web.Response:
        if not release.is_set():
            await release.wait()  # never answers in time
        return web.Response(status=200)

    receiver.answer = silent
    job = await submit(server, "echo", {"value": 1}, callback_url=receiver.url)
    [delivery] = await settled(http, server, job["id"], "dead")
    assert len(delivery["attempts"]) == 3
    assert all(a["status"] is None and "no answer" in a["error"] for a in delivery["attempts"])

    release.set()
    async with http.post(server.api(f"/jobs/{job['id']}/deliveries/{delivery['id']}/retry")
                         ) as response:
        assert response.status == 202
        assert (await response.json())["state"] == "pending"
    [again] = await settled(http, server, job["id"], "delivered")
    assert [a["status"] for a in again["attempts"]][-1] == 200
    async with http.post(server.api(f"/jobs/{job['id']}/deliveries/{delivery['id']}/retry")
                         ) as response:
        assert response.status == 409  # only dead ones
    async with http.post(server.api(f"/jobs/{job['id']}/deliveries/999/retry")) as response:
        assert response.status == 404


async def test_final_4xx_is_not_retried(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    server = await make_server(**FAST)
    receiver.answer = lambda n: web.Response(status=410)
    job = await submit(server, "echo", {"value": 1}, callback_url=receiver.url)
    [delivery] = await settled(http, server, job["id"], "dead")
    assert [a["status"] for a in delivery["attempts"]] == [410]


async def test_pending_delivery_survives_a_restart_and_succeeds_once(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    down = True
    receiver.answer = lambda n: web.Response(status=500 if down else 200)
    first = await make_server(**FAST, webhook_max_attempts=1000)
    job = await submit(first, "echo", {"value": 1}, callback_url=receiver.url)
    await wait_for(lambda: _attempts_at_least(http, first, job["id"], 1), timeout=10)
    await first.stop()
    [pending] = await deliveries_in_db(first, job["id"])
    assert pending["state"] == "pending"

    down = False
    second = await make_server(**FAST)
    [delivery] = await settled(http, second, job["id"], "delivered")
    assert delivery["id"] == pending["id"]
    statuses = [a["status"] for a in delivery["attempts"]]
    assert statuses.count(200) == 1
    assert set(statuses[:-1]) == {500}
    assert [a["number"] for a in delivery["attempts"]] == list(range(1, len(statuses) + 1))


async def test_429_with_retry_after_and_408_are_retried_and_retry_after_is_honoured(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    server = await make_server(**{**FAST, "webhook_retry_max": 5.0})
    answers = {1: web.Response(status=429, headers={"Retry-After": "1"}),
               2: web.Response(status=408)}
    receiver.answer = lambda n: answers.get(n, web.Response(status=200))
    job = await submit(server, "echo", {"value": 1}, callback_url=receiver.url)
    [delivery] = await settled(http, server, job["id"], "delivered")
    attempts = delivery["attempts"]
    assert [a["status"] for a in attempts] == [429, 408, 200]
    # the jittered backoff of a first retry is at most 0.05 s here: the wait is Retry-After's
    first, second = (datetime.fromisoformat(a["at"]).timestamp() for a in attempts[:2])
    assert second - first >= 1.0


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
async def test_an_address_that_turned_private_is_refused_at_delivery_time(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession, receiver: Receiver,
    host: str,
) -> None:
    """As after DNS rebinding: the URL passed the check when the job was created (here,
    under --webhook-allow-private), but where it leads now may not be called, so nothing
    is sent: a name is checked as it resolves, an address literal as it is."""
    receiver.answer = lambda n: web.Response(status=500)
    first = await make_server(**FAST, webhook_max_attempts=1000)
    url = receiver.url.replace("127.0.0.1", host)
    job = await submit(first, "echo", {"value": 1}, callback_url=url)
    await wait_for(lambda: _attempts_at_least(http, first, job["id"], 1), timeout=10)
    await first.stop()
    sent_before = len(receiver.received)

    second = await make_server(**{**FAST, "webhook_allow_private": False},
                               webhook_max_attempts=3)
    [delivery] = await settled(http, second, job["id"], "dead")
    refused = delivery["attempts"][sent_before:]
    assert refused
    assert all(a["status"] is None and "private" in a["error"] for a in refused), refused
    assert len(receiver.received) == sent_before


async def deliveries_in_db(server: Server, job_id: str) -> list[dict[str, Any]]:
    """Read the stopped server's database directly."""
    url = server.settings.postgres_url
    if url is not None:
        with psycopg.connect(url) as conn:
            rows = conn.execute("SELECT id, state FROM deliveries WHERE job_id = %s",
                                (job_id,)).fetchall()
    else:
        with sqlite3.connect(server.settings.sqlite_path) as conn:
            rows = conn.execute("SELECT id, state FROM deliveries WHERE job_id = ?",
                                (job_id,)).fetchall()
    return [{"id": row[0], "state": row[1]} for row in rows]


async def _attempts_at_least(http: aiohttp.ClientSession, server: Server, job_id: str,
                             count: int) -> bool:
    found = await deliveries(http, server, job_id)
    return bool(found) and len(found[0]["attempts"]) >= count


async def test_every_event_with_callback_events_all(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    server = await make_server(**FAST, progress_rate=0)
    job = await submit(server, "sleep", {"seconds": 0.1, "steps": 2}, callback_url=receiver.url,
                       callback_events="all")
    read = await read_stream(http, server.api(f"/jobs/{job['id']}/events"))
    await settled(http, server, job["id"], "delivered", count=len(read.ids))
    types = sorted((int(h["webhook-id"].split(".")[1]), p["type"]) for h, p in receiver.received)
    assert types == [(i, f"job.{name}") for i, name in zip(read.ids, read.names, strict=True)]
    # Each names its event's own state, seq and time, whatever the job's state when sent.
    sent = sorted((p["seq"], p["state"], p["at"]) for _, p in receiver.received)
    stored = [orjson.loads(e.data) for e in read.events]
    assert sent == [(d["seq"], d["state"], d["at"]) for d in stored]
    assert [state for _, state, _ in sent][:2] == ["queued", "processing"]


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "http://10.1.2.3/x",
                                 "http://[::1]/x", "http://169.254.169.254/latest",
                                 "http://localhost/x", "ftp://example.com/x", "not a url",
                                 "http://user:pw@example.com/x", "http://example.com:99999/",
                                 "http://example.com:abc/", "http://[::1/x", "http://a..com/",
                                 f"http://{'a' * 64}.com/",
                                 # IPv4 reached through IPv6: compatible, mapped, NAT64 (the
                                 # well-known and the local-use prefix) and 6to4 forms
                                 "http://[::127.0.0.1]/x", "http://[::ffff:10.0.0.1]/x",
                                 "http://[64:ff9b::7f00:1]/x", "http://[64:ff9b:1::7f00:1]/x",
                                 "http://[64:ff9b:1::808:808]/x", "http://[2002:7f00:1::]/x",
                                 "http://[2002:a9fe:a9fe::1]/x", "http://[::]/x"])
async def test_private_or_malformed_callback_urls_are_refused(
    server: Server, http: aiohttp.ClientSession, url: str
) -> None:
    body = {"type": "echo", "params": {}, "callback_url": url}
    async with http.post(server.api("/jobs"), json=body) as response:
        assert response.status == 422
        problem = await response.json()
    assert problem["errors"][0]["field"] == "callback_url"


async def test_a_receiver_answering_a_huge_body_is_read_only_a_prefix(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    """A receiver may answer with anything; the sender reads a bounded prefix and hangs
    up, so an answer of hundreds of MiB costs neither memory nor time."""
    total, chunk = 256 * 2**20, b"x" * 2**16
    written: list[int] = []
    finished = asyncio.Event()

    async def flood(n: int) -> web.StreamResponse:
        assert receiver.current is not None
        response = web.StreamResponse(status=200)
        response.content_length = total
        await response.prepare(receiver.current)
        sent = 0
        try:
            while sent < total:
                await response.write(chunk)
                sent += len(chunk)
        except (ConnectionResetError, ConnectionError):
            pass
        written.append(sent)
        finished.set()
        return response

    receiver.answer = flood
    server = await make_server(**{**FAST, "webhook_timeout": 30})
    job = await submit(server, "echo", {"value": 1}, callback_url=receiver.url)
    await settled(http, server, job["id"], "delivered")
    await asyncio.wait_for(finished.wait(), 30)
    assert written[0] < total // 4, f"the sender read {written[0]} bytes of the answer"


async def test_a_hanging_receiver_does_not_hold_up_others(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    server = await make_server(**{**FAST, "webhook_timeout": 30})
    stuck = asyncio.Event()

    async def hang(n: int) -> web.Response:
        await stuck.wait()
        return web.Response(status=200)

    receiver.answer = hang
    slow = await submit(server, "echo", {"value": 1}, callback_url=receiver.url)
    await asyncio.wait_for(receiver.arrived.wait(), 10)  # its POST is in flight, unanswered

    try:
        async with running_receiver() as fast_hook:
            job = await submit(server, "echo", {"value": 2}, callback_url=fast_hook.url)
            read = await read_stream(http, server.api(f"/jobs/{job['id']}/events"))
            assert read.names[-1] == "completed"
            await settled(http, server, job["id"], "delivered")
            [pending] = await deliveries(http, server, slow["id"])
            assert pending["state"] == "pending"
            assert pending["attempts"] == []  # still waiting for the hanging receiver
    finally:
        stuck.set()


async def test_a_stuck_receiver_host_takes_only_its_share_of_the_concurrency(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    """24 deliveries to a receiver that never answers hold 4 attempts (its per-host share),
    not all 8 slots: another receiver's delivery goes out at once."""
    server = await make_server(**{**FAST, "webhook_timeout": 60, "webhook_concurrency": 8,
                                  "webhook_concurrency_per_host": 4})
    stuck = asyncio.Event()
    in_flight = 0
    most = 0

    async def hang(n: int) -> web.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            await stuck.wait()
        finally:
            in_flight -= 1
        return web.Response(status=200)

    receiver.answer = hang
    slow = [await submit(server, "echo", {"value": n}, callback_url=receiver.url)
            for n in range(24)]

    async def share_taken() -> bool:
        return len(receiver.received) >= 4
    await wait_for(share_taken, timeout=15)

    try:
        async with running_receiver() as fast_hook:
            job = await submit(server, "echo", {"value": "fast"}, callback_url=fast_hook.url)
            async with asyncio.timeout(5):  # well inside the stuck attempts' 60 s
                await fast_hook.arrived.wait()
            await settled(http, server, job["id"], "delivered")
            assert len(receiver.received) == 4
            assert most == 4
    finally:
        stuck.set()
    for held in slow:  # given back while their host was busy, then delivered once each
        await settled(http, server, held["id"], "delivered")
    assert sorted(p["job_id"] for _, p in receiver.received) == sorted(j["id"] for j in slow)
    assert most == 4


async def test_links_are_absolute_with_a_public_url(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    server = await make_server(**FAST, public_url="https://jobs.example.com/base")
    job = await submit(server, "echo", {"value": 1}, callback_url=receiver.url)
    await settled(http, server, job["id"], "delivered")
    [(_, payload)] = receiver.received
    base = f"https://jobs.example.com/base/api/v1/jobs/{job['id']}"
    assert payload["links"] == {"self": base, "events": f"{base}/events", "ws": f"{base}/ws",
                                "cancel": f"{base}/cancel", "result": f"{base}/result"}


def test_a_generated_secret_is_stored_and_shown_only_on_first_start(
    spawn_server: SpawnServer, tmp_path: Path
) -> None:
    db = tmp_path / "secret.db"
    first = spawn_server(db=db)
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(timeout=30) == 0
    second = spawn_server(db=db)

    shown = re.findall(r"webhook_secret=(whsec_\S+)", first.log.read_text())
    assert len(shown) == 1
    assert "whsec_" not in second.log.read_text()
    with sqlite3.connect(db) as conn:
        (stored,) = conn.execute("SELECT value FROM secrets WHERE name = 'webhook-secret'"
                                 ).fetchone()
    assert stored.decode() == shown[0]
    Webhook(shown[0])  # a secret a Standard Webhooks verifier accepts


async def test_the_sender_stops_when_a_commit_wakes_it_as_it_is_closed(server: Server) -> None:
    """At shutdown the last commits wake the sender just as it is closed; the close must
    still end its loop (asyncio.wait_for on Python 3.11 swallowed that cancellation)."""
    sender = server.app[WEBHOOKS]

    async def idle() -> bool:  # its loop waits for a wakeup (white-box: the Event's waiters)
        return bool(sender._wakeup._waiters)  # type: ignore[attr-defined]

    await wait_for(idle, timeout=10)
    sender.wake()
    async with asyncio.timeout(10):
        await sender.close()
