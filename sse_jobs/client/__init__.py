"""The Python client of the API (``Client``, ``SyncClient``) and the ``sse-jobs`` client
sub-commands. Imports no server code."""

from sse_jobs.client.api import (
    DEFAULT_URL,
    ApiError,
    Backoff,
    Client,
    JobEvent,
    SseJobsClientError,
    StreamUnavailable,
    SyncClient,
    Unreachable,
)

__all__ = [
    "DEFAULT_URL",
    "ApiError",
    "Backoff",
    "Client",
    "JobEvent",
    "SseJobsClientError",
    "StreamUnavailable",
    "SyncClient",
    "Unreachable",
]
