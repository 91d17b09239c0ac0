"""A webhook sink's read batch (tracker.sinks.batch): which events go straight out, and that
settling puts every event not delivered into the table exactly once, as it stands."""
from __future__ import annotations

from datetime import datetime, timezone

from hypothesis import given
from hypothesis import strategies as st

from tracker.sinks.batch import ReadBatch
from tracker.sinks.policy import EventFilter, Outcome
from tracker.sinks.store import Result

T = datetime(2024, 5, 1, tzinfo=timezone.utc)


def rows(message_ids: list[int], vendors: list[str] | None = None, pending: set[int] = frozenset()) -> list[dict]:
    return [{"event_id": i + 1, "pos": i + 1, "message_id": m, "vendor": (vendors or ["skycore"] * len(message_ids))[i],
             "vendor_ref": f"r{m}", "recipient": None, "client_ref": None, "from_state": "submitted",
             "to_state": "sent", "source": "poll", "occurred_at": T, "recorded_at": T, "failure_code": None,
             "failure_reason": None, "failure_permanent": None, "is_correction": False,
             "message_pending": m in pending}
            for i, m in enumerate(message_ids)]


def test_an_event_goes_straight_out_only_alone_in_its_message_with_nothing_pending():
    b = ReadBatch.of(rows([1, 2, 2, 3], pending={3}), EventFilter(), started=0.0)
    assert sorted(b.open) == [1]  # message 1: alone, nothing pending
    assert [c.event_id for c in b.to_table] == [2, 3, 4]  # message 2 twice; message 3 pending
    assert b.last_event_id == 4 and all(c.virtual for c in b.to_table)


def test_filtered_events_are_skipped_but_the_cursor_passes_them():
    b = ReadBatch.of(rows([1, 2], ["skycore", "sparrow"]), EventFilter.of(["sparrow"]), 0.0)
    assert sorted(b.open) == [2] and b.to_table == [] and b.last_event_id == 2


outcomes = st.sampled_from([Outcome.delivered, Outcome.failed, Outcome.throttled, Outcome.dead,
                            Outcome.gone, Outcome.released])


@given(st.lists(st.integers(1, 6), min_size=1, max_size=30), st.sets(st.integers(1, 6)),
       st.lists(st.tuples(st.integers(1, 30), outcomes)), st.sets(st.integers(1, 30)))
def test_settling_accounts_for_every_undelivered_event_exactly_once(mids, pending, answers, flying):
    b = ReadBatch.of(rows(mids, pending=pending), EventFilter(), 0.0)
    direct = set(b.open)
    delivered = set()
    for event_id, outcome in answers:
        ours = event_id in b.open
        assert b.came_back(Result(event_id, outcome, 1.5, 500, "HTTP 500")) == ours
        if ours and outcome is Outcome.delivered:
            delivered.add(event_id)
    flying = {e for e in flying if e in b.open}
    out, handed_over = b.settlement(flying)
    ids = [u.event.event_id for u in out]
    assert len(ids) == len(set(ids))
    assert set(ids) == {r["event_id"] for r in rows(mids)} - delivered
    assert handed_over == flying and {u.event.event_id for u in out if u.in_flight} == flying
    for u in out:
        if u.event.event_id not in direct or u.in_flight:
            assert u.attempts == 0 and not u.dead
        if u.attempts:
            assert u.last_status == 500 and u.retry_in_s == 1.5
    assert b.delivered == len(delivered)


def test_a_message_of_an_earlier_open_batch_waits_in_the_table():
    b = ReadBatch.of(rows([1, 2]), EventFilter(), 0.0, busy={2})
    assert sorted(b.open) == [1] and [c.event_id for c in b.to_table] == [2]
    assert b.messages == {1, 2} and b.last_pos == 2
