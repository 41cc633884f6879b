"""Event payload helpers."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from sse_jobs.events import EventDraft, event_data, iso, progress_data
from sse_jobs.states import EventName


@settings(max_examples=500)
@given(st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False))
def test_iso_matches_datetime_formatting(timestamp: float) -> None:
    expected = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert iso(timestamp) == expected


def test_iso_of_none_is_none() -> None:
    assert iso(None) is None
    assert iso(1.9999999) == "1970-01-01T00:00:02.000000Z"


@settings(max_examples=300)
@given(st.integers(1, 10**9), st.floats(0, 4_000_000_000, allow_nan=False),
       st.floats(0, 100), st.none() | st.text(max_size=50),
       st.none() | st.floats(0, 10**7, allow_nan=False))
def test_progress_data_is_the_bytes_event_data_makes(
    seq: int, at: float, progress: float, message: str | None, eta: float | None,
) -> None:
    job_id = "01M8900000000000000000000A"
    expected = event_data(job_id, seq, EventDraft(
        EventName.PROGRESS, at, {"progress": progress, "message": message, "eta": eta}))
    assert progress_data(job_id, seq, iso(at), progress, message, eta) == expected
