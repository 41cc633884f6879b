"""What a GraphQL operation knows of its request: the services it calls, and who asks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from sse_jobs.auth import ANONYMOUS
from sse_jobs.engine.admission import Admission
from sse_jobs.engine.engine import Engine
from sse_jobs.engine.jobs import Jobs
from sse_jobs.errors import Unauthorized
from sse_jobs.jobs.registry import Registry
from sse_jobs.streams.source import Streams
from sse_jobs.web.access import Access
from sse_jobs.web.keys import ACCESS, ADMISSION, ENGINE, JOB_TYPES, JOBS, STREAMS
from sse_jobs.web.sockets import Connection


@dataclass
class Context:
    """One HTTP request's, or one WebSocket connection's, operations share this."""

    request: web.Request
    response: web.StreamResponse
    principal: str | None  # None: no valid API token (yet), with tokens configured
    connection: Connection | None = None  # on a WebSocket
    connection_params: dict[str, Any] = field(default_factory=dict)  # connection_init's

    @property
    def access(self) -> Access:
        return self.request.app[ACCESS]

    @property
    def jobs(self) -> Jobs:
        return self.request.app[JOBS]

    @property
    def admission(self) -> Admission:
        return self.request.app[ADMISSION]

    @property
    def engine(self) -> Engine:
        return self.request.app[ENGINE]

    @property
    def streams(self) -> Streams:
        return self.request.app[STREAMS]

    @property
    def registry(self) -> Registry:
        return self.request.app[JOB_TYPES]

    def who(self) -> str:
        """The principal asking; raises ``Unauthorized`` (UNAUTHENTICATED) without one."""
        if self.principal is None:
            raise Unauthorized("send Authorization: Bearer <API token> (on a WebSocket: "
                               "the header, or connection_init's payload "
                               '{"Authorization": "Bearer <API token>"})')
        return self.principal


def principal_of(access: Access, authorization: Any) -> str | None:
    """Whose jobs an ``Authorization`` value opens: everyone's one anonymous principal when
    no API tokens are configured, else the token's name, or None."""
    if not access.enabled:
        return ANONYMOUS
    return access.api_tokens.principal(authorization if isinstance(authorization, str) else None)
