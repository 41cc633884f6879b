"""Sending webhooks: a background task takes due deliveries, posts each with bounded
concurrency and a per-attempt timeout, and stores every attempt.

Signing follows Standard Webhooks (``webhook-id``, ``webhook-timestamp``,
``webhook-signature``) with the ``standardwebhooks`` package, so any Standard Webhooks
verifier accepts our requests. The connector resolves callback hosts through
``guard.GuardedResolver``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import secrets
import time
from collections import Counter
from datetime import UTC, datetime
from urllib.parse import urlsplit

import aiohttp
import orjson
from standardwebhooks import Webhook

from sse_jobs import paths
from sse_jobs.backoff import Backoff
from sse_jobs.config import Settings
from sse_jobs.metrics import Metrics
from sse_jobs.records import Delivery, DeliveryAttempt, Event
from sse_jobs.states import EventName, state_after
from sse_jobs.store.base import Store
from sse_jobs.webhooks.guard import GuardedResolver, forbidden_literal

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks prefix, not a secret
DUE_BATCH = 64
IDLE_WAIT = 60.0
HOLD_MARGIN = 5.0
WAKE_THROTTLE = 0.05  # at most this often does a burst of commits make it look for work
# A delivery whose receiver host has its --webhook-concurrency-per-host attempts under way
# is looked at again this much later (one write a second, not a busy loop).
HOST_BUSY_DELAY = 1.0
FINAL_4XX = frozenset(range(400, 500)) - {408, 429}
# Of a receiver's answer only the status counts; reading a little of the body lets a
# small answer free its connection for reuse, while a huge one is cut off, not buffered.
ANSWER_PREFIX = 16 * 1024


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def payload(delivery: Delivery, event: Event | None, public_url: str | None = None) -> bytes:
    """What a receiver gets: which job and event, the state right after that event and
    when it happened (from the stored event, as its streams show it), never the job's
    params or result. A job deleted meanwhile has no event left to quote. Its links are
    absolute when the service knows its public address: a receiver has no request to
    resolve a path against."""
    data = orjson.loads(event.data) if event is not None else {}
    links = {name: (public_url or "") + path
             for name, path in paths.job_links(delivery.job_id).items()}
    return orjson.dumps({"type": f"job.{delivery.event}", "job_id": delivery.job_id,
                         "seq": delivery.seq,
                         "state": data.get("state", state_after(EventName(delivery.event)).value),
                         "at": data.get("at"), "links": links})


def receiver_host(url: str) -> str:
    """Whose share of the concurrency a delivery takes: the host and port it goes to."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{(parts.hostname or '').lower()}:{port}"


class WebhookSender:
    """Owns the delivery loop and its HTTP session."""

    def __init__(self, settings: Settings, store: Store, metrics: Metrics, secret: str) -> None:
        self._settings = settings
        self._store = store
        self._metrics = metrics
        self._signer = Webhook(secret)
        self._backoff = Backoff(base=settings.webhook_retry_base,
                                max_delay=settings.webhook_retry_max, jitter="full")
        # Claimed deliveries are held while being posted, past the attempt's timeout and
        # a wait for a free slot, so that another node (or loop) never posts them too.
        self._hold = HOLD_MARGIN + settings.webhook_timeout * (
            1 + DUE_BATCH // settings.webhook_concurrency)
        self._wakeup = asyncio.Event()
        self._in_flight: dict[int, asyncio.Task[None]] = {}
        self._per_host: Counter[str] = Counter()
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
        """Stop sending; attempts under way are abandoned, given back, and made after a
        restart (or by another node)."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        in_flight = dict(self._in_flight)
        for task in in_flight.values():
            task.cancel()
        await asyncio.gather(*in_flight.values(), return_exceptions=True)
        abandoned = [ident for ident, task in in_flight.items() if task.cancelled()]
        with contextlib.suppress(Exception):  # storage trouble: their hold runs out instead
            await self._store.release_deliveries(abandoned, time.time())
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # storage trouble: try again later
                room = DUE_BATCH - len(self._in_flight)
                if room > 0:
                    claimed = await self._store.claim_deliveries(time.time(), room, self._hold)
                    await self._start(claimed)
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

    async def _start(self, claimed: list[Delivery]) -> None:
        """Post each claimed delivery in a task of its own, except those whose receiver
        host already has its share of attempts under way: they go back for a later look,
        so that a slow receiver holds up only its own deliveries."""
        busy = []
        for delivery in claimed:
            if delivery.id in self._in_flight:
                continue
            host = receiver_host(delivery.url)
            if self._per_host[host] >= self._settings.webhook_concurrency_per_host:
                busy.append(delivery.id)
                continue
            self._per_host[host] += 1
            task = asyncio.create_task(self._deliver(delivery))
            self._in_flight[delivery.id] = task
            task.add_done_callback(functools.partial(self._forget, delivery.id, host))
        await self._store.release_deliveries(busy, time.time() + HOST_BUSY_DELAY)

    def _forget(self, delivery_id: int, host: str, _task: asyncio.Task[None]) -> None:
        self._in_flight.pop(delivery_id, None)
        self._per_host[host] -= 1
        if not self._per_host[host]:
            del self._per_host[host]  # the tally holds only hosts with attempts under way

    async def _deliver(self, delivery: Delivery) -> None:
        async with self._slots:
            number = delivery.attempts + 1
            started = time.time()
            status, error, retry_after = await self._post(delivery)
            attempt = DeliveryAttempt(delivery.id, number, started, status, error,
                                      round(time.time() - started, 4))
            state, next_at = self._next_step(delivery, number, status, retry_after)
            await self._store.record_attempt(attempt, state, next_at)
            self._wakeup.set()  # its next attempt may be due before the loop would look
            self._metrics.webhooks.labels(
                "delivered" if state == "delivered" else "dead" if state == "dead" else "retry"
            ).inc()
            if state == "dead":
                log.warning("webhook for job %s event %d dead-lettered after %d attempts",
                            delivery.job_id, delivery.seq, number,
                            extra={"job_id": delivery.job_id})

    async def _post(self, delivery: Delivery) -> tuple[int | None, str | None, float | None]:
        assert self._session is not None
        if not self._settings.webhook_allow_private and forbidden_literal(delivery.url):
            return None, "the callback URL is a loopback, private or reserved address", None
        events = await self._store.job_events(delivery.job_id, delivery.seq - 1, 1)
        body = payload(delivery, next((e for e in events if e.seq == delivery.seq), None),
                       self._settings.public_url)
        message_id = f"{delivery.job_id}.{delivery.seq}"
        now = datetime.now(UTC)
        headers = {"content-type": "application/json", "webhook-id": message_id,
                   "webhook-timestamp": str(int(now.timestamp())),
                   "webhook-signature": self._signer.sign(message_id, now, body.decode()),
                   "user-agent": "sse-jobs webhooks"}
        try:
            async with self._session.post(delivery.url, data=body, headers=headers,
                                          allow_redirects=False) as response:
                await response.content.read(ANSWER_PREFIX)
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
        return "pending", now + self._backoff.delay(number - 1, floor=retry_after or 0.0)


def _seconds(value: str | None) -> float | None:
    """Retry-After in delta-seconds form (the date form is not worth trusting clocks for)."""
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())
