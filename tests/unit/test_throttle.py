"""tracker.throttle: a line per key a minute, the next one saying how many were left out."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tracker.throttle import Throttle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_key_a_minute_then_what_was_left_out():
    clock = Clock()
    t = Throttle(60.0, clock)
    assert t.allow("skycore") == 0  # the first at once
    assert [t.allow("skycore") for _ in range(3)] == [None, None, None]
    assert t.allow("sparrow") == 0  # another key is not held back
    clock.now += 59.9
    assert t.allow("skycore") is None
    clock.now += 0.1
    assert t.allow("skycore") == 4  # the four left out since its last line
    assert t.allow("skycore", 10) is None and t.left_out["skycore"] == 10  # a batch counts as many


@given(st.lists(st.tuples(st.sampled_from("ab"), st.floats(0, 100), st.integers(1, 5)), max_size=60))
def test_every_call_is_either_logged_or_counted_in_a_later_line(calls):
    # the law: what was logged, the left-out counts the lines carried, and what is still pending
    # account for every call; and no key logs twice within a minute
    clock = Clock()
    t = Throttle(60.0, clock)
    logged, carried, last = 0, 0, {}
    for key, step, n in calls:
        clock.now += step
        left_out = t.allow(key, n)
        if left_out is not None:
            assert clock.now - last.get(key, -1e9) >= 60.0
            last[key] = clock.now
            logged += n
            carried += left_out
    assert logged + carried + sum(t.left_out.values()) == sum(n for _, _, n in calls)
