"""Immutable records the store takes and hands out: jobs, events, deliveries.

The two made once per progress event, ``Event`` and ``ProgressUpdate``, are named tuples:
a frozen dataclass sets each field through ``object.__setattr__``, which made building
them a tenth of the cost of storing a progress event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from sse_jobs.events import EventDraft
from sse_jobs.states import EventName, JobState, allowed_from, state_after


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One job as stored. Times are UNIX seconds; JSON columns are already decoded."""

    id: str
    type: str
    state: JobState
    params: dict[str, Any]
    priority: int
    attempt: int
    max_attempts: int
    timeout: float
    progress: float
    message: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    not_before: float
    result: bytes | None  # the JSON result, encoded
    result_file: str | None
    error: dict[str, Any] | None
    last_event_id: int
    cancel_requested: bool
    idempotency_key: str | None = None
    request_hash: str | None = None
    principal: str = ""
    callback_url: str | None = None
    callback_events: str = "terminal"
    rerun_of: str | None = None  # the failed or cancelled job this one runs again
    run_at: float | None = None  # when the submission asked it to start; None: at once
    tags: tuple[str, ...] = ()


class Event(NamedTuple):
    """One stored event. ``data`` is the exact JSON line sent on the wire."""

    id: int  # global sequence, the id on /api/v1/events
    job_id: str
    seq: int  # the job's own sequence 1, 2, 3, ... the id on the job's stream
    name: EventName
    data: bytes
    principal: str = ""  # whose job it is; decides who may see it, never sent

    @property
    def terminal(self) -> bool:
        return self.name.terminal


@dataclass(frozen=True, slots=True)
class NewJob:
    """A validated submission, ready to be stored with its ``queued`` event."""

    id: str
    type: str
    params: dict[str, Any]
    priority: int
    max_attempts: int
    timeout: float
    created_at: float
    # Its first event, given its position in the queue (1: next to run), which the store
    # counts in the transaction that stores it.
    first_event: Callable[[int], EventDraft]
    idempotency_key: str | None = None
    request_hash: str | None = None
    principal: str = ""
    callback_url: str | None = None
    callback_events: str = "terminal"
    rerun_of: str | None = None
    run_at: float | None = None  # not reserved before then (a time past: at once)
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Delivery:
    """A webhook for one event of a job, and how its attempts went."""

    id: int
    job_id: str
    seq: int
    event: str
    url: str
    state: str  # pending, delivered, dead
    attempts: int
    next_attempt_at: float
    created_at: float


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    delivery_id: int
    number: int
    at: float
    status: int | None
    error: str | None
    duration: float


class ProgressUpdate(NamedTuple):
    """A progress event to store for a running attempt."""

    job_id: str
    attempt: int
    progress: float
    message: str | None
    eta: float | None
    at: float
    webhook: str | None = None  # the callback URL a delivery is stored for, if any


class Fence(NamedTuple):
    """The attempt a write belongs to. The store refuses the write (``IllegalTransition``)
    unless the job is still in that attempt and, on a shared store, this node still holds
    the attempt's lease; with ``expired``, unless its lease has run out instead (another
    node, presumed dead, ran it). So a node that lost a lease can record nothing more."""

    attempt: int
    expired: bool = False


@dataclass(frozen=True, slots=True)
class Change:
    """A state-changing event to record, and the column values it sets."""

    event: EventDraft
    fence: Fence | None = None  # an attempt's outcome: only while it is still that attempt
    error: dict[str, Any] | None = None
    result: bytes | None = None
    result_file: str | None = None
    not_before: float | None = None
    refund_attempt: bool = False  # a retry that does not spend an attempt (shutdown)
    # Narrows the states the event may be recorded in (cancel *only while still queued*).
    only_from: frozenset[JobState] | None = None

    @property
    def name(self) -> EventName:
        return self.event.name

    @property
    def state(self) -> JobState:
        return state_after(self.event.name)

    @property
    def allowed(self) -> frozenset[JobState]:
        """The states the job may be in for this change to be recorded."""
        allowed = allowed_from(self.event.name)
        return allowed if self.only_from is None else allowed & self.only_from
