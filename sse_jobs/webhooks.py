"""Webhooks: signed POSTs for job events, retried, stored, and dead-lettered.

Deliveries are rows the store writes in the same transaction as the event they announce
(see ``store.sqlite._queue_webhooks``), so a webhook never precedes its event and none is
lost in a crash. This module sends them: a background task takes due deliveries, posts
each with bounded concurrency and a per-attempt timeout, and stores every attempt.

Signing follows Standard Webhooks (``webhook-id``, ``webhook-timestamp``,
``webhook-signature``) with the ``standardwebhooks`` package, so any Standard Webhooks
verifier accepts our requests. Callback hosts are resolved and refused when they are
loopback, private, link-local, multicast or reserved — at submission, and again at every
delivery through the connector's resolver, so DNS rebinding cannot slip past.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import ipaddress
import logging
import random
import secrets
import socket
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from standardwebhooks import Webhook

from sse_jobs.config import Settings
from sse_jobs.errors import ValidationFailed
from sse_jobs.events import iso
from sse_jobs.metrics import Metrics
from sse_jobs.models import job_links
from sse_jobs.records import Delivery, DeliveryAttempt
from sse_jobs.store.base import Store

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks prefix, not a secret
MAX_URL = 2048
DUE_BATCH = 64
IDLE_WAIT = 60.0
WAKE_THROTTLE = 0.05  # at most this often does a burst of commits make it look for work
FINAL_4XX = frozenset(range(400, 500)) - {408, 429}


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def _forbidden(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def _forbidden_literal(url: str) -> bool:
    """Whether ``url``'s host is an IP address that may not be called. aiohttp never asks
    the resolver about an address literal, so ``GuardedResolver`` cannot see it."""
    host = urlsplit(url).hostname or ""
    try:
        return _forbidden(host)
    except ValueError:  # a name: the resolver checks what it resolves to
        return False


class GuardedResolver(AbstractResolver):
    """Resolves like aiohttp does, but refuses hosts with non-public addresses."""

    def __init__(self, allow_private: bool) -> None:
        self._inner = DefaultResolver()
        self._allow_private = allow_private

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not self._allow_private and any(_forbidden(r["host"]) for r in results):
            raise OSError(f"{host} resolves to a loopback, private or reserved address")
        return results

    async def close(self) -> None:
        await self._inner.close()


async def check_callback_url(url: str, allow_private: bool) -> None:
    """Refuse (422) a callback URL that is not http(s) or points at a private address."""
    def refuse(message: str) -> ValidationFailed:
        return ValidationFailed(f"callback_url: {message}",
                                [{"field": "callback_url", "message": message}])

    try:
        parts = urlsplit(url)
        port = parts.port  # parsed on access: a port out of range raises here
    except ValueError as exc:  # "Invalid IPv6 URL", "Port out of range 0-65535", ...
        raise refuse(f"is not a valid URL: {exc}") from None
    if len(url) > MAX_URL or parts.scheme not in {"http", "https"} or not parts.hostname:
        raise refuse("must be an http or https URL with a host")
    if parts.username or parts.password:
        raise refuse("must not carry credentials")
    resolver = GuardedResolver(allow_private)
    try:
        await resolver.resolve(parts.hostname, port or 0, socket.AF_UNSPEC)
    except OSError as exc:
        raise refuse(str(exc) if "resolves to" in str(exc) else
                     f"cannot resolve {parts.hostname}") from None
    except UnicodeError:  # not a host name at all: an empty or over-long label
        raise refuse(f"{parts.hostname!r} is not a valid host name") from None
    finally:
        await resolver.close()


def payload(delivery: Delivery, state: str) -> bytes:
    """What a receiver gets: which job and event, never its params or result."""
    return orjson.dumps({"type": f"job.{delivery.event}", "job_id": delivery.job_id,
                         "state": state, "links": job_links(delivery.job_id)})


class WebhookSender:
    """Owns the delivery loop and its HTTP session."""

    def __init__(self, settings: Settings, store: Store, metrics: Metrics, secret: str) -> None:
        self._settings = settings
        self._store = store
        self._metrics = metrics
        self._signer = Webhook(secret)
        self._wakeup = asyncio.Event()
        self._in_flight: dict[int, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(settings.webhook_concurrency)
        self._session: aiohttp.ClientSession | None = None
        self._loop_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(self._settings.webhook_allow_private), limit=0)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self._settings.webhook_timeout))
        self._loop_task = asyncio.create_task(self._run(), name="webhooks")

    def wake(self) -> None:
        self._wakeup.set()

    async def close(self) -> None:
        """Stop sending; attempts under way are abandoned and retried after a restart."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        for task in list(self._in_flight.values()):
            task.cancel()
        await asyncio.gather(*self._in_flight.values(), return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # storage trouble: try again later
                for delivery in await self._store.due_deliveries(time.time(), DUE_BATCH):
                    if delivery.id not in self._in_flight:
                        task = asyncio.create_task(self._deliver(delivery))
                        self._in_flight[delivery.id] = task
                        task.add_done_callback(functools.partial(self._forget, delivery.id))
            wait = IDLE_WAIT
            with contextlib.suppress(Exception):
                due = await self._store.next_delivery_at()
                if due is not None:
                    wait = min(wait, max(WAKE_THROTTLE, due - time.time()))
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancellation
            # that arrives as the event is set (a commit at shutdown does both), and close()
            # then waited for this loop for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wakeup.wait()
            self._wakeup.clear()
            await asyncio.sleep(WAKE_THROTTLE)

    def _forget(self, delivery_id: int, _task: asyncio.Task[None]) -> None:
        self._in_flight.pop(delivery_id, None)

    async def _deliver(self, delivery: Delivery) -> None:
        async with self._slots:
            number = delivery.attempts + 1
            started = time.time()
            status, error, retry_after = await self._post(delivery)
            attempt = DeliveryAttempt(delivery.id, number, started, status, error,
                                      round(time.time() - started, 4))
            state, next_at = self._next_step(delivery, number, status, retry_after)
            await self._store.record_attempt(attempt, state, next_at)
            self._metrics.webhooks.labels(
                "delivered" if state == "delivered" else "dead" if state == "dead" else "retry"
            ).inc()
            if state == "dead":
                log.warning("webhook for job %s event %d dead-lettered after %d attempts",
                            delivery.job_id, delivery.seq, number,
                            extra={"job_id": delivery.job_id})

    async def _post(self, delivery: Delivery) -> tuple[int | None, str | None, float | None]:
        assert self._session is not None
        if not self._settings.webhook_allow_private and _forbidden_literal(delivery.url):
            return None, "the callback URL is a loopback, private or reserved address", None
        job = await self._store.get_job(delivery.job_id)
        body = payload(delivery, job.state.value if job else "deleted")
        message_id = f"{delivery.job_id}.{delivery.seq}"
        now = datetime.now(UTC)
        headers = {"content-type": "application/json", "webhook-id": message_id,
                   "webhook-timestamp": str(int(now.timestamp())),
                   "webhook-signature": self._signer.sign(message_id, now, body.decode()),
                   "user-agent": "sse-jobs webhooks"}
        try:
            async with self._session.post(delivery.url, data=body, headers=headers,
                                          allow_redirects=False) as response:
                await response.read()
                retry_after = _seconds(response.headers.get("Retry-After"))
                error = None if response.status < 300 else f"HTTP {response.status}"
                return response.status, error, retry_after
        except TimeoutError:
            return None, f"no answer within {self._settings.webhook_timeout:g}s", None
        except (aiohttp.ClientError, OSError) as exc:
            # aiohttp wraps the resolver's refusal; its reason is in the cause
            cause = f" ({exc.__cause__})" if exc.__cause__ is not None else ""
            return None, f"{type(exc).__name__}: {exc}{cause}"[:500], None

    def _next_step(self, delivery: Delivery, number: int, status: int | None,
                   retry_after: float | None) -> tuple[str, float]:
        now = time.time()
        if status is not None and 200 <= status < 300:
            return "delivered", now
        if (status is not None and status in FINAL_4XX) or \
                number >= self._settings.webhook_max_attempts:
            return "dead", now
        ceiling = min(self._settings.webhook_retry_max,
                      self._settings.webhook_retry_base * 2 ** (number - 1))
        delay = random.uniform(0, ceiling)  # noqa: S311 - full-jitter backoff
        if retry_after is not None:
            delay = min(max(delay, retry_after), self._settings.webhook_retry_max)
        return "pending", now + delay


def _seconds(value: str | None) -> float | None:
    """Retry-After in delta-seconds form (the date form is not worth trusting clocks for)."""
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


def delivery_resource(delivery: Delivery, attempts: list[DeliveryAttempt]) -> dict[str, Any]:
    """A delivery as ``GET /api/v1/jobs/ID/deliveries`` shows it."""
    return {
        "id": delivery.id, "event": delivery.event, "seq": delivery.seq, "url": delivery.url,
        "webhook_id": f"{delivery.job_id}.{delivery.seq}", "state": delivery.state,
        "created_at": iso(delivery.created_at),
        "next_attempt_at": iso(delivery.next_attempt_at) if delivery.state == "pending" else None,
        "attempts": [{"number": a.number, "at": iso(a.at), "status": a.status,
                      "error": a.error, "duration": a.duration} for a in attempts],
    }
