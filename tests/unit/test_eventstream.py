"""Tests for the pure SSE wire format (encoder and WHATWG event-stream parser)."""

from __future__ import annotations

from itertools import pairwise

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sse_jobs.eventstream import (
    EventStreamParser,
    ServerSentEvent,
    encode_comment,
    encode_event,
    encode_json_event,
    encode_retry,
)


def parse(raw: bytes) -> list[ServerSentEvent]:
    return EventStreamParser().feed(raw)


def parse_bytewise(raw: bytes) -> list[ServerSentEvent]:
    parser = EventStreamParser()
    return [event for i in range(len(raw)) for event in parser.feed(raw[i : i + 1])]


# --- encoding ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("hello", b"data: hello\n\n"),
        ("", b"data: \n\n"),
        ("a\r\nb", b"data: a\ndata: b\n\n"),
        ("a\rb", b"data: a\ndata: b\n\n"),
        ("a\nb", b"data: a\ndata: b\n\n"),
        ("a\n", b"data: a\ndata: \n\n"),
        ("a\r\n\r\n", b"data: a\ndata: \ndata: \n\n"),
        ("\n\r", b"data: \ndata: \ndata: \n\n"),
        (" lead", b"data:  lead\n\n"),
        ("caf\u00e9 \u2603", "data: caf\u00e9 \u2603\n\n".encode()),
        ("no\u2028split\x0bhere", "data: no\u2028split\x0bhere\n\n".encode()),
    ],
)
def test_encode_event_data(data: str, expected: bytes) -> None:
    assert encode_event(data) == expected


def test_encode_event_field_order() -> None:
    assert encode_event("x", id=7, event="progress") == b"id: 7\nevent: progress\ndata: x\n\n"
    assert encode_event("x", id="abc") == b"id: abc\ndata: x\n\n"
    assert encode_event("x", event="done") == b"event: done\ndata: x\n\n"
    assert encode_event("x", id="") == b"id: \ndata: x\n\n"


@pytest.mark.parametrize("bad", ["a\rb", "a\nb", "a\r\n", "a\x00b"])
def test_encode_event_rejects_bad_id_and_event(bad: str) -> None:
    with pytest.raises(ValueError, match="id"):
        encode_event("x", id=bad)
    with pytest.raises(ValueError, match="event"):
        encode_event("x", event=bad)


def test_encode_event_rejects_empty_event() -> None:
    with pytest.raises(ValueError, match="empty"):
        encode_event("x", event="")


def test_encode_comment() -> None:
    assert encode_comment("ping") == b": ping\n\n"
    assert encode_comment() == b":\n\n"
    for bad in ("a\nb", "a\r", "\r\n"):
        with pytest.raises(ValueError, match="comment"):
            encode_comment(bad)


def test_encode_retry() -> None:
    assert encode_retry(3000) == b"retry: 3000\n\n"
    assert encode_retry(0) == b"retry: 0\n\n"
    with pytest.raises(ValueError, match="retry"):
        encode_retry(-1)


# --- parsing -----------------------------------------------------------------------------------


def test_parse_basic_event() -> None:
    raw = b"id: 1\nevent: progress\ndata: a\ndata: b\n\n"
    assert parse(raw) == [ServerSentEvent("a\nb", "progress", "1")]


