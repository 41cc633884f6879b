"""The Server-Sent Events wire format, in both directions, without any I/O.

Encoding produces ``text/event-stream`` bytes; :class:`EventStreamParser` decodes them
incrementally following the WHATWG HTML Living Standard, section 9.2 "Server-sent events",
subsection 9.2.6 "Interpreting an event stream":
https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

__all__ = [
    "EventStreamParser",
    "ServerSentEvent",
    "encode_comment",
    "encode_event",
    "encode_json_event",
    "encode_retry",
]

_LINE_END = re.compile(r"\r\n|\r|\n")
_ASCII_DIGITS = frozenset("0123456789")


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event, as a browser's ``EventSource`` would see it."""

    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


def _check_field(name: str, value: str) -> None:
    if "\r" in value or "\n" in value or "\x00" in value:
        raise ValueError(f"SSE {name} must not contain CR, LF or NUL: {value!r}")


def encode_event(data: str, *, id: str | int | None = None, event: str | None = None) -> bytes:
    """Encode one event; every line of ``data`` (split on CRLF, CR or LF) gets a ``data:`` line."""
    lines: list[str] = []
    if id is not None:
        id_text = str(id)
        _check_field("id", id_text)
        lines.append(f"id: {id_text}")
    if event is not None:
        if not event:
            raise ValueError("SSE event type must not be empty")
        _check_field("event", event)
        lines.append(f"event: {event}")
    lines.extend(f"data: {line}" for line in _LINE_END.split(data))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def encode_json_event(data: bytes, *, id: int, event: str) -> bytes:
    """``encode_event`` for ``data`` that is one line of UTF-8 JSON, as orjson writes it,
    straight from the bytes: the form of every stored event, replayed by the thousand."""
    if b"\n" in data or b"\r" in data:
        raise ValueError("JSON event data must be one line")
    _check_field("event", event)
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (id, event.encode(), data)


def encode_comment(text: str = "") -> bytes:
    """Encode a comment line (ignored by clients; useful as a keep-alive heartbeat)."""
    if "\r" in text or "\n" in text:
        raise ValueError(f"SSE comment must not contain CR or LF: {text!r}")
    return f": {text}\n\n".encode() if text else b":\n\n"


def encode_retry(milliseconds: int) -> bytes:
    """Encode a ``retry:`` field setting the client's reconnection time."""
    if milliseconds < 0:
        raise ValueError(f"SSE retry must be non-negative: {milliseconds}")
    return f"retry: {milliseconds}\n\n".encode()


class EventStreamParser:
    """Incremental ``text/event-stream`` parser; feed it bytes in chunks of any size."""

    def __init__(self) -> None:
        # utf-8-sig drops exactly one leading BOM, even when it is split across chunks.
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        self._line = ""  # the incomplete last line
        self._skip_lf = False  # the previous chunk ended in CR: a leading LF completes a CRLF
        self._data = ""
        self._event_type = ""
        self._id_buffer = ""
        self._block_retry: int | None = None
        self.last_event_id = ""
        self.retry: int | None = None
        self.comments = 0

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Consume ``chunk`` and return the events it completed, in order."""
        text = self._decoder.decode(chunk)
        if not text:
            return []
        if self._skip_lf and text[0] == "\n":
            text = text[1:]
        self._skip_lf = text.endswith("\r")
        *complete, rest = _LINE_END.split(text)
        if not complete:
            self._line += rest
            return []
        complete[0] = self._line + complete[0]
        self._line = rest
        events: list[ServerSentEvent] = []
        for line in complete:
            event = self._process_line(line)
            if event is not None:
                events.append(event)
        return events

    def _process_line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line[0] == ":":
            self.comments += 1
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event_type = value
        elif name == "data":
            self._data += value + "\n"
        elif name == "id" and "\x00" not in value:
            self._id_buffer = value
        elif name == "retry" and value and set(value) <= _ASCII_DIGITS:
            # Only ASCII digits count: str.isdigit() would also accept e.g. "\u0663".
            self.retry = self._block_retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        # The last event ID is committed even when no event is dispatched.
        self.last_event_id = self._id_buffer
        data, event_type, retry = self._data, self._event_type, self._block_retry
        self._data = self._event_type = ""
        self._block_retry = None
        if not data:
            return None
        return ServerSentEvent(
            data=data.removesuffix("\n"),
            event=event_type or "message",
            id=self.last_event_id or None,
            retry=retry,
        )
