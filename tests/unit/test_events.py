"""Event payload helpers."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from sse_jobs.events import iso


@settings(max_examples=500)
@given(st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False))
def test_iso_matches_datetime_formatting(timestamp: float) -> None:
    expected = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert iso(timestamp) == expected


def test_iso_of_none_is_none() -> None:
    assert iso(None) is None
    assert iso(1.9999999) == "1970-01-01T00:00:02.000000Z"
