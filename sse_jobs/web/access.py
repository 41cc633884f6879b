"""Access decisions for the web layer: who a request speaks for, and the links it gets."""

from __future__ import annotations

from dataclasses import dataclass

from sse_jobs.auth import ANONYMOUS, ApiTokens, StreamTokens, events_scope, job_scope
from sse_jobs.errors import Unauthorized
from sse_jobs.paths import events_path, job_links

# Routes a stream token may open, by route name; everything else needs an API token.
JOB_TOKEN_ROUTES = frozenset({"job_events", "job_ws", "job_result"})
EVENTS_TOKEN_ROUTES = frozenset({"all_events"})


@dataclass(frozen=True)
class Access:
    """API tokens (none: open mode) and the signer of stream tokens."""

    api_tokens: ApiTokens
    stream_tokens: StreamTokens
    metrics_token: ApiTokens  # empty: none of its own (see ``metrics``)

    @property
    def enabled(self) -> bool:
        return self.api_tokens.enabled

    def principal(self, authorization: str | None, stream_token: str | None, route: str | None,
                  job_id: str | None) -> str | None:
        """The principal a request speaks for; None when a stream token grants exactly the
        job it names. Raises ``Unauthorized``."""
        if not self.enabled:
            return ANONYMOUS
        principal = self.api_tokens.principal(authorization)
        if principal is not None:
            return principal
        scope = self.stream_tokens.scope(stream_token)
        if scope is not None and job_id is not None and route in JOB_TOKEN_ROUTES:
            if scope == job_scope(job_id):
                return None
        elif scope is not None and route in EVENTS_TOKEN_ROUTES:
            kind, _, name = scope.partition(":")
            if kind == "events":
                return name
        raise Unauthorized("send Authorization: Bearer <API token>; streams and results also "
                           "open with the token in the links the API returns")

    def metrics(self, authorization: str | None) -> None:
        """Admit a scrape of /metrics: with a metrics token, only that token; else with API
        tokens, any of them (the counts by type say what principals run); else anyone.
        Raises ``Unauthorized``."""
        if self.metrics_token.enabled:
            if self.metrics_token.principal(authorization) is None:
                raise Unauthorized("send Authorization: Bearer <metrics token>")
        elif self.enabled and self.api_tokens.principal(authorization) is None:
            raise Unauthorized("send Authorization: Bearer <API token> (or configure "
                               "--metrics-token for the scraper)")

    def job_links(self, job_id: str) -> dict[str, str]:
        """The job's links; with auth on, those a browser opens carry a stream token."""
        links = job_links(job_id)
        if self.enabled:
            token = self.stream_tokens.issue(job_scope(job_id))
            links["events"] += f"?token={token}"
            links["ws"] += f"?token={token}"
            links["result"] += f"?token={token}"
        return links

    def events_link(self, principal: str | None, after: int) -> str:
        """The global stream of ``principal`` from event ``after`` on."""
        link = f"{events_path()}?last_event_id={after}"
        if self.enabled and principal is not None:
            link += f"&token={self.stream_tokens.issue(events_scope(principal))}"
        return link
