"""A job's webhook deliveries, as ``GET /api/v1/jobs/ID/deliveries`` lists them, and giving
a dead-lettered one another attempt."""

from __future__ import annotations

import time

from sse_jobs.errors import Conflict, NotFound
from sse_jobs.records import Delivery, DeliveryAttempt
from sse_jobs.store.base import Store
from sse_jobs.webhooks.sender import WebhookSender

MAX_DELIVERY_ID_DIGITS = 17  # ids that fit a signed 64-bit column


class Deliveries:
    """Reads and retries deliveries of jobs the caller may see (it checks that first)."""

    def __init__(self, store: Store, sender: WebhookSender) -> None:
        self._store = store
        self._sender = sender

    async def of_job(self, job_id: str) -> list[tuple[Delivery, list[DeliveryAttempt]]]:
        """Each delivery of the job with its attempts, oldest first."""
        deliveries, attempts = await self._store.job_deliveries(job_id)
        return [(d, [a for a in attempts if a.delivery_id == d.id]) for d in deliveries]

    async def retry(self, job_id: str, delivery: str) -> Delivery:
        """Make the dead delivery ``delivery`` (its id as given in the URL) pending again."""
        number = int(delivery) if delivery.isascii() and delivery.isdigit() and len(
            delivery) <= MAX_DELIVERY_ID_DIGITS else -1
        retried = await self._store.retry_delivery(job_id, number, time.time())
        if retried is None:
            deliveries, _ = await self._store.job_deliveries(job_id)
            if not any(str(d.id) == delivery for d in deliveries):
                raise NotFound(f"job {job_id} has no delivery {delivery!r}")
            raise Conflict("only a dead-lettered delivery can be retried")
        self._sender.wake()
        return retried
