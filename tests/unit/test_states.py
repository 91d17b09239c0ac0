"""The state machine's laws (docs/design.md#contract-2), property-tested."""
from datetime import datetime, timezone

from hypothesis import given, strategies as st

from tracker.core.reduce import Report, plan
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
