"""Reading and planning intake rows: pure, no database."""
from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import orjson
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
    (dict(vendor_ref=None, response_too_large=5000), "response is 5000 bytes as JSON text; at most 1000"),
    (dict(vendor_ref=None, response_too_large=5000, too_large_field="request"),
     "request is 5000 bytes as JSON text; at most 1000"),
    (dict(vendor=None), "unknown vendor None"),
])
def test_a_row_beyond_the_bounds_is_refused_with_the_reason(fields, reason):
    with pytest.raises(RowError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        read_row(row(**fields), NOW, 10)


def test_the_id_as_issued_is_kept_beside_the_normalized_one():
    taken = read_row(row(vendor="sparksender", vendor_ref=" 0042 "), NOW, 10)
    [o] = taken.observations
    assert o.issued_ref == "0042" and o.vendor_ref != " 0042 "


def test_invisible_characters_in_an_id_are_removed_and_noted():
    # A byte-order mark or zero-width space from a CSV export: the id was kept with it, and no
    # report ever matched (the message went `unknown`), without a word.
    for raw in ("\ufeffSM" + "c" * 32, "SM" + "c" * 16 + "\u200b" + "c" * 16):
        taken = read_row(row(vendor="twilio", vendor_ref=raw), NOW, 10)
        [o] = taken.observations
        assert o.vendor_ref == "SM" + "c" * 32 and o.issued_ref in (None, "SM" + "c" * 32)
        assert taken.note == "vendor_ref held 1 invisible characters (a byte-order mark, a " \
                             "zero-width space): removed", taken.note
    assert read_row(row(vendor="twilio", vendor_ref="SM" + "c" * 32), NOW, 10).note is None


def test_a_submitted_at_ahead_of_the_clock_is_taken_and_noted():
    # A local time written as UTC (Nepal, +5:45): taken, within the day allowed, but every
    # latency measured from it read short (sub-second deliveries), without a word.
    taken = read_row(row(submitted_at=NOW + timedelta(hours=5, minutes=45)), NOW, 10)
    assert taken.note == ("submitted_at is 345 minutes ahead of the tracker's clock (a local time "
                          "written as UTC?): delivery latencies measured from it read short")
    assert read_row(row(submitted_at=NOW + timedelta(minutes=4)), NOW, 10).note is None


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
    # Messages are inserted in key order (two workers never deadlock on shared keys).
    assert [plan.keys[k] for k in plan.order] == sorted(plan.keys)
    message = dict(zip(plan.keys, plan.messages))
    for k, key in enumerate(plan.keys):
        states = [s for ref, s, _ in found if ref == key[1] and s is not None]
        highest = max(states, default=State.submitted)
        assert message[key].state == highest.name
        steps = [t for t in plan.transitions if t.message_id == k]
        assert [t.to_state for t in steps] == sorted({s for s in states if s > State.submitted})
        assert all(a.to_state == b.from_state for a, b in zip(steps, steps[1:]))
        # Skycore is push-only: never polled. A key's message names the first row naming it.
        assert message[key].next_poll_at is None
        assert message[key].submission_id == next(i for i, (ref, _, _) in enumerate(found) if ref == key[1])
    assert [k for k, _ in plan.observations] == [plan.index["skycore", ref, ""] for ref, _, _ in found]


def test_a_message_delivered_then_read_in_one_response_keeps_the_delivery_time():
    # as the reducer does (core.reduce.delivery_times): the earliest delivered-or-read report,
    # not the last step's time (a read's)
    rows = [TakenRow(1, None, NOW, [observation("A", State.read, 600), observation("A", State.delivered, 5)])]
    [m] = plan_chunk(rows, VENDORS, NOW).messages
    assert (m.state, m.delivered_at) == ("read", NOW + timedelta(seconds=5))


def test_a_polled_message_gets_its_first_poll_unless_final():
    rows = [TakenRow(1, None, NOW, [Observation(vendor="sparksender", vendor_ref="1", recipient=None, state=State.accepted, code="a"),
                                    Observation(vendor="sparksender", vendor_ref="2", recipient=None, state=State.rejected, code="r")])]
    plan = plan_chunk(rows, VENDORS, NOW)
    first_poll = NOW + timedelta(seconds=VENDORS["sparksender"].first_poll_s)
    assert [m.next_poll_at for m in plan.messages] == [first_poll, None]


def test_a_message_taken_in_where_its_vendor_is_disabled_is_polled_where_it_is_not():
    rows = [TakenRow(1, None, NOW, [Observation(vendor="sparksender", vendor_ref="1", recipient=None,
                                                state=State.accepted, code="a")])]
    off = {**VENDORS, "sparksender": dataclasses.replace(VENDORS["sparksender"], enabled=False)}
    [m] = plan_chunk(rows, off, NOW).messages
    assert m.next_poll_at == NOW + timedelta(seconds=VENDORS["sparksender"].first_poll_s)


def test_an_id_listed_again_is_tracked_once_and_the_row_says_so():
    def sent(ref, to):
        return Observation(vendor="sparksender", vendor_ref=ref, recipient=to, state=State.accepted, code="a")
    rows = [TakenRow(1, "c1", NOW, [sent("7", "94771000000"), sent("7", "+94 77 100 0000"),  # the same number
                                    sent("8", "94771000001"), sent("8", "94771000002"), sent("8", "94771000003")]),
            TakenRow(2, "c2", NOW, [sent("7", "94771000009"), sent("9", "94771000004")])]
    plan = plan_chunk(rows, VENDORS, NOW)
    assert [(m.vendor_ref, m.recipient, m.client_ref) for m in plan.messages] == [
        ("7", "94771000000", "c1"), ("8", "94771000001", "c1"), ("9", "94771000004", "c2")]
    assert plan.first_row == [1, 1, 2]
    assert plan.notes == {
        1: ["2 vendor id(s) listed again for another recipient, e.g. '8': '94771000001', '94771000002': "
            "each tracked once, for the recipient listed first"],
        2: ["1 vendor id(s) named by an earlier row too, e.g. '7' (row 1): tracked once, with that row's "
            "client_ref and recipient; this row adds its reports"]}


def test_a_send_refused_before_an_id_is_rejected_never_polled_even_with_an_unmapped_code():
    # DESIGN: a send the vendor refused is `rejected`; its unmapped code is recorded (the
    # observation keeps state None: counted as unmapped), not guessed into a mapped reason.
    refused = Observation(vendor="sparksender", vendor_ref="", recipient="94711111111", state=None,
                          code="299")
    taken = read_row(row(vendor="sparksender", vendor_ref=None, response='{"status_code": 299}',
                         request='{"recipient_contact_no": "94711111111"}'), NOW, 10)
    assert taken.observations == [dataclasses.replace(refused, vendor_ref="refused:1:0",
                                                      raw=taken.observations[0].raw)]
    assert taken.by_row == {0}
    plan = plan_chunk([taken], VENDORS, NOW)
    [m] = plan.messages
    assert (m.vendor_ref, m.state, m.next_poll_at) == ("refused:1:0", "rejected", None)
    assert (m.failure_code, m.failure_permanent) == ("299", None)
    assert "not mapped" in m.failure_reason
    [(_, o)] = plan.observations
    assert o.state is None
    [t] = plan.transitions
    assert (t.from_state, t.to_state) == (State.submitted, State.rejected)


def test_a_sparrow_recipient_without_digits_is_noted_on_the_row():
    taken = read_row(row(vendor="sparrow", vendor_ref=None,
                         request='{"session": {"recipients": ["9779800000001", "N/A"]}}',
                         response='{"result": "00", "status": "OK", "data": {"batch_id": "b-1",'
                                  ' "invalid_recipients": ["N/A"]}}'), NOW, 10)
    assert [o.recipient for o in taken.observations] == ["9779800000001"]
    assert taken.note == "1 recipient(s) of the request have no digits and name no message: 'N/A'"


def test_engagespark_ids_beside_an_account_problem_are_taken_with_a_note():
    taken = read_row(row(vendor="engagespark", vendor_ref=None,
                         request='{"messages": [{"to": "639170000001"}, {"to": "639170000002"}]}',
                         response='{"messages": [{"id": "SMS1-1-0"}, {"error": "not sent", "errorCode": "X"}],'
                                  ' "error": "Insufficient balance: 1 of 2 messages not sent"}'), NOW, 10)
    assert [(o.vendor_ref, o.state) for o in taken.observations] == [
        ("SMS1-1-0", State.accepted), ("refused:1:1", State.rejected)]
    assert taken.note == ("the vendor reported an account problem: 402 Insufficient balance: "
                          "1 of 2 messages not sent")


@pytest.mark.parametrize("given, noted", [
    ('"not a date"', True), ('"99999-12-05T23:00:02Z"', True), ('"9999-12-31T10:00:00-14:00"', True),
    ("12", True), ('"2019-07-02T05:31:21.814068733Z"', False), ('""', False), ("null", False)])
def test_an_engagespark_deadline_given_but_unreadable_is_noted(given, noted):
    taken = read_row(row(vendor="engagespark", vendor_ref=None, request='{"to": "639170000001"}',
                         response=f'{{"messageId": "SMS7", "to": "639170000001", "deliveryDeadline": {given}}}'),
                     NOW, 10)
    [o] = taken.observations
    assert (o.deadline is None) is (given != '"2019-07-02T05:31:21.814068733Z"')
    value = orjson.loads(given)
    shown = repr(value) if isinstance(value, str) else "of type int"
    assert (taken.note == f"the vendor's deliveryDeadline {shown} cannot be read: its "
                          "documented retry period (24 h after the send) stands in for it") is noted
    assert noted or taken.note is None


def test_the_messages_of_a_row_count_an_id_listed_twice_once():
    taken = read_row(row(vendor="engagespark", vendor_ref=None,
                         response='{"messages": [{"id": "SMS1-1-0"}, {"id": "SMS1-1-0"}, {"id": "SMS1-1-1"}]}'),
                     NOW, 10)
    assert (len(taken.observations), taken.messages) == (3, 2)


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
    # a national form: a US number without its 1 is no Swiss number (+41 has no 10-digit
    # numbers): no country rather than a guessed one
    ("4155552671", (None, None)), ("14155552671", ("US", 1)), ("4144668181", (None, None)),
    ("41446681800", ("CH", 41)),
])
def test_the_destination_is_read_from_the_recipient_never_an_error(recipient, expected):
    from tracker.core.route import destination

    assert destination(recipient) == expected
    assert destination(recipient) == expected  # the second time from the cache


