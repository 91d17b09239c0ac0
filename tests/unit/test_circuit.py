"""The circuit breaker (tracker.poller.circuit), as a pure state machine."""
from hypothesis import given
from hypothesis import strategies as st

from tracker.poller import circuit as cb

N, RESET = 5, 60.0


def feed(outcomes, c=None, now=0.0):
    c = c or cb.Circuit()
    for o in outcomes:
        c = cb.record(c, o, now, N)
    return c


@given(st.lists(st.sampled_from(["ok", "error"])))
def test_closed_until_n_consecutive_errors(outcomes):
    c = feed(outcomes)
    run = longest = 0
    for o in outcomes:
        run = run + 1 if o == "error" else 0
        longest = max(longest, run)
    assert (c.state == "open") == (longest >= N)


@given(st.lists(st.sampled_from(["ok", "error", "account"])), st.floats(0, 1e6))
def test_an_account_error_opens_at_once_from_any_state(before, now):
    c = cb.record(feed(before), "account", now, N)
    assert c.state == "open" and c.opened_at == now
    assert cb.allow(c, now + RESET - 0.001, RESET) == (c, False)


@given(st.floats(0, RESET - 1e-6))
def test_open_blocks_until_the_reset_then_lets_one_probe_through(elapsed):
    c = feed(["error"] * N, now=100.0)
    assert cb.allow(c, 100.0 + elapsed, RESET)[1] is False
    assert abs(cb.reopens_in(c, 100.0 + elapsed, RESET) - (RESET - elapsed)) < 1e-9
    probe, ok = cb.allow(c, 100.0 + RESET, RESET)
    assert ok and probe.state == "half_open"
    assert cb.allow(probe, 100.0 + RESET, RESET)[1] is False  # one probe only
    assert cb.record(probe, "ok", 200.0, N) == cb.Circuit()  # the probe closes it
    again = cb.record(probe, "error", 200.0, N)
    assert again.state == "open" and again.opened_at == 200.0  # ... or opens it anew


def test_answers_arriving_while_open_change_nothing():
    c = feed(["error"] * N, now=1.0)
    assert cb.record(c, "ok", 2.0, N) == c
    assert cb.record(c, "error", 2.0, N) == c


def test_a_probe_that_did_not_go_out_is_released():
    probe, _ = cb.allow(feed(["account"], now=0.0), RESET, RESET)
    released = cb.release_probe(probe)
    assert cb.allow(released, RESET, RESET)[1] is True
    assert cb.release_probe(cb.Circuit()) == cb.Circuit()
