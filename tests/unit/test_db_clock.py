"""The database's clock read on this host's (tracker.db.clock): a reading is taken at the middle
of its round trip and moved on by the monotonic clock; a reading of a long trip (a stall) does
not replace one of a short trip."""
from __future__ import annotations

import time
from datetime import datetime, timezone

from hypothesis import given, strategies as st

from tracker.db import clock


@given(st.floats(0, 1e6), st.floats(0, 2e9), st.floats(0, 5), st.floats(0, 1e4))
def test_a_reading_stands_for_the_middle_of_its_round_trip(before, database, trip, later):
    r = clock.reading(before, database, before + trip)
    assert abs(r.trip_s - trip) < 1e-6
    assert abs(r.now_s(before + trip / 2 + later) - (database + later)) < 1e-5


def test_a_stalled_reading_does_not_replace_a_quick_one():
    quick = clock.reading(10.0, 1000.0, 10.002)
    assert clock.reading(20.0, 1010.0, 22.0).better_than(quick) is False  # a 2 s stall
    assert clock.reading(20.0, 1010.0, 20.05).better_than(quick)
    assert clock.reading(20.0, 1010.0, 22.0).better_than(None)  # better than none at all
    far = clock.reading(10.0, 1000.0, 10.3)  # a database whose every trip takes 300 ms
    assert clock.reading(20.0, 1010.0, 20.35).better_than(far)


def test_now_follows_the_database_s_clock_not_the_host_s_wall_clock(monkeypatch):
    # 700 s ahead of this host's wall clock, read a moment ago on its monotonic clock.
    m = time.monotonic()
    monkeypatch.setattr(clock, "_kept", clock.reading(m - 0.001, time.time() + 700, m))
    assert abs((clock.now() - datetime.now(timezone.utc)).total_seconds() - 700) < 1
    assert abs(clock.time_s() - time.time() - 700) < 1
