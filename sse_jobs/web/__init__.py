"""The HTTP layer: the composition root (``create_app``), thin handlers over the domain,
the SSE channel, and the middleware that turns every error into problem+json."""

from sse_jobs.web.app import create_app, load_job_modules

__all__ = ["create_app", "load_job_modules"]
