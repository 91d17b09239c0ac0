"""A statement PostgreSQL refuses in a sweep or in the publisher is no outage to wait out with a
warning (DESIGN §9): it is the supervisor's. Logged with the component's name and traceback,
counted in tracker_component_failures_total{component}, the component run again (a sweep on its
schedule, the publisher after its backoff), /readyz naming it while it keeps failing, and ready
again once the database takes the statement. The refusals are real: a trigger raising the
SQLSTATE (tests/faults_support.py). Real PostgreSQL, the daemon in-process."""
from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime

import asyncpg
import pytest
import structlog

from tests.faults_support import refusing
from tests.metrics_support import failures
from tests.postbacks_support import config_for, named, readyz, running, session
from tests.sinks_support import all_published, make_messages, report, wait_until
from tracker import metrics
from tracker.config_types import HealthConfig
from tracker.core.states import State
from tracker.http import ops
from tracker.poller.engine import Poller
from tracker.supervisor import Supervisor


def config(dsn: str):
    cfg = config_for(dsn, sparksender={"base_url": "http://127.0.0.1:9"})  # polled, never called
    health = dataclasses.replace(cfg.health, restart_backoff_max_s=0.2, failures_before_unready=2)
    return dataclasses.replace(cfg, health=health)


def run_now(tr, job_id: str) -> None:
    tr.scheduler.get_job(job_id).modify(next_run_time=datetime.now(UTC))


def failed_logs(logs: list[dict], component: str) -> list[dict]:
    return [e for e in logs if e.get("event") == "component failed" and e["component"] == component]


async def test_a_refused_fold_is_counted_and_named(db_dsn, pool):
    component = "sweep:rollup"
    refuse, allow = refusing("route_days", "true", "22003", "rollup refused by the test",
                             name="test_refuse_rollup", events="INSERT OR UPDATE")
    await make_messages(pool, ["r1", "r2"])  # their deltas wait in route_deltas
    assert await pool.fetchval("SELECT count(*) FROM tracker.route_deltas") > 0
    await pool.execute(refuse)
    before = failures(component)
    with structlog.testing.capture_logs() as logs:
        async with running(config(db_dsn)) as (tr, base), session() as s:
            try:
                async def named_failing() -> bool:
                    run_now(tr, "rollup")  # a sweep runs again on its schedule
                    status, body = await readyz(s, base)
                    return status == 503 and any("NumericValueOutOfRangeError" in r
                                                 for r in named(body, component))

                await wait_until(named_failing, 20, f"/readyz naming {component}", step=0.2)
                assert failures(component) - before >= 2
                assert await pool.fetchval("SELECT count(*) FROM tracker.route_deltas") > 0
            finally:
                await pool.execute(allow)

            async def folded_and_ready() -> bool:
                run_now(tr, "rollup")
                return (not await pool.fetchval("SELECT count(*) FROM tracker.route_deltas")
                        and await readyz(s, base) == (200, {"status": "ready"}))

            await wait_until(folded_and_ready, 20, "folded and ready again", step=0.2)
    failed = failed_logs(logs, component)
    assert len(failed) >= 2 and all(e["log_level"] == "error" and e["exc_info"] for e in failed)


async def test_a_refused_publication_is_counted_and_named(db_dsn, pool):
    component = "publisher"
    refuse, allow = refusing("transitions", "OLD.pos IS NULL AND NEW.pos IS NOT NULL", "23514",
                             "publication refused by the test", name="test_refuse_pos",
                             events="UPDATE")
    refs = ["e1", "e2"]
    await make_messages(pool, refs)
    before = failures(component)
    with structlog.testing.capture_logs() as logs:
        async with running(config(db_dsn)) as (_, base), session() as s:
            await pool.execute(refuse)
            try:
                await report(pool, refs, State.delivered)

                async def named_failing() -> bool:
                    status, body = await readyz(s, base)
                    return status == 503 and any("CheckViolationError" in r
                                                 for r in named(body, component))

                await wait_until(named_failing, 20, "/readyz naming the publisher", step=0.1)
                assert failures(component) - before >= 2  # counted, and restarted after each
                assert await pool.fetchval(
                    "SELECT count(*) FROM tracker.transitions WHERE pos IS NULL") == 2
            finally:
                await pool.execute(allow)
            await wait_until(lambda: all_published(pool), 10, "published once allowed")

            async def ready() -> bool:
                return await readyz(s, base) == (200, {"status": "ready"})

            await wait_until(ready, 10, "ready again", step=0.1)
    failed = failed_logs(logs, component)
    assert len(failed) >= 2 and all(e["log_level"] == "error" and e["exc_info"] for e in failed)
    assert not [e for e in logs if "will retry" in e.get("event", "")]  # no quiet retrying


