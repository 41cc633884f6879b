"""GraphQL errors with ``extensions.code`` (contract section 10): the ``SseJobsError``
tree mapped once, for every query, mutation and subscription result.

    NotFound                                          NOT_FOUND
    Unauthorized                                      UNAUTHENTICATED
    BadRequest, ValidationFailed, UnsupportedMedia,   BAD_USER_INPUT
      and GraphQL's own (a document or variables
      that do not fit the schema)
    Conflict                                          CONFLICT
    TooManyRequests                                   RATE_LIMITED    (+ retryAfter)
    Unavailable                                       UNAVAILABLE     (+ retryAfter)
    anything else (a defect; logged, message hidden)  INTERNAL_SERVER_ERROR
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from sse_jobs.errors import (
    BadRequest,
    Conflict,
    NotFound,
    SseJobsError,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    ValidationFailed,
)

log = logging.getLogger(__name__)

CODES: tuple[tuple[type[SseJobsError], str], ...] = (
    (NotFound, "NOT_FOUND"),
    (Unauthorized, "UNAUTHENTICATED"),
    (BadRequest, "BAD_USER_INPUT"),
    (ValidationFailed, "BAD_USER_INPUT"),
    (UnsupportedMediaType, "BAD_USER_INPUT"),
    (Conflict, "CONFLICT"),
    (TooManyRequests, "RATE_LIMITED"),
    (Unavailable, "UNAVAILABLE"),
)
INTERNAL = "INTERNAL_SERVER_ERROR"


def code_of(exc: SseJobsError) -> str:
    return next((code for kind, code in CODES if isinstance(exc, kind)), INTERNAL)


def expected(error: GraphQLError) -> bool:
    """An answer the API gives on purpose (or a document that does not fit the schema),
    not a defect."""
    return error.original_error is None or isinstance(error.original_error, SseJobsError)


def coded(error: GraphQLError) -> GraphQLError:
    """``error`` with its ``extensions.code``; a defect's message is replaced, so that
    nothing internal leaks."""
    original = error.original_error
    extensions: dict[str, Any] = dict(error.extensions or {})
    message = error.message
    if original is None:
        extensions.setdefault("code", "BAD_USER_INPUT")
    elif isinstance(original, SseJobsError):
        extensions["code"] = code_of(original)
        if original.retry_after is not None:
            extensions["retryAfter"] = original.retry_after
        if isinstance(original, ValidationFailed):
            extensions["errors"] = original.errors
    else:
        extensions["code"] = INTERNAL
        message = "an unexpected error occurred; it has been logged"
    return GraphQLError(message, nodes=error.nodes, source=error.source,
                        positions=error.positions, path=error.path, original_error=original,
                        extensions=extensions)


class ErrorCodes(SchemaExtension):
    """Gives every error of every result its code: a query's or mutation's one result,
    and each result a subscription streams."""

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        if result is not None and result.errors:
            result.errors = [coded(error) for error in result.errors]

    def on_stream_result(self, result: Any) -> Iterator[None]:
        if getattr(result, "errors", None):
            result.errors = [coded(error) for error in result.errors]
        yield


def log_defects(errors: list[GraphQLError]) -> None:
    """Log the errors that are defects, with their tracebacks; expected ones are answers."""
    for error in errors:
        if not expected(error):
            log.error("unexpected error in a GraphQL operation: %s", error.message,
                      exc_info=error.original_error)
