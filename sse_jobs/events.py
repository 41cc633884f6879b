"""The JSON payload of each event (contract section 4), built in one place."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

from sse_jobs.states import EventName, JobState


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


def event_data(
    job_id: str, seq: int, event: EventName, state: JobState, at: float, extra: dict[str, Any]
) -> bytes:
    """The one-line JSON ``data`` of an event; ``extra`` adds the event's own fields."""
    return orjson.dumps(
        {"job_id": job_id, "seq": seq, "event": event.value, "state": state.value,
         "at": iso(at), **extra}
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
