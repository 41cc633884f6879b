"""The job author's API: ``@job`` registers a function as a job type, ``JobContext`` is
its handle while it runs in a worker process.

This package imports no server code, so a module of job types, and every worker process
that runs them, loads only it (and pydantic).
"""

from sse_jobs.errors import JobCancelled
from sse_jobs.jobs.context import JobContext
from sse_jobs.jobs.registry import REGISTRY, JobType, Registry, job

__all__ = ["REGISTRY", "JobCancelled", "JobContext", "JobType", "Registry", "job"]
