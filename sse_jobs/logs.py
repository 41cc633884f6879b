"""Structured logging: one line per record, as text or JSON, with request and job ids.

The request id lives in a context variable set by the web middleware, so every line
logged while a request is handled carries it without being passed around. Lines about
a job pass ``extra={"job_id": ...}`` (see ``job_extra``).
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
_SHOWN = "sse_jobs_shown"
_IDS = ("request_id", "job_id", "principal")  # what a line is about, when it says


def job_extra(job_id: str) -> dict[str, Any]:
    """``extra=`` for a log call about one job."""
    return {"job_id": job_id}


def principal_extra(principal: str | None) -> dict[str, Any]:
    """``extra=`` for an access-log line: the authenticated name, when there is one."""
    return {"principal": principal} if principal else {}


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        if not hasattr(record, "job_id"):
            record.job_id = None
        return True


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", "request_id"?, "job_id"?, "principal"?,
    "error"?}``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _IDS:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        if hasattr(record, _SHOWN):
            key, value = getattr(record, _SHOWN)
            line[key] = value
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


class TextFormatter(logging.Formatter):
    """One line per record, whatever it carries: control characters (from a request path,
    say) are written as escapes, so that no value can forge a line or drive a terminal.
    A traceback after the line keeps its own lines."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s%(ids)s")

    def format(self, record: logging.LogRecord) -> str:
        ids = [f"{key}={value}" for key in _IDS
               if (value := getattr(record, key, None)) is not None]
        suffix = f" [{' '.join(ids)}]" if ids else ""
        if hasattr(record, _SHOWN):
            key, value = getattr(record, _SHOWN)
            suffix += f" {key}={value}"
        record.ids = suffix
        return super().format(record)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        line = super().formatMessage(record)
        return line if line.isprintable() else "".join(map(_escape, line))


def _escape(char: str) -> str:
    """``char`` as is when printable, else as ``\\xNN`` (``\\uNNNN`` beyond Latin-1)."""
    if char.isprintable():
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def show_once(message: str, key: str, value: str) -> None:
    """Tell the operator a value they must copy now (a generated secret), in the log's
    format, whatever the log level. The one place a secret is ever written out."""
    record = logging.LogRecord("sse_jobs", logging.WARNING, __file__, 0, message, None, None)
    setattr(record, _SHOWN, (key, value))
    for handler in logging.getLogger().handlers:
        handler.handle(record)


def configure(level: str, fmt: str) -> None:
    """Send every log record to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
