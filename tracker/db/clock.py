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

So the daemon measures its clock against the database's (one round trip: at each new
connection of the main pool and every CLOCK_EVERY_S, tracker.upkeep) and `now()` is its host's
time plus that offset, good to half a round trip. The offset is a gauge
(tracker_database_clock_offset_seconds), logged above WARN_S, and the alert DaemonClockOff fires
while it stays above 5 s: a host's clock that far off is wrong for everything else on it. The
host's own clock still plans the sweeps (tracker.sweep_clock) and times the logs' lines."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import asyncpg

from tracker import metrics
from tracker.logging import get_logger
from tracker.throttle import Throttle

log = get_logger("tracker.db")

CLOCK_EVERY_S = 10.0
WARN_S = 2.0
READ = "SELECT extract(epoch FROM clock_timestamp())::float8"

_offset_s = 0.0  # the database's clock minus this host's, as last measured
_warned = Throttle(every_s=600.0)


def now() -> datetime:
    """The database's time now."""
    return datetime.now(timezone.utc) + timedelta(seconds=_offset_s)


def time_s() -> float:
    """The database's time now, in seconds since 1970."""
    return time.time() + _offset_s


def offset_s() -> float:
    return _offset_s


def offset_of(before: float, database: float, after: float) -> float:
    """The database's clock minus this host's, from a reading of the database's taken between
    two of this host's: the middle of the round trip is the best guess of when it was taken."""
    return database - (before + after) / 2


async def read(conn: asyncpg.Connection) -> float:
    """Measure the offset on `conn` and keep it. Its errors are the caller's (an outage)."""
    global _offset_s
    before = time.time()
    database = await conn.fetchval(READ)
    _offset_s = offset_of(before, database, time.time())
    metrics.database_clock_offset.set(_offset_s)
    if abs(_offset_s) > WARN_S and (left_out := _warned.allow("offset")) is not None:
        log.warning("this host's clock differs from the database's: the tracker takes the "
                    "database's time (fix the clock: NTP)", offset_s=round(_offset_s, 3),
                    left_out=left_out)
    return _offset_s
