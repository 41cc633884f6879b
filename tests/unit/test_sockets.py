"""WebSocket text frames as a server sends them (RFC 6455 section 5.2), byte for byte
(``tests/integration/test_websocket.py`` reads every length form back with clients)."""

from __future__ import annotations

import pytest

from sse_jobs.web.sockets import text_frame


def test_a_short_frame_is_the_rfcs_example() -> None:
    assert text_frame(b"Hello") == bytes([0x81, 0x05]) + b"Hello"  # RFC 6455 section 5.7


@pytest.mark.parametrize(("size", "header"), [
    (125, bytes([0x81, 125])),
    (126, bytes([0x81, 126, 0x00, 126])),
    (65535, bytes([0x81, 126, 0xFF, 0xFF])),
    (65536, bytes([0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0])),
])
def test_the_length_takes_7_16_or_64_bits(size: int, header: bytes) -> None:
    payload = b"x" * size
    assert text_frame(payload) == header + payload
