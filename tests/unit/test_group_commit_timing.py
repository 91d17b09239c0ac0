"""When the group commit writes a batch (tracker.postbacks.commit.write_at): pure, no I/O."""
from hypothesis import given
from hypothesis import strategies as st

from tracker.postbacks.commit import write_at

times = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)
waits = st.floats(min_value=0.0, max_value=10.0, allow_nan=False)


@st.composite
def states(draw):
    """(now, oldest_at, pending, writing, last_start, last_size, max_items, max_wait_s), with
    the oldest pending postback arrived by now."""
    now = draw(times)
    oldest_at = now - draw(waits)
    max_items = draw(st.integers(min_value=1, max_value=2000))
    return (now, oldest_at, draw(st.integers(min_value=1, max_value=3000)), draw(st.booleans()),
            now - draw(waits), draw(st.integers(min_value=0, max_value=2000)), max_items, draw(waits))


def at(s):
    now, oldest_at, pending, writing, last_start, last_size, max_items, max_wait_s = s
    return write_at(now, oldest_at, pending, writing, last_start, last_size,
                    max_items=max_items, max_wait_s=max_wait_s)


@given(states())
def test_no_postback_waits_past_its_wait_for_company(s):
    now, oldest_at, *_, max_wait_s = s
    assert at(s) <= max(now, oldest_at + max_wait_s)


@given(states())
def test_a_full_batch_goes_at_once(s):
    now, oldest_at, pending, writing, last_start, last_size, max_items, max_wait_s = s
    full = (now, oldest_at, max(pending, max_items), writing, last_start, last_size, max_items, max_wait_s)
    assert at(full) <= now


@given(states())
def test_no_wait_for_company_means_at_once(s):
    now, *_ = s
    assert at(s[:-1] + (0.0,)) <= now


@given(states())
def test_postbacks_one_at_a_time_on_an_idle_database_go_at_once(s):
    now, oldest_at, pending, _, last_start, _, max_items, max_wait_s = s
    assert at((now, oldest_at, pending, False, last_start, 1, max_items, max_wait_s)) <= now
    assert at((now, oldest_at, pending, False, last_start, 0, max_items, max_wait_s)) <= now


def test_while_a_write_is_in_progress_the_batch_grows_until_its_oldest_is_due():
    assert write_at(10.0, 9.999, 3, True, 9.0, 1, max_items=100, max_wait_s=0.005) == 9.999 + 0.005


def test_postbacks_in_company_wait_for_the_pace_since_the_last_batch():
    # the last batch (4 rows) began 1 ms ago: this one starts 5 ms after it, not now
    assert write_at(10.0, 10.0, 1, False, 9.999, 4, max_items=100, max_wait_s=0.005) == 9.999 + 0.005
    # ... and not later than its oldest's own wait either
    assert write_at(10.0, 9.990, 1, False, 9.999, 4, max_items=100, max_wait_s=0.005) == 9.990 + 0.005
    # the last batch began longer ago than that: at once
    assert write_at(10.0, 10.0, 1, False, 9.9, 4, max_items=100, max_wait_s=0.005) <= 10.0