@given(st.text("0123456789", min_size=7, max_size=15), st.text("0123456789", min_size=7, max_size=15))
def test_a_cached_destination_is_what_phonenumbers_says_of_the_number_itself(first, number):
    # The cache keys a single-region calling code by the code and the length alone: the answer for
    # `number` must not depend on which number came first. (Regions sharing a code go by the
    # leading digits: the first number of a prefix stands for the rest, as documented.)
    import phonenumbers

    from tracker.core.route import _NON_GEOGRAPHIC, COUNTRY_CODE_TO_REGION_CODE, destination

    destination(first)
    got = destination(number)
    try:
        parsed = phonenumbers.parse("+" + number, None)
    except phonenumbers.NumberParseException:
        assert got == (None, None)
        return
    if not phonenumbers.is_possible_number(parsed):
        assert got == (None, None)
        return
    regions = COUNTRY_CODE_TO_REGION_CODE[parsed.country_code]
    if len(regions) == 1 and regions[0] != _NON_GEOGRAPHIC:
        assert got == (regions[0], parsed.country_code)
    else:
        assert got[1] == parsed.country_code


def test_a_vendor_time_no_report_can_mean_is_noted_and_the_time_taken_in_stands_for_it():
    sid = "SM" + "a" * 32
    response = orjson.dumps({"sid": sid, "status": "queued", "to": "+14155550100",
                             "date_updated": "Thu, 30 Jul 2099 20:12:33 +0000"}).decode()
    taken = read_row(row(vendor="twilio", vendor_ref=None, response=response), NOW, 10)
    assert "1 vendor event time(s) over 10 minutes ahead" in taken.note
    [m] = plan_chunk([taken], VENDORS, NOW).transitions
    assert m.report.occurred_at == NOW  # not 2099


def test_a_vendor_time_long_before_the_submission_is_noted_and_the_time_taken_in_stands_for_it():
    sid = "SM" + "b" * 32
    response = orjson.dumps({"sid": sid, "status": "queued", "to": "+14155550100",
                             "date_updated": "Wed, 02 Dec 2026 06:15:00 +0000"}).decode()  # 5 h 45 early
    taken = read_row(row(vendor="twilio", vendor_ref=None, response=response), NOW, 10)
    assert "10 minutes before submitted_at" in taken.note and taken.note.startswith("1 vendor event time(s)")
    [m] = plan_chunk([taken], VENDORS, NOW).transitions
    assert m.report.occurred_at == NOW


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
