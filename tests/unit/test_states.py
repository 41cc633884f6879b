"""The job state machine: one table of allowed transitions, terminal states are final."""

from __future__ import annotations

import pytest

from sse_jobs.states import (
    TERMINAL_EVENTS,
    TERMINAL_STATES,
    TRANSITIONS,
    EventName,
    JobState,
    allowed_from,
    state_after,
)

Q, P, C, F, X = (JobState.QUEUED, JobState.PROCESSING, JobState.COMPLETED, JobState.FAILED,
                 JobState.CANCELLED)

# event -> (states it may be recorded in, the state afterwards), as the contract describes it.
EXPECTED: dict[EventName, tuple[set[JobState], JobState]] = {
    EventName.PROCESSING: ({Q}, P),
    EventName.PROGRESS: ({P}, P),
    EventName.RETRYING: ({P}, Q),
    EventName.COMPLETED: ({P}, C),
    EventName.FAILED: ({Q, P}, F),
    EventName.CANCELLED: ({Q, P}, X),
}


def test_names_are_the_contracts() -> None:
    assert [s.value for s in JobState] == ["queued", "processing", "completed", "failed",
                                           "cancelled"]
    assert [e.value for e in EventName] == ["queued", "processing", "progress", "retrying",
                                            "completed", "failed", "cancelled"]


def test_the_transition_table() -> None:
    assert {event: (set(allowed), after) for event, (allowed, after) in TRANSITIONS.items()} \
        == EXPECTED


@pytest.mark.parametrize("event", list(EXPECTED))
def test_allowed_from_and_state_after(event: EventName) -> None:
    allowed, after = EXPECTED[event]
    assert allowed_from(event) == frozenset(allowed)
    assert state_after(event) is after


def test_queued_is_only_the_first_event() -> None:
    """``queued`` is written when a job is created, never as a transition of a job."""
    assert EventName.QUEUED not in TRANSITIONS
    assert state_after(EventName.QUEUED) is JobState.QUEUED


def test_terminal_states_have_no_way_out() -> None:
    assert {C, F, X} == TERMINAL_STATES
    for event, (allowed, _after) in TRANSITIONS.items():
        assert not allowed & TERMINAL_STATES, event


def test_every_non_terminal_state_can_end() -> None:
    """A queued or processing job can always be cancelled or failed."""
    for state in (Q, P):
        assert state in allowed_from(EventName.CANCELLED)
        assert state in allowed_from(EventName.FAILED)


def test_terminal_flags() -> None:
    assert {s for s in JobState if s.terminal} == {C, F, X}
    assert {EventName.COMPLETED, EventName.FAILED, EventName.CANCELLED} == TERMINAL_EVENTS
    for event in EventName:
        assert event.terminal == state_after(event).terminal, event


def test_only_terminal_events_lead_to_terminal_states() -> None:
    for event, (_allowed, after) in TRANSITIONS.items():
        assert after.terminal == (event in TERMINAL_EVENTS), event


def test_every_state_is_reachable_from_queued() -> None:
    reached, frontier = {Q}, [Q]
    while frontier:
        state = frontier.pop()
        for allowed, after in TRANSITIONS.values():
            if state in allowed and after not in reached:
                reached.add(after)
                frontier.append(after)
    assert reached == set(JobState)


def test_states_compare_as_their_names() -> None:
    assert JobState("queued") is Q
    assert EventName("progress") is EventName.PROGRESS
    assert P == "processing"
    with pytest.raises(ValueError, match="bogus"):
        JobState("bogus")
