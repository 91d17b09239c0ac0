"""The poll schedule (tracker.poller.schedule): backoff with jitter up to the cap, Retry-After as
a floor, the tracking window as a ceiling, and the claim lease."""
from datetime import datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from tracker.config_types import VendorConfig
from tracker.poller import schedule

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
seconds = st.floats(min_value=0.01, max_value=1e5, allow_nan=False)
configs = st.builds(lambda first, cap: VendorConfig(name="x", first_poll_s=first, max_poll_interval_s=cap),
                    seconds, seconds)
polls = st.integers(min_value=1, max_value=10_000)
draws = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


@given(configs, polls, draws)
def test_delay_is_positive_capped_and_within_the_jitter(cfg, n, u):
    d = schedule.delay(cfg, n, u)
    base = schedule.base_delay(cfg, n)
    assert 0 < d <= cfg.max_poll_interval_s
    assert (1 - schedule.JITTER) * base <= d <= base


@given(configs, polls)
def test_backoff_never_shrinks_and_reaches_the_cap(cfg, n):
    assert schedule.base_delay(cfg, n) <= schedule.base_delay(cfg, n + 1)
    assert schedule.base_delay(cfg, 10_000) == cfg.max_poll_interval_s


def test_backoff_doubles_from_the_first_delay():
    cfg = VendorConfig(name="x", first_poll_s=30, max_poll_interval_s=3600)
    assert [schedule.base_delay(cfg, n) for n in range(1, 9)] == [60, 120, 240, 480, 960, 1920, 3600, 3600]


@given(seconds, st.one_of(st.none(), seconds), st.one_of(st.none(), st.floats(-1e5, 1e5)))
def test_next_poll_respects_retry_after_and_the_window(wait, retry_after, window_in):
    window = None if window_in is None else NOW + timedelta(seconds=window_in)
    at = schedule.next_poll_at(NOW, wait, window, retry_after)
    plain = NOW + timedelta(seconds=max(wait, retry_after or 0))
    assert NOW + timedelta(seconds=wait / 2) <= at <= plain  # never spinning, never later
    if retry_after:
        assert at == plain  # the vendor's word is a floor
    elif window is not None and NOW + timedelta(seconds=wait / 2) <= window:
        assert at <= window  # one last poll as the window closes
    if window is None or window <= NOW:
        assert at == plain


def test_lease_covers_timeouts_and_the_time_to_send_a_claim():
    cfg = VendorConfig(name="x", rate_limit_per_s=10, request_timeout_s=10)
    assert schedule.lease_s(cfg, 1) >= 30
    assert schedule.lease_s(cfg, 5000) >= 5000 / 10
    assert schedule.lease_s(cfg, 100) < schedule.lease_s(cfg, 1000)


def test_list_mode_only_with_a_list_endpoint_and_enough_due():
    cfg = VendorConfig(name="engagespark", list_poll_min=200)
    assert schedule.list_mode(200, cfg, True)
    assert not schedule.list_mode(199, cfg, True)
    assert not schedule.list_mode(10_000, cfg, False)
    assert not schedule.list_mode(10_000, VendorConfig(name="x", list_poll_min=0), True)
