"""What a sink does after each answer: outcomes, retries, dead letters, slowing down, filters.
Pure: the clock and the random source are arguments.

- Any 2xx is success. 410 Gone disables the sink (the receiver says it is gone for good).
  429, 502, 503 and 504 mean "slow down": the attempt failed, and the whole sink pauses (for
  the answer's Retry-After, else a short backoff doubling per throttled answer in a row) and
  halves its concurrency, growing it back by one per window of successes.
  Everything else fails the attempt: 3xx (redirects are not followed), other 4xx and 5xx,
  timeouts, refused or broken connections.
- A failed event is tried again after the retry schedule's next delay, with +-10 % jitter so that
  many events failed together do not come back together; never before a Retry-After. After the
  schedule's last attempt it is dead-lettered.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Iterable

# The Standard Webhooks schedule: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h.
DEFAULT_RETRY_SCHEDULE_S = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0,
                            72000.0, 86400.0)
JITTER = 0.1
MAX_RETRY_AFTER_S = 86400.0  # a Retry-After beyond a day is taken as a day
FIRST_PAUSE_S = 1.0  # a throttled answer without Retry-After pauses the sink this long ...
MAX_PAUSE_S = 60.0  # ... doubling per throttled answer in a row, up to this
THROTTLING = frozenset({429, 502, 503, 504})
GONE = 410


class Outcome(str, enum.Enum):
    delivered = "delivered"
    failed = "failed"  # will be tried again
    throttled = "throttled"  # will be tried again; the sink slows down
    gone = "gone"  # 410: the sink is disabled, the event stays pending
    dead = "dead"  # the schedule is used up: dead-lettered
    released = "released"  # not attempted: a claim handed back unsent (stopping, paused, stale)


def classify(status: int | None) -> Outcome:
    """The outcome of one attempt from its HTTP status (None: no answer at all)."""
    if status is None:
        return Outcome.failed
    if 200 <= status < 300:
        return Outcome.delivered
    if status == GONE:
        return Outcome.gone
    if status in THROTTLING:
        return Outcome.throttled
    return Outcome.failed


def jittered(delay_s: float, rand: float) -> float:
    """`delay_s` moved by up to +-JITTER of itself; `rand` is uniform in [0, 1)."""
    return delay_s * (1.0 + JITTER * (2.0 * rand - 1.0))


@dataclass(frozen=True)
class Next:
    """What becomes of an event after an attempt that did not deliver it."""

    dead: bool
    retry_in_s: float = 0.0


def after_failure(attempts: int, schedule: tuple[float, ...], rand: float,
                  retry_after_s: float | None = None) -> Next:
    """`attempts`: how many have been made, this one included (1 after the first). The first
    entry of the schedule is the delay before the first attempt, so a schedule of n entries
    allows n attempts."""
    if attempts >= len(schedule):
        return Next(dead=True)
    delay = jittered(schedule[attempts], rand)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return Next(dead=False, retry_in_s=delay)


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delay-seconds or an HTTP-date), clamped to
    [0, MAX_RETRY_AFTER_S]; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            at = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if at is None:
            return None
        if at.tzinfo is None:
            at = at.replace(tzinfo=timezone.utc)
        seconds = (at - (now or datetime.now(timezone.utc))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def pause_s(retry_after_s: float | None, throttled_in_a_row: int) -> float:
    """How long the whole sink waits after a throttled answer: the Retry-After, unless it
    leaves no wait (0, a time gone by): a throttle still, then paused as one without it."""
    if retry_after_s:
        return retry_after_s
    return min(MAX_PAUSE_S, FIRST_PAUSE_S * 2 ** max(0, throttled_in_a_row - 1))


class Window:
    """How many deliveries a sink keeps in flight: halved on each throttled answer (at least
    one), grown back by one after a window's worth of successes (additive increase,
    multiplicative decrease)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.size = limit
        self._successes = 0

    def throttled(self) -> None:
        self.size = max(1, self.size // 2)
        self._successes = 0

    def delivered(self) -> None:
        if self.size >= self.limit:
            return
        self._successes += 1
        if self._successes >= self.size:
            self.size += 1
            self._successes = 0


@dataclass(frozen=True)
class EventFilter:
    """Which events a sink takes: empty sets mean every vendor, every state."""

    vendors: frozenset[str] = frozenset()
    states: frozenset[str] = frozenset()

    @classmethod
    def of(cls, vendors: Iterable[str] = (), states: Iterable[str] = ()) -> "EventFilter":
        return cls(frozenset(vendors), frozenset(states))

    def matches(self, vendor: str, to_state: str) -> bool:
        return ((not self.vendors or vendor in self.vendors)
                and (not self.states or to_state in self.states))


def verdict(status: int | None, attempts_before: int, schedule: tuple[float, ...], rand: float,
            retry_after_s: float | None = None) -> tuple[Outcome, float]:
    """What becomes of an event after one attempt: (outcome, seconds until it is tried again).
    `attempts_before`: attempts made before this one. A Retry-After counts only with a
    throttling status; a 410 does not count as an attempt of the event (the sink is at fault)."""
    outcome = classify(status)
    if outcome in (Outcome.delivered, Outcome.gone):
        return outcome, 0.0
    nxt = after_failure(attempts_before + 1, schedule, rand,
                        retry_after_s if outcome is Outcome.throttled else None)
    return (Outcome.dead, 0.0) if nxt.dead else (outcome, nxt.retry_in_s)
