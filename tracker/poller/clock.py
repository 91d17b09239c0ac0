"""The poller's clock, injected so that timing logic (circuit resets, Retry-After pauses, token
expiry, backoff) is tested without waiting: the daemon uses SYSTEM_CLOCK, tests a ManualClock.

`monotonic()` measures intervals (circuit, pauses); `now()` is the wall time written to the
database (next polls) and handed to the adapters: the database's (tracker.db.clock), which
decides what is due; `sleep()` waits on this clock's time.
"""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from typing import Protocol

from tracker.db import clock as db_clock


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def now(self) -> datetime: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return db_clock.now()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM_CLOCK = SystemClock()


class ManualClock:
    """Time that moves only when told to (`advance`) or when something sleeps on it: a sleep
    returns at once, its time passed. Its wall time starts at the real one, so the times it
    writes compare sensibly with the database's now()."""

    def __init__(self, start: datetime | None = None) -> None:
        self.elapsed = 0.0
        self.start = start or datetime.now(timezone.utc)
        self.slept: list[float] = []  # every sleep asked for, in order

    def monotonic(self) -> float:
        return self.elapsed

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.elapsed)

    def advance(self, seconds: float) -> None:
        self.elapsed += seconds

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.elapsed += max(0.0, seconds)
        await asyncio.sleep(0)  # let others run, as a real sleep would
