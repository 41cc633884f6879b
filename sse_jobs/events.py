"""The events of a job (contract section 4): what each one carries, and its JSON ``data``.

The domain describes an event as an ``EventDraft`` (its name, time and own fields, and the
webhook it calls for); a store gives it the job's next ``seq`` and its global ``id`` inside
the transaction that records it, and encodes it here, with ``event_data``. So a store
never decides what an event says, and every backend writes the same bytes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, NamedTuple

import orjson

from sse_jobs import paths
from sse_jobs.states import EventName, state_after

INLINE_RESULT_LIMIT = 64 * 1024  # larger results are only served at links.result


class EventDraft(NamedTuple):
    """An event about to be stored: everything but its ``seq`` and ``id``."""

    name: EventName
    at: float
    fields: dict[str, Any]  # the event's own fields, beside job_id, seq, event, state, at
    webhook: str | None = None  # the callback URL a delivery is stored for, if any


def iso(timestamp: float | None) -> str | None:
    """UTC ISO 8601 with microseconds and a ``Z``, as every time in the API is written."""
    if timestamp is None:
        return None
    seconds = int(timestamp // 1)
    micros = round((timestamp - seconds) * 1_000_000)
    if micros == 1_000_000:
        seconds, micros = seconds + 1, 0
    return f"{_whole_second(seconds)}.{micros:06d}Z"


@lru_cache(maxsize=256)
def _whole_second(seconds: int) -> str:
    # Formatting a datetime is the costly part, and events come many to a second.
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def inline_result(result: bytes | None) -> Any:
    """The decoded result when small enough to embed, else None (see links.result)."""
    if result is None or len(result) > INLINE_RESULT_LIMIT:
        return None
    return orjson.loads(result)


# -- one builder per event ----------------------------------------------------------------


def queued(at: float, position: int, run_at: float | None = None) -> EventDraft:
    """A new job; ``position`` 1 is the next to run; ``run_at``, of a delayed job, the time
    it was asked to start at."""
    fields: dict[str, Any] = {"position": position}
    if run_at is not None:
        fields["run_at"] = iso(run_at)
    return EventDraft(EventName.QUEUED, at, fields)


def processing(at: float, attempt: int) -> EventDraft:
    return EventDraft(EventName.PROCESSING, at, {"attempt": attempt})


def retrying(at: float, attempt: int, retry_at: float, error: dict[str, Any]) -> EventDraft:
    """An attempt failed; ``attempt`` is the number of the next one, due at ``retry_at``."""
    return EventDraft(EventName.RETRYING, at,
                      {"attempt": attempt, "retry_at": iso(retry_at), "error": error})


def completed(at: float, job_id: str, result: bytes | None) -> EventDraft:
    return EventDraft(EventName.COMPLETED, at, {"result": inline_result(result),
                                                 "result_url": paths.result_path(job_id)})


def failed(at: float, error: dict[str, Any]) -> EventDraft:
    return EventDraft(EventName.FAILED, at, {"error": error})


def cancelled(at: float, error: dict[str, Any]) -> EventDraft:
    return EventDraft(EventName.CANCELLED, at, {"error": error})


# -- encoding -----------------------------------------------------------------------------


def event_data(job_id: str, seq: int, draft: EventDraft) -> bytes:
    """The one-line JSON ``data`` of the stored event: ``job_id``, ``seq``, ``event``,
    ``state`` (the job's state after it), ``at``, then the event's own fields."""
    return orjson.dumps(
        {"job_id": job_id, "seq": seq, "event": draft.name.value,
         "state": state_after(draft.name).value, "at": iso(draft.at), **draft.fields}
    )


def progress_data(
    job_id: str, seq: int, at: str | None, progress: float, message: str | None,
    eta: float | None,
) -> bytes:
    """``event_data`` of a ``progress`` event, the one made many times a second: the
    same bytes, with its constant fields written in and ``at`` already formatted (a
    batch of reports read together shares one time)."""
    return orjson.dumps(
        {"job_id": job_id, "seq": seq, "event": "progress", "state": "processing", "at": at,
         "progress": progress, "message": message, "eta": eta}
    )
