"""tracker_database_up and the backlog gauges (tracker.http.ops): while the database does not
answer, the gauge says 0 and the backlog gauges say nothing (NaN). No alert said the database
was away, and IntakeStalled went on firing through an outage on a value frozen before it."""
from __future__ import annotations

import asyncio
import math

import asyncpg
import pytest

from tracker.db import DB_ERRORS
from tracker.http import ops
from tracker.metrics import REGISTRY


def value(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


async def test_the_backlog_sweep_says_when_the_database_is_away_and_the_backlog_then_says_nothing(db_dsn):
    pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=1)
    heads = ops.HeadClock()
    try:
        await pool.execute("INSERT INTO tracker.submissions (vendor, vendor_ref, recipient, created_at)"
                           " VALUES ('skycore', 'up-1', '15550001111', now() - interval '10 minutes')")
        await ops.count_backlog(pool, heads)
        assert value("tracker_database_up") == 1
        assert value("tracker_intake_waiting_rows") == 1 and value("tracker_intake_oldest_age_seconds") >= 600
    finally:
        await pool.close()
    with pytest.raises(DB_ERRORS):
        await ops.count_backlog(pool, heads)  # as when the database goes away
    assert value("tracker_database_up") == 0
    for name in ("tracker_intake_waiting_rows", "tracker_intake_oldest_age_seconds",
                 "tracker_postbacks_waiting", "tracker_postbacks_oldest_age_seconds"):
        assert math.isnan(value(name)), name


async def test_a_statement_the_database_refuses_is_no_outage_of_the_gauge(db_dsn):
    # The database answers, and refuses (a table renamed under the daemon, a privilege revoked):
    # tracker_database_up stays 1, or TrackerDatabaseDown paged for a permissions error
    from types import SimpleNamespace

    from tracker.config_types import Config
    from tracker.http.drain import Drain
    from tracker.supervisor import Supervisor

    pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=1)
    config = Config()
    tracker = SimpleNamespace(config=config, pool=pool, heads=ops.HeadClock(), embedded=None,
                              supervisor=Supervisor(config.health), drain=Drain(0))
    try:
        await ops.count_backlog(pool, tracker.heads)
        assert value("tracker_database_up") == 1
        await pool.execute("ALTER TABLE tracker.postbacks RENAME TO postbacks_away")
        with pytest.raises(asyncpg.UndefinedTableError):
            await ops.count_backlog(pool, tracker.heads)
        [problem] = await ops.readiness(tracker)
        assert problem.component == "database" and "UndefinedTableError" in problem.reason
        assert value("tracker_database_up") == 1
    finally:
        await pool.execute("ALTER TABLE tracker.postbacks_away RENAME TO postbacks")
        await pool.close()


async def test_the_series_alerts_count_on_are_there_at_zero_from_the_start(db_dsn):
    # A series born at its first count shows no increase() in Prometheus: a flood of connections
    # shorter than a scrape never raised ListenerFull.
    import aiohttp

    from tests.postbacks_support import config_for, running

    async with running(config_for(db_dsn)) as (tr, base), aiohttp.ClientSession() as s:
        async with s.get(f"{base}/metrics") as r:
            text = await r.text()
    lines = {line.rsplit(" ", 1)[0] for line in text.splitlines() if not line.startswith("#")}
    assert 'tracker_http_connections_refused_total{listener="listen"}' in lines  # (other tests
    assert 'tracker_postbacks_total{status="503",vendor="skycore"}' in lines     # may have counted)
    assert "tracker_database_up 1.0" in text


async def test_a_replica_that_finds_another_sweeping_retention_says_nothing_of_being_behind(pool):
    # Set only by the replica that swept: one that had said 1 and then lost the lock at every turn
    # kept RetentionBehind (max by kind) firing for good.
    from tracker import metrics, retention
    from tracker.config_types import RetentionConfig

    metrics.retention_behind.labels("observations").set(1)
    other = await pool.acquire()
    try:
        assert await other.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", retention.LOCK)
        assert await retention.sweep(pool, RetentionConfig()) is None  # another sweeps now
        assert value("tracker_retention_behind") is None  # no series: nothing said
        assert REGISTRY.get_sample_value("tracker_retention_behind", {"kind": "observations"}) is None
    finally:
        await other.execute("SELECT pg_advisory_unlock(hashtext($1))", retention.LOCK)
        await pool.release(other)


async def test_a_busy_pool_is_no_outage_of_the_gauge_nor_of_the_backlog(db_dsn, monkeypatch):
    """Every connection in use (a large backlog's load): the sweep waits its period, then fails
    without saying the database is down, and the backlog gauges keep their values (NaN, they
    hid IntakeStalled exactly when the backlog was large)."""
    monkeypatch.setattr(ops, "BACKLOG_ACQUIRE_S", 0.2)
    pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=1)
    heads = ops.HeadClock()
    try:
        await pool.execute("INSERT INTO tracker.submissions (vendor, vendor_ref, recipient, created_at)"
                           " VALUES ('skycore', 'busy-1', '15550001111', now() - interval '10 minutes')")
        await ops.count_backlog(pool, heads)
        async with pool.acquire():  # the pool's one connection, taken
            with pytest.raises(ops.PoolBusy):  # (bounded: a regression fails, never hangs)
                await asyncio.wait_for(ops.count_backlog(pool, heads), 10)
        assert value("tracker_database_up") == 1 and value("tracker_intake_waiting_rows") == 1
    finally:
        await pool.close()
