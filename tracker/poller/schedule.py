"""When to poll a message next, and for how long a claim is held. Pure: no I/O, no clock.

The schedule of one message (docs/polling.md#where-the-schedule-lives): the first poll `first_poll_s` after submission (set by
the intake), then after each poll a delay that doubles from `first_poll_s` up to the cap
`max_poll_interval_s`, with jitter so that messages sent together spread out:

    base(n)  = min(cap, first_poll_s * 2 ** n)        n = polls made so far (>= 1)
    delay(n) = base(n) * (1 - JITTER * u)             u uniform in [0, 1)

Laws (tests/unit/test_poll_schedule.py): 0 < delay <= cap; delay >= (1 - JITTER) * base;
base never decreases with n. A vendor's Retry-After is a floor; the end of the tracking window
is a ceiling (one last poll as the window closes) unless that is less than half the delay away;
a poll never follows the previous one by less than half its delay.
"""
from __future__ import annotations

import math
from datetime import datetime, timedelta

from tracker.config_types import VendorConfig

JITTER = 0.2  # delays fall in [0.8 base, base]
MAX_DOUBLINGS = 64  # 2**64 * any sane first_poll_s is far past any cap
WRITE_MARGIN_S = 2.0  # a claim's last answer is back this long before its lease ends: the write


def base_delay(cfg: VendorConfig, polls: int) -> float:
    """The un-jittered delay after the `polls`-th poll (polls >= 1)."""
    cap = cfg.max_poll_interval_s
    n = min(max(polls, 1), MAX_DOUBLINGS)
    return min(cap, cfg.first_poll_s * math.ldexp(1.0, n))


def delay(cfg: VendorConfig, polls: int, u: float) -> float:
    """Seconds until the next poll after the `polls`-th one; `u` is a uniform draw in [0, 1)."""
    u = min(max(u, 0.0), 1.0)
    return base_delay(cfg, polls) * (1.0 - JITTER * u)


def next_poll_at(
    now: datetime,
    wait_s: float,
    window_ends_at: datetime | None,
    retry_after_s: float | None = None,
) -> datetime:
    """When to poll next: after `wait_s` (at least the vendor's Retry-After), but rather at the
    end of the tracking window if that comes first and no sooner than half the wait: one last
    look before the window closes. Past the window, the window sweep ends the message; the plain
    delay keeps the poller from spinning on it meanwhile."""
    wait = max(wait_s, retry_after_s or 0.0)
    at = now + timedelta(seconds=wait)
    if (window_ends_at is not None and not retry_after_s
            and now + timedelta(seconds=wait / 2) <= window_ends_at < at):
        at = window_ends_at
    return at


def lease_s(cfg: VendorConfig, claimed: int) -> float:
    """How long a claim of `claimed` messages is held: time to send them all at the vendor's
    rate, plus a few request timeouts for the slow ones and for the write. A claim that outlives
    its lease is stale: its results are dropped (tracker.poller.writeback). So that a slow vendor
    never makes it so, no request of the claim goes out after send_until_s (the rest is handed
    back): no lease length could be sure to fit, since a claim's share of the vendor's
    concurrency (slots shared with the other loop and the other replicas) is not known."""
    sending = claimed / max(cfg.rate_limit_per_s, 1e-3)
    return max(10.0, 2.0 * sending + 3.0 * cfg.request_timeout_s)


def send_until_s(cfg: VendorConfig, lease: float) -> float:
    """Seconds after a claim of lease `lease` was made during which its requests may go out: an
    answer comes back within a request timeout, and then WRITE_MARGIN_S is left to write it
    (lease_s is at least 3 request timeouts and 10 s, so this leaves time for some)."""
    return lease - cfg.request_timeout_s - WRITE_MARGIN_S


def list_mode(due: int, cfg: VendorConfig, has_list_endpoint: bool) -> bool:
    """Poll through the vendor's list endpoint (one call for many) rather than per message?"""
    return has_list_endpoint and cfg.list_poll_min > 0 and due >= cfg.list_poll_min
