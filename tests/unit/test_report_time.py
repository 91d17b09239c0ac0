"""The time a report stands for (core.reduce.report_time): the vendor's, unless absent or one no
report can mean; then the time it was received."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, strategies as st

from tracker.core.reduce import (EVENT_AHEAD_MAX, EVENT_BEFORE_SUBMISSION_MAX, EVENT_PAST_MAX, plausible,
                                 report_time)

times = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                     timezones=st.just(timezone.utc))
received = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                        timezones=st.just(timezone.utc))


@given(st.none() | times, received)
def test_a_report_stands_for_the_vendors_time_or_the_time_received_never_another(at, got):
    t = report_time(at, got)
    assert t in (at, got)
    assert got - EVENT_PAST_MAX <= t <= got + EVENT_AHEAD_MAX  # never a time no report can mean
    assert (t == at) == (at is not None and plausible(at, got))


def test_the_bounds_are_inclusive_and_go_no_further():
    got = datetime(2026, 12, 5, 12, tzinfo=timezone.utc)
    us = timedelta(microseconds=1)
    assert report_time(got + EVENT_AHEAD_MAX, got) == got + EVENT_AHEAD_MAX
    assert report_time(got + EVENT_AHEAD_MAX + us, got) == got
    assert report_time(got - EVENT_PAST_MAX, got) == got - EVENT_PAST_MAX
    assert report_time(got - EVENT_PAST_MAX - us, got) == got
    assert report_time(datetime(1, 1, 1, tzinfo=timezone.utc), got) == got  # Go's zero time


@given(st.none() | times, received, st.none() | received)
def test_a_message_known_never_takes_a_time_long_before_its_submission(at, got, submitted):
    t = report_time(at, got, submitted)
    assert t == (at if at is not None and plausible(at, got, submitted) else got)
    if submitted is not None and t != got:
        assert t >= submitted - EVENT_BEFORE_SUBMISSION_MAX
    if submitted is None:
        assert t == report_time(at, got)  # a report waiting for its message: the clock's bounds alone


def test_a_zone_misread_westwards_puts_no_delivery_before_its_submission():
    """Sparrow writing UTC, read as +05:45: every time 5 h 45 min early. Taken as given, each
    delivery came before its submission: latency 0 in the views, for years, unsaid."""
    submitted = datetime(2026, 12, 5, 15, 57, tzinfo=timezone.utc)
    got = submitted + timedelta(seconds=20)
    misread = got - timedelta(hours=5, minutes=45)
    assert report_time(misread, got, submitted) == got
    us = timedelta(microseconds=1)
    edge = submitted - EVENT_BEFORE_SUBMISSION_MAX  # clocks a little apart: the vendor's time
    assert report_time(edge, got, submitted) == edge
    assert report_time(edge - us, got, submitted) == got
