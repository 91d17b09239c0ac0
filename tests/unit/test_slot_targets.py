"""The fair target (tracker.poller.shared_limits.fair_target): a vendor's concurrency split among
the replicas polling it, each replica's part within one of the others', the whole never more."""
from hypothesis import given
from hypothesis import strategies as st

from tracker.poller.shared_limits import fair_target

concurrencies = st.integers(min_value=1, max_value=500)
replica_counts = st.integers(min_value=1, max_value=64)


@given(concurrencies, replica_counts)
def test_the_parts_add_up_to_the_concurrency_and_differ_by_one_at_most(concurrency, replicas):
    parts = [fair_target(concurrency, replicas, rank) for rank in range(replicas)]
    assert sum(parts) == concurrency  # never more, and none left unused
    assert max(parts) - min(parts) <= 1
    assert parts == sorted(parts, reverse=True)  # the remainder goes to the first ones
    if replicas <= concurrency:
        assert min(parts) >= 1  # every replica polls
    else:
        assert parts.count(1) == concurrency and parts.count(0) == replicas - concurrency


def test_examples():
    assert [fair_target(4, 3, r) for r in range(3)] == [2, 1, 1]
    assert [fair_target(1, 2, r) for r in range(2)] == [1, 0]
    assert [fair_target(5, 1, 0), fair_target(5, 0, 0)] == [5, 5]  # alone (or uncounted yet)
