"""The publisher: gives committed transitions their delivery positions, then wakes consumers.

Writers (the reducer, intake) notify `tracker_transitions` when they commit transitions. The
publisher, woken by that on the connection it publishes on (a timer is the backstop; the
daemon's appliers also wake it in-process), numbers them with tracker.publish_events(),
which sends `NOTIFY tracker_events` when its own transaction commits: so a consumer woken by
`tracker_events` always finds the events that caused it (it once could read nothing, when the
notification came at the writer's commit and another reader held the publisher row).

The publisher waits for the publisher row rather than skipping it (as read_events does), with a
lock timeout: a consumer holding it in a long transaction delays publication, never loses it.
It publishes in one statement (tracker.publish_waiting, sql/013) that commits without waiting for
the WAL flush: a publication is no transition and leads to no 200, and whatever a consumer makes
durable after reading it flushes the publication first.
"""
from __future__ import annotations

import asyncio
import contextlib

import asyncpg

from tracker.db import DB_ERRORS
from tracker.db import queries as q
from tracker.db.listen import unlisten
from tracker.logging import get_logger
from tracker.supervisor import beat

log = get_logger("tracker.events")

CHANNEL = "tracker_transitions"  # writers notify it when they commit transitions
BACKSTOP_S = 1.0  # look for unpublished events this often even without a notification
BATCH = 10_000  # events numbered per transaction


class Publisher:
    """A component (start/stop) of the daemon; `host` gives pool, supervisor and stopping."""

    def __init__(self, host):
        self.host = host
        self.wake = asyncio.Event()
        self.tasks: list[asyncio.Task] = []
        self.stopping = False

    async def start(self) -> None:
        self.stopping = False
        self.tasks = [self.host.supervisor.spawn("publisher", self._publish,
                                                 stopping=lambda: self.stopping)]

    async def stop(self) -> None:
        self.stopping = True
        self.wake.set()
        await self.host.supervisor.stop_tasks(self.tasks, 5.0)
        self.tasks = []
        with contextlib.suppress(*DB_ERRORS):  # what the other components wrote as they stopped
            await publish_pending(self.host.pool)

    async def _publish(self) -> None:
        """Listens and publishes on one connection, kept while it works: handing it back to the
        pool after each publication would cost a reset round trip (RESET ALL, UNLISTEN *, ...).
        A failure hands it back (the pool closes a broken one); a backstop later, another is
        taken, and whatever was committed meanwhile is published at once."""
        while not self.stopping:
            try:
                await self._publish_on_one_connection(self.host.pool)
            except DB_ERRORS as e:
                log.warning("publishing events failed; will retry", error=type(e).__name__)
                await asyncio.sleep(BACKSTOP_S)

    async def _publish_on_one_connection(self, pool: asyncpg.Pool) -> None:
        with beat().working():  # a pool that never gives a connection shows as wedged
            conn = await pool.acquire()
        try:
            with beat().working():
                await conn.add_listener(CHANNEL, self._notified)
            while not self.stopping:
                self.wake.clear()  # before looking: a notification from now on wakes the next look
                with beat().working():
                    while await publish_on(conn) >= BATCH:
                        pass
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), BACKSTOP_S)
        finally:
            await unlisten(conn, CHANNEL, self._notified)
            with contextlib.suppress(*DB_ERRORS):  # a reset that fails closes the connection
                await pool.release(conn)

    def _notified(self, *_) -> None:
        self.wake.set()


async def publish_pending(pool: asyncpg.Pool) -> int:
    """Number the committed, unpublished events (up to BATCH); 0 when there are none or the
    publisher row stayed held past the lock timeout (2 s; the next look tries again)."""
    async with pool.acquire() as conn:
        return await publish_on(conn)


async def publish_on(conn: asyncpg.Connection) -> int:
    """publish_pending on a connection the caller holds."""
    try:  # one statement, its own transaction (sql/013_publish_waiting.sql)
        return await conn.fetchval(q.PUBLISH_WAITING, BATCH)
    except asyncpg.LockNotAvailableError:
        log.info("publisher row held by a consumer's transaction; publishing later")
        return 0
