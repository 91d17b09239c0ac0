"""The state machine's laws (docs/design.md#contract-2), property-tested."""
from datetime import datetime, timedelta, timezone

from hypothesis import given, strategies as st

from tracker.core.reduce import Report, delivery_times, plan
from tracker.core.states import State, fold, merge, step

states = st.sampled_from(list(State))
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@given(st.lists(states))
def test_final_state_is_highest_rank_observed(seq):
    final, _ = fold(seq)
    assert final == max(seq, default=State.submitted)


@given(st.lists(states), st.randoms())
def test_order_and_duplicates_do_not_matter(seq, rnd):
    shuffled = seq + seq[: len(seq) // 2]  # duplicates
    rnd.shuffle(shuffled)
    assert fold(shuffled)[0] == fold(seq)[0]


@given(st.lists(states))
def test_transitions_strictly_increase_and_never_repeat(seq):
    final, transitions = fold(seq)
    ranks = [t.to_state for t in transitions]
    assert ranks == sorted(set(ranks))
    assert all(t.from_state < t.to_state for t in transitions)
    for a, b in zip(transitions, transitions[1:]):
        assert a.to_state == b.from_state
    assert (transitions[-1].to_state if transitions else State.submitted) == final


@given(states, states, states)
def test_merge_is_commutative_associative_idempotent(a, b, c):
    assert merge(a, b) == merge(b, a)
    assert merge(merge(a, b), c) == merge(a, merge(b, c))
    assert merge(a, a) == a


@given(states, states)
def test_lower_or_equal_report_changes_nothing(current, observed):
    t = step(current, observed)
    assert (t is None) == (observed <= current)


def test_nothing_overrides_delivered_but_read():
    for s in State:
        t = step(State.delivered, s)
        assert (t is not None) == (s == State.read)


def test_corrections():
    assert step(State.unknown, State.sent) is None  # unknown outranks non-final states
    late = step(State.unknown, State.delivered)
    assert late is not None and late.is_correction
    assert step(State.failed, State.delivered).is_correction
    assert step(State.rejected, State.failed).is_correction
    assert not step(State.sent, State.failed).is_correction
    assert not step(State.delivered, State.read).is_correction


def test_finality():
    assert [s.name for s in State if s.is_final] == [
        "unknown", "expired", "rejected", "failed", "delivered", "read"]


@given(st.lists(st.tuples(st.integers(1, 5), states), max_size=60))
def test_plan_chains_per_message(reports):
    rs = [Report(i, m, s, "poll", T0) for i, (m, s) in enumerate(reports)]
    current = {m: State.submitted for m in range(1, 6)}
    planned = plan(current, rs)
    for m in range(1, 6):
        mine = [t for t in planned if t.message_id == m]
        seen = [s for mm, s in reports if mm == m]
        expect = max(seen, default=State.submitted)
        assert (mine[-1].to_state if mine else State.submitted) == expect
        assert [t.to_state for t in mine] == sorted({t.to_state for t in mine})


timed = st.lists(st.tuples(st.integers(1, 3), states, st.integers(0, 10_000)), max_size=40)


@given(timed, st.lists(st.integers(0, 40), max_size=6))
def test_delivery_time_is_the_earliest_delivery_whatever_the_batching(reports, cuts):
    """Per batch, then kept by min (as WRITE_MESSAGES does), the delivery time is that of the
    whole sequence, and its earliest report of `delivered` or `read`; read's later time never
    stands for it."""
    rs = [Report(i, m, s, "postback", T0 + timedelta(seconds=at)) for i, (m, s, at) in enumerate(reports)]
    bounds = [0, *sorted(cuts), len(rs)]
    kept: dict[int, datetime] = {}
    for a, b in zip(bounds, bounds[1:]):
        for mid, at in delivery_times(rs[a:b]).items():
            kept[mid] = min(kept.get(mid, at), at)
    assert kept == delivery_times(rs) == delivery_times(reversed(rs))
    for m in range(1, 4):
        times = [r.occurred_at for r in rs if r.message_id == m and r.state >= State.delivered]
        assert kept.get(m) == min(times, default=None)


def test_delivery_time_is_not_the_read_time():
    rs = [Report(1, 1, State.read, "postback", T0 + timedelta(seconds=600)),
          Report(2, 1, State.delivered, "postback", T0 + timedelta(seconds=5)),
          Report(3, 2, State.failed, "postback", T0)]
    assert delivery_times(rs) == {1: T0 + timedelta(seconds=5)}
