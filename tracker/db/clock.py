"""The database's clock, read on this host's: the time every time the daemon writes or compares
with the database's is taken from.

The database stamps most times itself (claims, leases, windows' ends, next polls due, sinks'
retries), and the daemon stamped the rest from its host's clock (a postback's arrival, a
submitted transition, a window's end, the next poll it asks for, a delivery's age). A host whose
clock was off (NTP broken, one replica of several) then mixed two clocks: 700 s behind, every
vendor time of a postback looked 12 minutes ahead of its arrival and was replaced, deliveries
were dated 700 s early, intake blamed the application's submitted_at, the postback age gauge
read 700 s; ahead, each idle poll loop woke 50 times a second, and a message's events were
dated backwards (reviewer A, session 28).

So the daemon reads the database's clock (one round trip: at its start, before any part writes,
then every CLOCK_EVERY_S, tracker.upkeep; once in each one-off command) and `now()` is that reading moved on by this
host's monotonic clock since: good to half a round trip, and untouched by a step of the host's
wall clock (NTP putting it right would otherwise have moved every time by the old offset until
the next reading). A reading whose round trip took over MAX_TRIP_S and twice the kept one's (a
busy event loop, a stall: its middle says nothing) is not taken; a database far away, whose
every trip is long, is still read. The database's clock minus the host's wall clock is a gauge
(tracker_database_clock_offset_seconds), logged above WARN_S, and the alert DaemonClockOff fires
while it stays above 5 s: a host clock that far off is wrong for everything else on it. The
host's own clock still plans the sweeps (tracker.sweep_clock) and times the logs' lines."""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone

import asyncpg

from tracker import metrics
from tracker.logging import get_logger
from tracker.throttle import Throttle

log = get_logger("tracker.db")

CLOCK_EVERY_S = 10.0
WARN_S = 2.0
MAX_TRIP_S = 0.1
READ = "SELECT extract(epoch FROM clock_timestamp())::float8"


@dataclass(frozen=True)
class Reading:
    """The database's clock (`database`, seconds since 1970) at this host's monotonic `at`,
    read in a round trip of `trip_s`."""
    database: float
    at: float
    trip_s: float

    def now_s(self, monotonic: float) -> float:
        return self.database + (monotonic - self.at)

    def better_than(self, kept: Reading | None) -> bool:
        return kept is None or self.trip_s <= max(MAX_TRIP_S, 2 * kept.trip_s)


_kept: Reading | None = None  # none yet: this host's clock
_warned = Throttle(every_s=600.0)


def time_s() -> float:
    """The database's time now, in seconds since 1970."""
    return time.time() if _kept is None else _kept.now_s(time.monotonic())


def now() -> datetime:
    """The database's time now."""
    return datetime.fromtimestamp(time_s(), timezone.utc)


def reading(before: float, database: float, after: float) -> Reading:
    """A reading of the database's clock taken between two of this host's monotonic clock: the
    middle of the round trip is the best guess of when it was taken."""
    return Reading(database, (before + after) / 2, after - before)


async def read(conn: asyncpg.Connection) -> None:
    """Read the database's clock on `conn`; keep the reading unless a better one is kept.
    Its errors are the caller's (an outage)."""
    global _kept
    before = time.monotonic()
    database = await conn.fetchval(READ)
    after = time.monotonic()
    wall = time.time()
    r = reading(before, database, after)
    if not r.better_than(_kept):
        return
    _kept = r
    offset = r.now_s(after) - wall  # the database's clock minus this host's wall clock
    metrics.database_clock_offset.set(offset)
    if abs(offset) > WARN_S and (left_out := _warned.allow("offset")) is not None:
        log.warning("this host's clock differs from the database's: the tracker takes the "
                    "database's time (fix the clock: NTP)", offset_s=round(offset, 3),
                    left_out=left_out)
