"""The URL layout of the API (contract sections 2 and 3): the one place a path is spelled.

Plain strings, no HTTP: event payloads and webhooks name these paths as much as the web
layer routes them.
"""

from __future__ import annotations

API = "/api/v1"


def job_path(job_id: str) -> str:
    return f"{API}/jobs/{job_id}"


def job_links(job_id: str) -> dict[str, str]:
    """A job's links without credentials (``links`` of contract section 2)."""
    base = job_path(job_id)
    return {"self": base, "events": f"{base}/events", "ws": f"{base}/ws",
            "cancel": f"{base}/cancel", "result": f"{base}/result"}


def result_path(job_id: str) -> str:
    return f"{job_path(job_id)}/result"


def events_path() -> str:
    """The global stream of every job's events."""
    return f"{API}/events"
