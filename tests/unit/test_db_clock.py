"""The database's clock read on this host's (tracker.db.clock): the offset is the database's
reading minus the middle of the round trip, and now() is this host's time moved by it."""
from __future__ import annotations

from datetime import datetime, timezone

from hypothesis import given, strategies as st

from tracker.db import clock


@given(st.floats(0, 2e9), st.floats(-1e6, 1e6), st.floats(0, 5))
def test_the_offset_is_taken_at_the_middle_of_the_round_trip(before, offset, trip):
    after = before + trip
    assert abs(clock.offset_of(before, before + trip / 2 + offset, after) - offset) < 1e-5


def test_now_is_this_host_s_time_moved_by_the_offset(monkeypatch):
    monkeypatch.setattr(clock, "_offset_s", -700.0)
    here = datetime.now(timezone.utc)
    assert abs((here - clock.now()).total_seconds() - 700) < 1
    assert abs(datetime.now(timezone.utc).timestamp() - clock.time_s() - 700) < 1
