"""sse-jobs: long-running requests as persistent jobs with live Server-Sent Events."""

__version__ = "0.1.0"

from sse_jobs.client import ApiError, Client, SyncClient
from sse_jobs.config import Settings
from sse_jobs.registry import job
from sse_jobs.web import create_app
from sse_jobs.worker import JobContext

__all__ = ["ApiError", "Client", "JobContext", "Settings", "SyncClient", "create_app", "job"]
