"""Job states and the one table of allowed transitions.

Every state change in sse-jobs is named by the event that records it; the store refuses
an event whose transition is not in ``TRANSITIONS``, so an illegal transition cannot be
written whatever the caller does.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """Where a job is in its life."""

    QUEUED = "queued"  # waiting for a worker (new, or retrying after its not_before time)
    PROCESSING = "processing"  # an attempt is running in a worker process
    COMPLETED = "completed"  # finished with a result; terminal
    FAILED = "failed"  # last attempt failed, timed out or crashed; terminal
    CANCELLED = "cancelled"  # stopped on request; terminal

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


class EventName(StrEnum):
    """The names of the events of a job stream (contract section 4)."""

    QUEUED = "queued"
    PROCESSING = "processing"
    PROGRESS = "progress"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_EVENTS


# The one definition of "finished": every other place (the client, the SQL of the stores)
# takes these sets.
TERMINAL_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})
TERMINAL_EVENTS = frozenset({EventName.COMPLETED, EventName.FAILED, EventName.CANCELLED})
ACTIVE_STATES = frozenset(JobState) - TERMINAL_STATES  # queued or running: counts to limits

# event -> (states it may be recorded in, state the job is in afterwards).
# ``queued`` is only ever the first event of a job, recorded by the store when it is created.
TRANSITIONS: dict[EventName, tuple[frozenset[JobState], JobState]] = {
    EventName.PROCESSING: (frozenset({JobState.QUEUED}), JobState.PROCESSING),
    EventName.PROGRESS: (frozenset({JobState.PROCESSING}), JobState.PROCESSING),
    EventName.RETRYING: (frozenset({JobState.PROCESSING}), JobState.QUEUED),
    EventName.COMPLETED: (frozenset({JobState.PROCESSING}), JobState.COMPLETED),
    EventName.FAILED: (frozenset({JobState.QUEUED, JobState.PROCESSING}), JobState.FAILED),
    EventName.CANCELLED: (frozenset({JobState.QUEUED, JobState.PROCESSING}), JobState.CANCELLED),
}


def allowed_from(event: EventName) -> frozenset[JobState]:
    """The states in which ``event`` may be recorded."""
    return TRANSITIONS[event][0]


def state_after(event: EventName) -> JobState:
    """The state a job is in once ``event`` is recorded."""
    if event is EventName.QUEUED:
        return JobState.QUEUED
    return TRANSITIONS[event][1]