def test_parse_leading_bom_stripped_once() -> None:
    assert parse(b"\xef\xbb\xbfdata: x\n\n") == [ServerSentEvent("x")]
    # A second BOM is part of the first line's field name, making it an unknown field.
    assert parse(b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\n") == []
    # A BOM split across chunks is still stripped.
    assert parse_bytewise(b"\xef\xbb\xbfdata: x\n\n") == [ServerSentEvent("x")]


def test_parse_bom_only_at_stream_start() -> None:
    parser = EventStreamParser()
    assert parser.feed(b"data: x\n\n") == [ServerSentEvent("x")]
    assert parser.feed(b"\xef\xbb\xbfdata: y\n\n") == []


@pytest.mark.parametrize("eol", [b"\n", b"\r", b"\r\n"])
def test_parse_line_endings(eol: bytes) -> None:
    raw = b"data: a" + eol + b"data: b" + eol + eol
    assert parse(raw) == [ServerSentEvent("a\nb")]
    assert parse_bytewise(raw) == [ServerSentEvent("a\nb")]


def test_parse_crlf_split_across_chunks() -> None:
    parser = EventStreamParser()
    assert parser.feed(b"data: a\r") == []
    # The LF completes the CRLF; it must not count as a second (blank) line.
    assert parser.feed(b"\ndata: b\r") == []
    assert parser.feed(b"\n\r") == [ServerSentEvent("a\nb")]
    assert parser.feed(b"\n") == []


def test_parse_cr_dispatches_without_waiting_for_next_chunk() -> None:
    parser = EventStreamParser()
    assert parser.feed(b"data: a\r\r") == [ServerSentEvent("a")]
    assert parser.feed(b"data: b\r\r") == [ServerSentEvent("b")]


def test_parse_cr_then_lf_after_empty_decode() -> None:
    parser = EventStreamParser()
    assert parser.feed(b"data: \xc3\xa9\r") == []
    assert parser.feed(b"") == []
    assert parser.feed(b"\n\n") == [ServerSentEvent("\u00e9")]


def test_parse_lf_cr_is_two_line_endings() -> None:
    assert parse(b"data: a\n\rdata: b\n\n") == [ServerSentEvent("a"), ServerSentEvent("b")]


def test_parse_utf8_split_across_chunks() -> None:
    raw = "data: caf\u00e9 \u2603 \U0001f600\n\n".encode()
    assert parse_bytewise(raw) == [ServerSentEvent("caf\u00e9 \u2603 \U0001f600")]


def test_parse_invalid_utf8_replaced() -> None:
    assert parse(b"data: a\xffb\n\n") == [ServerSentEvent("a\ufffdb")]


def test_parse_comments_counted_and_ignored() -> None:
    parser = EventStreamParser()
    assert parser.feed(b": ping\n\n:\n\n") == []
    assert parser.comments == 2
    assert parser.feed(b"data: a\n: inside\ndata: b\n\n") == [ServerSentEvent("a\nb")]
    assert parser.comments == 3


def test_parse_field_without_colon_has_empty_value() -> None:
    assert parse(b"data\n\n") == [ServerSentEvent("")]
    assert parse(b"data\ndata\n\n") == [ServerSentEvent("\n")]
    assert parse(b"event\ndata: x\n\n") == [ServerSentEvent("x", "message")]


def test_parse_space_after_colon() -> None:
    assert parse(b"data:x\n\n") == [ServerSentEvent("x")]
    assert parse(b"data: x\n\n") == [ServerSentEvent("x")]
    assert parse(b"data:  x\n\n") == [ServerSentEvent(" x")]
    assert parse(b"data:x: y\n\n") == [ServerSentEvent("x: y")]
    assert parse(b"data :x\n\n") == []  # field name "data " is unknown


def test_parse_empty_data_line_dispatches_empty_string() -> None:
    assert parse(b"data:\n\n") == [ServerSentEvent("")]
    assert parse(b"data: \n\n") == [ServerSentEvent("")]


def test_parse_no_data_not_dispatched() -> None:
    assert parse(b"event: x\n\n") == []
    assert parse(b"\n\n\n") == []


def test_parse_event_type_resets_after_dispatch_and_empty_block() -> None:
    assert parse(b"event: a\ndata: 1\n\ndata: 2\n\n") == [
        ServerSentEvent("1", "a"),
        ServerSentEvent("2"),
    ]
    assert parse(b"event: a\n\ndata: 1\n\n") == [ServerSentEvent("1")]


def test_parse_retry() -> None:
    parser = EventStreamParser()
    assert parser.feed(b"retry: 1500\ndata: x\n\n") == [ServerSentEvent("x", retry=1500)]
    assert parser.retry == 1500
    assert parser.feed(b"data: y\n\n") == [ServerSentEvent("y")]
    for bad in (b"retry: 1.5", b"retry: -1", b"retry: 1a", b"retry:", b"retry:  10"):
        assert parser.feed(bad + b"\ndata: z\n\n") == [ServerSentEvent("z")]
    assert parser.feed("retry: \u0663\ndata: z\n\n".encode()) == [ServerSentEvent("z")]
    assert parser.retry == 1500
    assert parser.feed(b"retry: 0\n\n") == []
    assert parser.retry == 0


def test_parse_id_with_nul_ignored() -> None:
    parser = EventStreamParser()
    assert parser.feed(b"id: 1\ndata: a\n\n") == [ServerSentEvent("a", id="1")]
    assert parser.feed(b"id: 2\x003\ndata: b\n\n") == [ServerSentEvent("b", id="1")]
    assert parser.last_event_id == "1"


def test_parse_last_event_id_persists() -> None:
    parser = EventStreamParser()
    assert parser.feed(b"id: 5\ndata: a\n\ndata: b\n\n") == [
        ServerSentEvent("a", id="5"),
        ServerSentEvent("b", id="5"),
    ]
    # An id in a block without data still updates the last event ID.
    assert parser.feed(b"id: 6\n\n") == []
    assert parser.last_event_id == "6"
    assert parser.feed(b"data: c\n\n") == [ServerSentEvent("c", id="6")]
    # An empty id resets it.
    assert parser.feed(b"id\ndata: d\n\n") == [ServerSentEvent("d", id=None)]
    assert parser.last_event_id == ""


def test_parse_incomplete_final_event_not_dispatched() -> None:
    parser = EventStreamParser()
    assert parser.feed(b"id: 9\ndata: a\n") == []
    assert parser.feed(b"data: b") == []
    assert parser.last_event_id == ""  # the id buffer is committed only on dispatch


def test_parse_unknown_fields_ignored() -> None:
    assert parse(b"foo: bar\ndata: x\nDATA: y\n\n") == [ServerSentEvent("x")]


def test_parse_bytewise_equals_whole() -> None:
    raw = (
        b"\xef\xbb\xbf: hello\r\nretry: 100\r\nid: 1\revent: e\ndata: a\r\n\r\n"
        + "data: \u00e9\U0001f600\r\rid\ndata\n\n".encode()
        + b"data: trailing"
    )
    whole = parse(raw)
    assert whole == [
        ServerSentEvent("a", "e", "1", 100),
        ServerSentEvent("\u00e9\U0001f600", id="1"),
        ServerSentEvent(""),
    ]
    assert parse_bytewise(raw) == whole


# --- properties --------------------------------------------------------------------------------

_field_text = st.text(st.characters(codec="utf-8", exclude_characters="\r\n\x00"))


@st.composite
def _chunked(draw: st.DrawFn, raw: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(raw)), max_size=8)))
    bounds = [0, *cuts, len(raw)]
    return [raw[a:b] for a, b in pairwise(bounds)]


