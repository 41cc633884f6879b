"""sse-jobs: long-running requests as persistent jobs with live Server-Sent Events.

The public API, loaded on first use so that each kind of user pays only for its part:
a module of job types (``job``, ``JobContext``) and every worker process load the job
author's API alone, a script using ``Client`` loads the client alone, and only
``create_app`` and ``Settings`` bring in the server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "job": "sse_jobs.jobs",
    "JobContext": "sse_jobs.jobs",
    "JobCancelled": "sse_jobs.jobs",
    "ApiError": "sse_jobs.client",
    "Client": "sse_jobs.client",
    "SyncClient": "sse_jobs.client",
    "Settings": "sse_jobs.config",
    "create_app": "sse_jobs.web",
}

__all__ = ["ApiError", "Client", "JobCancelled", "JobContext", "Settings", "SyncClient",
           "create_app", "job"]

if TYPE_CHECKING:
    from sse_jobs.client import ApiError, Client, SyncClient
    from sse_jobs.config import Settings
    from sse_jobs.jobs import JobCancelled, JobContext, job
    from sse_jobs.web import create_app


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sse_jobs' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value
