"""Which events of a job call for a webhook delivery."""

from __future__ import annotations

from sse_jobs.states import EventName

CALLBACK_EVENTS = ("terminal", "all")  # what a submission's ``callback_events`` may ask


def delivery_url(event: EventName, callback_url: str | None, callback_events: str) -> str | None:
    """Where a delivery for ``event`` goes: the job's ``callback_url`` on each terminal
    event, or on every event with ``callback_events: "all"``; None for no delivery."""
    if callback_url is None or not (event.terminal or callback_events == "all"):
        return None
    return callback_url
