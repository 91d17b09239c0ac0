"""The publisher: gives committed transitions their delivery positions, then wakes consumers.

Writers (the reducer, intake) notify `tracker_transitions` when they commit transitions. The
publisher, woken by that on the connection it publishes on (a timer is the backstop; the
daemon's appliers also wake it in-process), numbers them with tracker.publish_events(),
which sends `NOTIFY tracker_events` when its own transaction commits: so a consumer woken by
`tracker_events` always finds the events that caused it (it once could read nothing, when the
notification came at the writer's commit and another reader held the publisher row).

The publisher waits for the publisher row rather than skipping it, with a lock timeout: a session
holding it in a long transaction (readers never take it since sql/022) delays publication,
never loses it.
A lock timeout is no progress: while events wait unpublished behind it, the publisher tells the
supervisor it is blocked (which session holds the row, how many events wait and for how long),
logs that as a warning, and /readyz names it once that has lasted `health.wedged_after_s`.
A database error that is no outage (a statement PostgreSQL refuses) is the supervisor's: logged
with its traceback, counted, the publisher restarted with backoff, /readyz naming it.
It publishes in one statement (tracker.publish_waiting, sql/013), committed with its WAL flush
(sql/022: a position a reader saw is never lost in a crash and given to another event). It is
the only publisher: tracker.read_events reads what it has published and moves nothing.
"""
from __future__ import annotations

import asyncio
import contextlib
import time

import asyncpg

from tracker.db import DB_ERRORS, is_outage
from tracker.db import queries as q
from tracker.db.listen import unlisten
from tracker.logging import get_logger
from tracker.supervisor import beat

log = get_logger("tracker.events")

CHANNEL = "tracker_transitions"  # writers notify it when they commit transitions
BACKSTOP_S = 1.0  # look for unpublished events this often even without a notification
BATCH = 10_000  # events numbered per transaction
BLOCKED_COUNT_MAX = 100_000  # events waiting unpublished are counted up to this many
BLOCKED_LOG_EVERY_S = 30.0  # while blocked by the same session, the warning is repeated this often


class Publisher:
    """A component (start/stop) of the daemon; `host` gives pool, supervisor and stopping."""

    def __init__(self, host):
        self.host = host
        self.wake = asyncio.Event()
        self.tasks: list[asyncio.Task] = []
        self.stopping = False
        self.blocked = False  # the last look found the publisher row held, with events waiting
        self.blocked_by: int | None = None  # the session named in the last warning
        self.blocked_logged_at = 0.0

    async def start(self) -> None:
        self.stopping = False
        self.tasks = [self.host.supervisor.spawn("publisher", self._publish,
                                                 stopping=lambda: self.stopping)]

    async def stop(self) -> None:
        self.stopping = True
        self.wake.set()
        await self.host.supervisor.stop_tasks(self.tasks, 5.0)
        self.tasks = []
        try:  # what the other components wrote as they stopped
            await publish_pending(self.host.pool)
        except DB_ERRORS as e:
            if not is_outage(e):
                raise  # the supervisor's: "part failed to stop", with its traceback
            log.warning("publishing events at stop failed; the next start publishes them",
                        error=type(e).__name__)

    async def _publish(self) -> None:
        """Listens and publishes on one connection, kept while it works: handing it back to the
        pool after each publication would cost a reset round trip (RESET ALL, UNLISTEN *, ...).
        A failure hands it back (the pool closes a broken one); a backstop later, another is
        taken, and whatever was committed meanwhile is published at once."""
        while not self.stopping:
            try:
                await self._publish_on_one_connection(self.host.pool)
            except DB_ERRORS as e:
                if not is_outage(e):
                    raise  # a refused statement: the supervisor's (counted, restarted, /readyz)
                log.warning("publishing events failed: database unavailable; will retry",
                            error=type(e).__name__)
                # the lock it waited for is no longer the reason (/readyz), and nothing resumed
                self.blocked, self.blocked_by = False, None
                beat().blocked("")
                await asyncio.sleep(BACKSTOP_S)

    async def _publish_on_one_connection(self, pool: asyncpg.Pool) -> None:
        # A pool that never gives a connection shows as wedged; taking one is no progress (a
        # publisher failing on every publication would otherwise never count as failing).
        with beat().busy():
            conn = await pool.acquire()
        try:
            with beat().busy():
                await conn.add_listener(CHANNEL, self._notified)
            while not self.stopping:
                self.wake.clear()  # before looking: a notification from now on wakes the next look
                try:
                    with beat().working():  # a lock timeout leaves it: no progress
                        while await publish_now(conn) >= BATCH:
                            pass
                except asyncpg.LockNotAvailableError:
                    await self._blocked(conn)
                else:
                    self._unblocked()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), BACKSTOP_S)
        finally:
            await unlisten(conn, CHANNEL, self._notified)
            with contextlib.suppress(*DB_ERRORS):  # a reset that fails closes the connection
                await pool.release(conn)

    def _notified(self, *_) -> None:
        self.wake.set()

    async def _blocked(self, conn: asyncpg.Connection) -> None:
        """The publisher row stayed held past the lock timeout. With events waiting that is no
        progress, and the supervisor is told why; with none there was nothing to publish."""
        b = await conn.fetchrow(q.PUBLISHER_BLOCKED, BLOCKED_COUNT_MAX)
        if not b["unpublished"]:
            beat().progress()  # idle, not stuck
            return
        pid = b["holder_pid"]
        holder = (f"pid {pid} (application_name {b['holder_application'] or ''!r}, "
                  f"in a transaction for {b['holder_xact_s'] or 0:.0f} s)"
                  if pid is not None else "a transaction no longer seen")
        more = "+" if b["unpublished"] >= BLOCKED_COUNT_MAX else ""
        beat().blocked(f"publication blocked by a lock: the publisher row (tracker.event_publisher)"
                       f" is held by {holder}; {b['unpublished']}{more} events wait unpublished,"
                       f" the oldest for {b['oldest_s'] or 0:.0f} s")
        now = time.monotonic()
        if not self.blocked or pid != self.blocked_by or now - self.blocked_logged_at >= BLOCKED_LOG_EVERY_S:
            log.warning("publication blocked: another transaction holds the publisher row",
                        holder_pid=pid, holder_application=b["holder_application"],
                        holder_transaction_s=round(b["holder_xact_s"] or 0, 1),
                        unpublished=b["unpublished"], oldest_unpublished_s=round(b["oldest_s"] or 0, 1))
            self.blocked_by, self.blocked_logged_at = pid, now
        self.blocked = True

    def _unblocked(self) -> None:
        if self.blocked:
            log.info("publication resumed: the publisher row is free again")
            self.blocked, self.blocked_by = False, None


async def publish_pending(pool: asyncpg.Pool) -> int:
    """Number the committed, unpublished events (up to BATCH); 0 when there are none or the
    publisher row stayed held past the lock timeout (2 s; the next look tries again)."""
    async with pool.acquire() as conn:
        return await publish_on(conn)


async def publish_on(conn: asyncpg.Connection) -> int:
    """publish_pending on a connection the caller holds."""
    try:
        return await publish_now(conn)
    except asyncpg.LockNotAvailableError:
        log.warning("publisher row held by another transaction; publishing later")
        return 0


async def publish_now(conn: asyncpg.Connection) -> int:
    """Number up to BATCH events; raises LockNotAvailableError when the publisher row stayed
    held past the lock timeout. One statement, its own transaction (sql/013_publish_waiting.sql)."""
    return await conn.fetchval(q.PUBLISH_WAITING, BATCH)