async def test_a_sweep_waits_out_an_outage_and_fails_on_a_refused_statement(pool):
    # Supervisor.job, for every sweep: a statement PostgreSQL refuses (here: the table the
    # backlog sweep counts is gone) fails the run, counted and named; the database unreachable
    # is waited out until the next run (a warning), tracker_database_up 0 and the backlog gauges
    # NaN meanwhile (left as they were, a stall's age kept an alert firing through an outage).
    supervisor = Supervisor(HealthConfig())
    component = "sweep:backlog"
    before = failures(component)
    await pool.execute("ALTER TABLE tracker.postbacks RENAME TO postbacks_away")
    try:
        await supervisor.job(component, lambda: ops.count_backlog(pool, ops.HeadClock()))()
    finally:
        await pool.execute("ALTER TABLE tracker.postbacks_away RENAME TO postbacks")
    health = supervisor.health(component)
    assert failures(component) - before == 1 and health.failures_in_a_row == 1
    assert "UndefinedTableError" in health.last_error
    metrics.intake_waiting.set(7)
    away = await asyncpg.create_pool("postgresql://nobody:S3cretPW@127.0.0.1:9/none", min_size=0)
    try:
        with structlog.testing.capture_logs() as logs:
            await supervisor.job(component, lambda: ops.count_backlog(away, ops.HeadClock()))()
    finally:
        await away.close()
    assert [(e["event"], e["sweep"]) for e in logs] == [
        ("sweep failed: database unavailable", component)]
    assert "S3cretPW" not in repr(logs)
    assert failures(component) - before == 1 and health.failures_in_a_row == 1  # not counted
    assert math.isnan(metrics.intake_waiting._value.get()) and metrics.database_up._value.get() == 0
    await supervisor.job(component, lambda: ops.count_backlog(pool, ops.HeadClock()))()
    assert metrics.intake_waiting._value.get() == 0 and health.failures_in_a_row == 0


async def test_a_refused_poll_stats_write_is_counted_and_named_and_its_counts_kept(db_dsn, pool):
    # The poll counters' flush (sweep:poll-health) logged every error as "will retry": a
    # statement refused for good was a warning line for ever and /readyz said ready.
    component = "sweep:poll-health"
    refuse, allow = refusing("poll_stats", "true", "23514", "poll stats refused by the test",
                             name="test_refuse_poll_stats", events="INSERT OR UPDATE")
    before = failures(component)
    async with running(config(db_dsn)) as (tr, base), session() as s:
        await pool.execute(refuse)
        try:
            poller = next(c for c in tr.components if isinstance(c, Poller))
            poller.workers["sparksender"].health.stats.failed += 3  # to be written, once

            async def named_failing() -> bool:
                run_now(tr, "poll-health")
                status, body = await readyz(s, base)
                return status == 503 and any("CheckViolationError" in r
                                             for r in named(body, component))

            await wait_until(named_failing, 20, f"/readyz naming {component}", step=0.2)
            assert failures(component) - before >= 2
        finally:
            await pool.execute(allow)

        async def written() -> bool:
            run_now(tr, "poll-health")
            return await pool.fetchval(
                "SELECT sum(polls_failed) FROM tracker.poll_stats WHERE vendor = 'sparksender'") == 3

        await wait_until(written, 20, "the kept counts written", step=0.2)
        await wait_until(lambda: _ready(s, base), 20, "ready again", step=0.2)


async def _ready(s, base) -> bool:
    return await readyz(s, base) == (200, {"status": "ready"})


async def test_a_lock_never_granted_in_a_sweep_is_counted_and_named(db_dsn, pool):
    # A lock not had within lock_timeout passes with time, but is no outage: waited out as one,
    # a fold that could never take its lock was a warning line for ever and /readyz said ready.
    component = "sweep:rollup"
    await make_messages(pool, ["l1", "l2"])  # their deltas wait in route_deltas
    cfg = config(db_dsn)  # the daemon's sessions wait 500 ms for a lock: half of wedged_after_s
    cfg = dataclasses.replace(cfg, health=dataclasses.replace(cfg.health, wedged_after_s=1.0))
    holder = await asyncpg.connect(db_dsn)
    before = failures(component)
    try:
        await holder.execute("BEGIN; LOCK TABLE tracker.route_days IN ACCESS EXCLUSIVE MODE")
        async with running(cfg) as (tr, base), session() as s:
            async def named_failing() -> bool:
                run_now(tr, "rollup")
                status, body = await readyz(s, base)
                return status == 503 and any("LockNotAvailableError" in r for r in named(body, component))

            await wait_until(named_failing, 20, f"/readyz naming {component}", step=0.2)
            assert failures(component) - before >= 2
            await holder.execute("ROLLBACK")

            async def folded_and_ready() -> bool:
                run_now(tr, "rollup")
                return (not await pool.fetchval("SELECT count(*) FROM tracker.route_deltas")
                        and await readyz(s, base) == (200, {"status": "ready"}))

            await wait_until(folded_and_ready, 20, "folded and ready again", step=0.2)
    finally:
        await holder.close()
