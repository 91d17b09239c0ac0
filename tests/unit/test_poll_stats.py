"""Poll counters kept for the next flush when one fails (tracker.poller.health.Stats)."""
from datetime import datetime, timezone

from tracker.poller.health import Stats

T1, T2 = datetime(2026, 1, 1, tzinfo=timezone.utc), datetime(2026, 1, 2, tzinfo=timezone.utc)


def test_merge_adds_counts_and_keeps_the_latest_times():
    unwritten = Stats(ok=3, failed=1, last_success_at=T1, last_error_at=T1, last_error="timeout")
    since = Stats(ok=2, failed=0, last_success_at=T2)
    m = unwritten.merge(since)
    assert (m.ok, m.failed, m.last_success_at) == (5, 1, T2)
    assert (m.last_error_at, m.last_error) == (T1, "timeout")  # no newer error: the old one stays
    newer = unwritten.merge(Stats(failed=1, last_error_at=T2, last_error="HTTP 503"))
    assert (newer.failed, newer.last_error, newer.last_success_at) == (2, "HTTP 503", T1)
