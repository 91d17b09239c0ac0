"""The poller's failure paths end to end, against the sandbox over real HTTP and a real
PostgreSQL: 5xx / timeouts / malformed answers until the ground truth, answers PostgreSQL cannot
store, the database going away. The logic of the circuit, Retry-After, account errors, leases
and Sparrow's token is tested in one process, without waiting: test_poller_in_process.py."""
from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from tests.polling_support import (all_final, db_states, make_config, numbers, send,
                                   start_poller, status_requests, wait_until)
from tracker.sandbox import Sandbox

KNOBS = {"time_scale": 0.01, "latency": "uniform", "latency_s": 100.0, "deadline_s": 200.0,
         "read": 0.0}


@pytest.fixture
async def sandbox():
    sb = Sandbox(knobs=KNOBS, seed=5)
    await sb.start()
    yield sb
    await sb.stop()


def mismatches(sandbox, states, vendors=("sparksender", "engagespark", "sparrow")):
    return [(k, t["final"], states.get(k)) for k, t in sandbox.truth().items()
            if k[0] in vendors and states.get(k) != t["final"]]


async def finish(poller, pool, timeout=30.0):
    async def done():
        await poller.sweep_windows()
        return await all_final(pool)

    try:
        await wait_until(done, timeout, step=0.2)
    finally:
        await poller.stop()


async def count(pool, sql, *args):
    async with pool.acquire() as conn:
        return await conn.fetchval(sql, *args)


async def test_5xx_timeouts_and_malformed_answers_are_retried_until_the_truth(sandbox, pool, db_dsn):
    sandbox.set_knobs(None, no_receipt=0.0)
    config = make_config(sandbox, db_dsn, request_timeout_s=1.0, tracking_window_s=12.0,
                         circuit_failures=50)
    for vendor in ("sparksender", "engagespark", "sparrow"):
        await send(sandbox, pool, config, vendor, numbers(60), chunk=20)
    sandbox.set_knobs(None, server_error_share=0.15, malformed_share=0.15, slow_share=0.03,
                      slow_delay_s=2.5)  # (every message gets a receipt: no waiting for windows)
    p = await start_poller(config, pool)
    await finish(p, pool, timeout=40)
    assert mismatches(sandbox, await db_states(pool)) == []
    async with pool.acquire() as conn:
        errors = {r["vendor"]: r["poll_errors"] for r in await conn.fetch(
            "SELECT vendor, sum(polls_failed) AS poll_errors FROM tracker.poll_stats GROUP BY vendor")}
        errs = {r["last_error"] for r in await conn.fetch("SELECT last_error FROM tracker.poll_stats")}
        left = await conn.fetchval("SELECT count(*) FROM tracker.messages WHERE lease_owner IS NOT NULL")
    assert all(errors[v] > 0 for v in ("sparksender", "engagespark", "sparrow"))
    assert errs & {"HTTP 500", "HTTP 502", "HTTP 503", "malformed answer", "timeout"}
    assert left == 0


async def test_the_database_going_away_and_coming_back(sandbox, pool, db_dsn, pg_server):
    sandbox.set_knobs(None, no_receipt=0.0)  # every message gets a receipt: no waiting for windows
    config = make_config(sandbox, db_dsn, tracking_window_s=10.0)
    await send(sandbox, pool, config, "sparksender", numbers(100))
    name = db_dsn.rsplit("/", 1)[1]
    p = await start_poller(config, pool)

    async def polling() -> bool:  # polls under way: the database goes away mid-work
        return len(status_requests(sandbox, "sparksender")) > 0

    await wait_until(polling, 10, step=0.02)
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                            " WHERE datname = $1 AND pid <> pg_backend_pid()", name)
        down_at = time.monotonic()
        await asyncio.sleep(2.5)
        calls_while_down = [r for r in status_requests(sandbox, "sparksender") if r["t"] > down_at + 0.5]
        await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
    finally:
        await admin.close()
    assert all(not t.done() for t in p.tasks)  # the loops are waiting, not dead
    assert len(calls_while_down) <= 2 * 8  # no claims without a database
    await finish(p, pool)
    assert mismatches(sandbox, await db_states(pool), ("sparksender",)) == []
    assert await count(pool, "SELECT count(*) FROM tracker.messages WHERE lease_owner IS NOT NULL") == 0


async def test_a_probe_lost_to_a_database_outage_does_not_wedge_the_circuit(sandbox, db_dsn):
    import structlog

    from tests.polling_support import poller_on
    from tracker.poller import circuit as cb

    config = make_config(sandbox, db_dsn)
    closed = await asyncpg.create_pool(db_dsn, min_size=0, max_size=1)
    await closed.close()  # every acquire fails, as with the database down
    poller = poller_on(config, closed)
    worker = poller.worker("sparksender")
    worker.health.circuit = cb.Circuit("open", opened_at=time.monotonic() - 60)  # a probe is due
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(worker.run())

        async def probe_lost() -> bool:  # the probe was allowed, then its claim met the outage
            return any(e["event"].startswith("poll: database unavailable") and e.get("vendor") == "sparksender"
                       for e in logs)

        await wait_until(probe_lost, 5, step=0.02)
    poller.stopping.set()
    worker.wake.set()
    await asyncio.wait_for(task, 5)
    await worker.close()
    c = worker.health.circuit
    assert c.state == "half_open" and not c.probing  # the next may go


async def test_an_answer_with_a_nul_character_is_kept_cleaned_and_holds_up_nothing(
        sandbox, pool, db_dsn):
    # Well-formed JSON with a NUL character: the adapters read it, PostgreSQL would refuse it
    # (once, the whole batch's write-back failed on it, again and again). The reading is kept
    # with the NUL replaced.
    sandbox.set_knobs(None, no_receipt=0.0)
    config = make_config(sandbox, db_dsn, tracking_window_s=12.0, circuit_failures=50,
                         batch_size=100)
    for vendor in ("sparksender", "engagespark", "sparrow"):
        await send(sandbox, pool, config, vendor, numbers(40), chunk=20)
    sandbox.set_knobs(None, malformed_share=0.4, malformed_kinds=["nul"])
    p = await start_poller(config, pool)
    await finish(p, pool, timeout=40)
    assert mismatches(sandbox, await db_states(pool)) == []
    async with pool.acquire() as conn:
        errors = await conn.fetchval("SELECT coalesce(sum(polls_failed), 0) FROM tracker.poll_stats")
        notes = await conn.fetch("SELECT DISTINCT raw->>'note' AS note FROM tracker.observations"
                                 " WHERE raw ? 'note'")
    assert errors == 0
    assert [r["note"] for r in notes] == ["\ufffd"]
