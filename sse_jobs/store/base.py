"""The storage interface: rows in, rows out.

A store keeps jobs, their events and webhook deliveries. It decides nothing about them:
the domain hands it records and ``EventDraft``s, and the store makes each write one
transaction, assigns each event its per-job ``seq`` and its global ``id`` inside it,
encodes the event with ``events.event_data``, stores the delivery the draft names, and
calls the listener with the events of each transaction after it commits and before any
caller hears of it. So an event can only be seen once it is durable, listeners see
events in commit order, and every backend stores the same bytes.

A backend translates its own errors into ``sse_jobs.errors`` at this boundary: storage
trouble is ``Unavailable`` (503), a refused transition ``IllegalTransition``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

from sse_jobs.errors import SseJobsError
from sse_jobs.events import EventDraft
from sse_jobs.records import (
    Change,
    Delivery,
    DeliveryAttempt,
    Event,
    JobRecord,
    NewJob,
    ProgressUpdate,
)
from sse_jobs.states import JobState

EventListener = Callable[[Sequence[Event]], None]
# The event a started job's row calls for (its ``processing``, with the attempt just begun).
DraftFor = Callable[[JobRecord], EventDraft]
# Concurrency limits: at most this many jobs of the type reserved or processing at once.
Limits = Mapping[str, int]


class Store(ABC):
    """Rows in, rows out. Implementations translate their errors into ``sse_jobs.errors``."""

    shared: ClassVar[bool] = False
    """Whether many nodes may share this store. The engine then holds a lease on each
    attempt it runs (renewing it, and ending other nodes' expired ones while it runs), and
    hears of cancels requested on other nodes; a store for one node has no leases: the
    next start recovers what a dead process left running."""

    @abstractmethod
    async def open(self, listener: EventListener | None) -> None:
        """Connect, migrate the schema, and start delivering committed events to ``listener``
        (on a shared store, every node's events, in global id order), if there is one."""

    @abstractmethod
    async def close(self) -> None:
        """Finish pending writes and disconnect."""

    async def create_job(self, new: NewJob, max_queued: int) -> tuple[JobRecord, bool]:
        """``create_jobs`` of one job, raising its refusal."""
        [outcome] = await self.create_jobs([new], max_queued)
        if isinstance(outcome, SseJobsError):
            raise outcome
        return outcome

    @abstractmethod
    async def create_jobs(self, news: Sequence[NewJob],
                          max_queued: int) -> list[tuple[JobRecord, bool] | SseJobsError]:
        """Store jobs, each with its first event (``first_event`` of its queue position,
        seq 1), in one transaction; for each, in order, the job and True, or the job
        already stored under the same idempotency key and False, or ``Unavailable`` once
        ``max_queued`` jobs are queued."""

    @abstractmethod
    async def record(self, job_id: str, change: Change) -> tuple[JobRecord, Event]:
        """Apply a state change and store its event, atomically, if the job's state allows
        the event (``states.TRANSITIONS``, narrowed by ``change.only_from``).

        Raises ``IllegalTransition`` when the job's state does not allow the event, and
        ``NotFound`` when there is no such job.
        """

    @abstractmethod
    async def record_progress(self, updates: Sequence[ProgressUpdate]) -> list[Event]:
        """Store progress events of running attempts; updates for jobs no longer running
        that attempt are dropped."""

    @abstractmethod
    async def request_cancel(self, job_id: str) -> JobRecord | None:
        """Mark a processing job as asked to stop (no event); None unless it is processing.
        A shared store tells the other nodes (``on_cancel``)."""

    @abstractmethod
    def on_cancel(self, callback: Callable[[str], None]) -> None:
        """Call ``callback`` with the id of each job another node asked to stop."""

    @abstractmethod
    def on_queued(self, callback: Callable[[int | None], None]) -> None:
        """Call ``callback`` when another node has queued a job: with its priority when it
        is new, None when it is to be retried. There may be work to reserve."""

    @abstractmethod
    async def renew_leases(self, job_ids: Sequence[str]) -> dict[str, bool]:
        """Extend this node's leases on the reserved or running jobs of ``job_ids``: the
        ids whose lease it still holds, each with whether a cancel was requested. An id
        missing from the answer has been lost (its attempt must stop and record nothing)."""

    @abstractmethod
    async def expired_attempts(self, limit: int) -> list[JobRecord]:
        """Processing jobs whose lease has run out: their node is presumed dead."""

    @abstractmethod
    async def reserve(self, now: float, limit: int, limits: Limits | None = None
                      ) -> list[JobRecord]:
        """Reserve up to ``limit`` runnable queued jobs for this node, highest priority,
        then oldest, first, without starting them: they stay ``queued`` (no event), and
        nobody else reserves them until they are started or released (or, on a shared
        store, their lease runs out). A type in ``limits`` gets no more than its slots
        left: its limit less its jobs reserved or processing (on every node); the other
        types are reserved meanwhile as if it were not there."""

    @abstractmethod
    async def start(self, job_id: str, at: float, draft: DraftFor) -> tuple[JobRecord, Event]:
        """Start the next attempt of a job this node reserved, at ``at``: ``processing``, the
        attempt number one up, and the event ``draft`` makes of the started row. Raises
        ``IllegalTransition`` when it is no longer reserved here (cancelled meanwhile, or
        the reservation was lost)."""

    @abstractmethod
    async def release(self, job_ids: Sequence[str]) -> None:
        """Give back this node's reservations of these jobs, if it still holds them."""

    @abstractmethod
    async def next_run_at(self, limits: Limits | None = None) -> float | None:
        """The earliest ``not_before`` of any queued job nobody has reserved, leaving out
        the types of ``limits`` that have no slot left (they wait for a slot, not time)."""

    @abstractmethod
    async def get_job(self, job_id: str) -> JobRecord | None: ...

    @abstractmethod
    async def job_by_idempotency_key(self, principal: str, key: str) -> JobRecord | None: ...

    @abstractmethod
    async def list_jobs(
        self, *, principal: str | None, states: Sequence[JobState], types: Sequence[str],
        before: str | None, limit: int, tags: Sequence[str] = (),
    ) -> list[JobRecord]:
        """Jobs newest first, optionally filtered (``tags``: jobs that have all of them),
        with ids below ``before``."""

    @abstractmethod
    async def jobs_in_state(self, state: JobState) -> list[JobRecord]: ...


    @abstractmethod
    async def job_counts(self, principal: str | None = None) -> list[tuple[str, str, int]]:
        """How many jobs there are of each (type, state): of everyone, or of ``principal``."""

    @abstractmethod
    async def job_events(self, job_id: str, after_seq: int, limit: int) -> list[Event]:
        """A job's events with ``seq > after_seq``, in order."""

    @abstractmethod
    async def all_events(self, after_id: int, limit: int, principal: str | None) -> list[Event]:
        """Events with global ``id > after_id``, in order: of every job, or of the jobs of
        ``principal``."""

    @abstractmethod
    async def count_active(self, principal: str) -> int:
        """The principal's queued and processing jobs."""

    @abstractmethod
    async def secret(self, name: str, new: Callable[[], bytes]) -> bytes:
        """The server secret called ``name``, made with ``new()`` and stored the first time."""

    @abstractmethod
    async def last_event_id(self) -> int:
        """The newest global event id (0 when there is none)."""

    @abstractmethod
    async def delete_job(self, job_id: str) -> bool:
        """Remove a terminal job and its events; False if it is not terminal or not there."""

    @abstractmethod
    async def finished_before(self, cutoff: float, limit: int) -> list[str]:
        """Ids of up to ``limit`` terminal jobs that finished before ``cutoff``."""

    # -- webhooks: deliveries are stored with the events whose drafts name them

    @abstractmethod
    async def claim_deliveries(self, now: float, limit: int, hold: float) -> list[Delivery]:
        """Take pending deliveries whose next attempt is due, soonest first, and hold them
        for ``hold`` seconds: no other caller (or node) gets them meanwhile."""

    @abstractmethod
    async def release_deliveries(self, delivery_ids: Sequence[int], now: float) -> None:
        """Give back claimed deliveries whose attempt never happened (the sender stopped):
        due again at ``now``, not when their hold would have run out."""

    @abstractmethod
    async def next_delivery_at(self) -> float | None: ...

    @abstractmethod
    async def record_attempt(self, attempt: DeliveryAttempt, state: str,
                             next_attempt_at: float) -> None:
        """Store an attempt and the delivery's new state (pending, delivered or dead)."""

    @abstractmethod
    async def retry_delivery(self, job_id: str, delivery_id: int, now: float) -> Delivery | None:
        """Make a dead delivery pending again; None unless it was dead."""

    @abstractmethod
    async def job_deliveries(self, job_id: str) -> tuple[list[Delivery], list[DeliveryAttempt]]:
        """A job's deliveries and all their attempts."""

    @abstractmethod
    async def take_token(self, key: str, rate: float, burst: float) -> float:
        """Take a token from the bucket ``key`` (``rate`` a second, at most ``burst``), shared
        by every node of the store: 0.0 if taken, else the seconds until one is there."""

    @abstractmethod
    async def hold(self, task: str, seconds: float) -> bool:
        """Whether this node may do the periodic ``task`` now: on a shared store one node
        at a time holds it, for ``seconds`` from its last call."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise if the database cannot be reached."""

    @abstractmethod
    async def writable(self) -> None:
        """Raise ``Unavailable`` if the database cannot take writes now (a full disk, a
        read-only database), saying why."""