@settings(max_examples=200, deadline=None)
@given(
    data=st.text(),
    id=st.none() | _field_text,
    event=st.none() | _field_text.filter(bool),
    split=st.data(),
)
def test_roundtrip(data: str, id: str | None, event: str | None, split: st.DataObject) -> None:
    raw = encode_event(data, id=id, event=event)
    expected = ServerSentEvent(
        data=data.replace("\r\n", "\n").replace("\r", "\n"),
        event=event or "message",
        id=id or None,  # an empty id resets the last event ID, so it is dispatched as None
    )
    assert parse(raw) == [expected]
    parser = EventStreamParser()
    chunks = split.draw(_chunked(raw))
    assert [ev for chunk in chunks for ev in parser.feed(chunk)] == [expected]
    assert parser.last_event_id == (id or "")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.text(), st.none() | st.integers(0, 10**6))), st.data())
def test_roundtrip_stream(items: list[tuple[str, int | None]], split: st.DataObject) -> None:
    raw = encode_retry(1000) + b"".join(
        encode_event(data, id=id) + encode_comment("ping") for data, id in items
    )
    parser = EventStreamParser()
    events = [ev for chunk in split.draw(_chunked(raw)) for ev in parser.feed(chunk)]
    assert [ev.data for ev in events] == [
        data.replace("\r\n", "\n").replace("\r", "\n") for data, _ in items
    ]
    assert parser.comments == len(items)
    assert parser.retry == 1000


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(JSON, st.integers(0, 2**62), st.sampled_from(["queued", "progress", "completed"]))
def test_json_event_encoding_equals_the_general_one(value: object, id: int, event: str) -> None:
    data = orjson.dumps(value)
    encoded = encode_json_event(data, id=id, event=event)
    assert encoded == encode_event(data.decode(), id=id, event=event)
    [parsed] = EventStreamParser().feed(encoded)  # and it comes back unchanged
    assert (parsed.id, parsed.event, parsed.data) == (str(id), event, data.decode())
    assert orjson.loads(parsed.data) == orjson.loads(data)


@pytest.mark.parametrize("data", [b'"a"\n', b'{"a":\r1}', b"\r\n"])
def test_json_event_encoding_refuses_more_than_one_line(data: bytes) -> None:
    with pytest.raises(ValueError, match="one line"):
        encode_json_event(data, id=1, event="progress")
