"""Reading and planning intake rows: pure, no database."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, strategies as st

from tracker.adapters.base import Observation
from tracker.config_types import Config
from tracker.core.states import State
from tracker.intake.plan import plan_chunk, window_end
from tracker.intake.rows import RowError, TakenRow, read_row

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)
VENDORS = Config().vendors


def row(**kw) -> dict:
    base = dict(id=1, vendor="skycore", client_ref=None, vendor_ref="A1", recipient=None,
                submitted_at=NOW, submitted_text=str(NOW), response=None, request=None,
                response_too_large=None, response_limit=1000)
    return {**base, **kw}


@pytest.mark.parametrize("fields, reason", [
    (dict(client_ref="a\x00b"), "client_ref holds a NUL character"),
    (dict(vendor_ref="x" * 201), "vendor_ref is 201 characters long; at most 200"),
    (dict(client_ref="c" * 501), "client_ref is 501 characters long; at most 500"),
    (dict(vendor="sparrow", recipient="1" * 33), "recipient has 33 digits"),
    (dict(vendor="sparrow", recipient="+" * 200), "recipient is 200 characters long"),
    (dict(vendor="sparrow", recipient=None), "recipient is required"),
    (dict(vendor_ref="   "), "vendor_ref cannot be read"),
    (dict(submitted_at=None, submitted_text="infinity"), "'infinity' is outside the range"),
    (dict(vendor_ref=None), "neither vendor_ref nor response"),
    (dict(vendor_ref=None, response_too_large=5000), "response is 5000 bytes stored; at most 1000"),
    (dict(vendor=None), "unknown vendor None"),
])
def test_a_row_beyond_the_bounds_is_refused_with_the_reason(fields, reason):
    with pytest.raises(RowError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        read_row(row(**fields), NOW, 10)


def test_the_id_as_issued_is_kept_beside_the_normalized_one():
    taken = read_row(row(vendor="sparksender", vendor_ref=" 0042 "), NOW, 10)
    [o] = taken.observations
    assert o.issued_ref == "0042" and o.vendor_ref != " 0042 "


def observation(ref: str, state: State | None, at_s: int = 0) -> Observation:
    return Observation(vendor="skycore", vendor_ref=ref, recipient=None, state=state, code=str(state),
                       event_at=NOW + timedelta(seconds=at_s))


reports = st.lists(st.tuples(st.sampled_from(["A", "B", "C"]),
                             st.sampled_from([State.submitted, State.accepted, State.sent,
                                              State.rejected, State.failed, None]),
                             st.integers(0, 5)), min_size=1, max_size=12)


@given(reports)
def test_each_key_is_one_message_in_the_highest_state_reported_reached_step_by_step(found):
    rows = [TakenRow(i, None, NOW, [observation(ref, s, t)]) for i, (ref, s, t) in enumerate(found)]
    plan = plan_chunk(rows, VENDORS, NOW)
    assert sorted(k[1] for k in plan.keys) == sorted({ref for ref, _, _ in found})
    for k, key in enumerate(plan.keys):
        states = [s for ref, s, _ in found if ref == key[1] and s is not None]
        highest = max(states, default=State.submitted)
        assert plan.messages[k].state == highest.name
        steps = [t for t in plan.transitions if t.message_id == k]
        assert [t.to_state for t in steps] == sorted({s for s in states if s > State.submitted})
        assert all(a.to_state == b.from_state for a, b in zip(steps, steps[1:]))
        # Skycore is push-only: never polled. A key's message names the first row naming it.
        assert plan.messages[k].next_poll_at is None
        assert plan.messages[k].submission_id == next(i for i, (ref, _, _) in enumerate(found) if ref == key[1])
    assert [k for k, _ in plan.observations] == [plan.index["skycore", ref, ""] for ref, _, _ in found]


def test_a_polled_message_gets_its_first_poll_unless_final():
    rows = [TakenRow(1, None, NOW, [Observation(vendor="sparksender", vendor_ref="1", recipient=None, state=State.accepted, code="a"),
                                    Observation(vendor="sparksender", vendor_ref="2", recipient=None, state=State.rejected, code="r")])]
    plan = plan_chunk(rows, VENDORS, NOW)
    first_poll = NOW + timedelta(seconds=VENDORS["sparksender"].first_poll_s)
    assert [m.next_poll_at for m in plan.messages] == [first_poll, None]


def test_a_window_of_centuries_ends_at_the_end_of_time_not_in_an_error():
    vc = VENDORS["engagespark"]
    far = datetime(9999, 12, 1, tzinfo=timezone.utc)
    assert window_end(far, None, vc).year == 9999
    assert window_end(NOW, NOW + timedelta(days=3), vc) == NOW + timedelta(days=3, seconds=vc.deadline_margin_s)


@pytest.mark.parametrize("recipient, expected", [
    ("9779801234567", ("NP", 977)), ("14155550123", ("US", 1)), ("12045550123", ("CA", 1)),
    ("447781123456", ("GG", 44)), ("447400123456", ("GB", 44)), ("77011234567", ("KZ", 7)),
    ("79161234567", ("RU", 7)), ("94711111111", ("LK", 94)), ("639171234567", ("PH", 63)),
    ("12345", (None, None)), ("", (None, None)), (None, (None, None)), ("999999999999", (None, None)),
    ("8823456789", (None, 882)), ("1" * 16, (None, None)),
])
def test_the_destination_is_read_from_the_recipient_never_an_error(recipient, expected):
    from tracker.core.route import destination

    assert destination(recipient) == expected
    assert destination(recipient) == expected  # the second time from the cache


def test_a_message_row_carries_its_destination():
    rows = [TakenRow(1, None, NOW, [Observation(vendor="sparksender", vendor_ref="1", recipient="639171234567",
                                         state=State.accepted, code="a")])]
    m = plan_chunk(rows, VENDORS, NOW).messages[0]
    assert (m.country, m.calling_code) == ("PH", 63)


async def test_the_garbage_collector_waits_only_while_some_intake_holds_it_even_on_errors():
    import gc

    from tracker.intake import _gc_paused

    assert gc.isenabled()
    with pytest.raises(RuntimeError):
        async with _gc_paused() as outer:
            outer()
            async with _gc_paused() as inner:
                inner()
                inner()  # twice is once
            assert not gc.isenabled()  # the outer still holds it
            raise RuntimeError("the batch failed")
    assert gc.isenabled()
    async with _gc_paused():
        assert gc.isenabled()  # never paused: nothing to hold
