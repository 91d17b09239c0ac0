"""The daemon's upkeep sweeps (a component: tracker.app starts it with the others): adopting
reports that raced their message, the backlog gauges, this host's clock against the
database's, folding the delivery rollup, the outbox readers' lag gauges, and retention. Each runs under the supervisor as `sweep:<name>`
(apscheduler); adopting, folding and retention on one replica at a time. The database
unavailable is waited out until the next run; any other database error fails the run, which the
supervisor logs, counts and shows in /readyz while it keeps failing."""
from __future__ import annotations

from tracker import metrics, retention, rollup
from tracker.db import clock
from tracker.db import queries as q
from tracker.db import reducer
from tracker.http import ops


LAG_EVERY_S = 10.0
ORPHANS_EVERY_S = 10.0
BACKLOG_EVERY_S = 10.0  # the backlog gauges are refreshed this often (and by each /readyz)


class Upkeep:
    def __init__(self, tracker) -> None:
        self.tracker = tracker

    async def start(self) -> None:
        self.tracker.every("orphans", ORPHANS_EVERY_S, self.adopt_orphans)
        self.tracker.every("backlog", BACKLOG_EVERY_S, self.count_backlog)
        self.tracker.every("database_clock", clock.CLOCK_EVERY_S, self.read_clock)
        self.tracker.every("rollup", rollup.FOLD_EVERY_S, self.fold)
        self.tracker.every("lag", LAG_EVERY_S, self.measure_lag)
        # Always: with every kind kept for ever, it still folds the poll counters of stopped
        # replicas (each start adds a row a polled vendor: unfolded, they grew without end).
        self.tracker.every("retention", self.tracker.config.retention.interval_s, self.retain)

    async def stop(self) -> None:
        """Nothing held: the scheduler's shutdown ends a sweep in flight (it rolls back)."""

    async def adopt_orphans(self) -> None:
        """Backstop for reports that raced their message's creation: the recent ones only (old
        orphans, such as reports of messages never sent through us, are not looked at again)."""
        age = self.tracker.config.intake.orphan_sweep_age_s
        await self.tracker.exclusive("orphans", lambda conn: reducer.adopt_orphans(conn, max_age_s=age))

    async def count_backlog(self) -> None:
        await ops.count_backlog(self.tracker.pool, self.tracker.heads)

    async def read_clock(self) -> None:
        """This host's clock against the database's, kept (tracker.db.clock)."""
        async with self.tracker.pool.acquire() as conn:
            await clock.read(conn)

    async def fold(self) -> None:
        await self.tracker.exclusive("rollup", rollup.fold)

    async def measure_lag(self) -> None:
        await measure_lag(self.tracker.pool)

    async def retain(self) -> None:
        await retention.sweep(self.tracker.pool, self.tracker.config.retention)


async def measure_lag(pool) -> None:
    """Each consumer's lag (sinks included: they are consumers 'sink:<name>'), as gauges."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(q.CONSUMER_LAG)
    metrics.consumer_lag.clear()  # consumers removed since are no longer shown
    metrics.consumer_lag_seconds.clear()
    for r in rows:
        metrics.consumer_lag.labels(r["consumer"]).set(r["events"])
        metrics.consumer_lag_seconds.labels(r["consumer"]).set(r["age_s"] or 0.0)
