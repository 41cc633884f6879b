"""The JSON payload of each event (contract section 4), built in one place."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from sse_jobs.states import EventName, JobState


def iso(timestamp: float | None) -> str | None:
    """UTC ISO 8601 with microseconds and a ``Z``, as every time in the API is written."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_data(
    job_id: str, seq: int, event: EventName, state: JobState, at: float, extra: dict[str, Any]
) -> bytes:
    """The one-line JSON ``data`` of an event; ``extra`` adds the event's own fields."""
    return orjson.dumps(
        {"job_id": job_id, "seq": seq, "event": event.value, "state": state.value,
         "at": iso(at), **extra}
    )
