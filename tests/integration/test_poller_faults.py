"""The poller's failure paths against the sandbox over real HTTP and a real PostgreSQL: rate
limits, 429 + Retry-After, account errors and the circuit breaker, 5xx / timeouts / malformed
answers, Sparrow's token, the database going away, and credentials kept out of logs."""
from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest
import structlog

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


async def test_the_rate_limit_holds(sandbox, pool, db_dsn):
    rate = 25.0
    config = make_config(sandbox, db_dsn, sparksender={"rate_limit_per_s": rate, "concurrency": 8})
    await send(sandbox, pool, config, "sparksender", numbers(150))
    sandbox.set_knobs("sparksender", rate_limit_per_s=rate)  # the vendor's own limit: 429 beyond
    p = await start_poller(config, pool)
    await asyncio.sleep(4.0)
    await p.stop()
    calls = status_requests(sandbox, "sparksender")
    times = sorted(r["t"] for r in calls)
    assert len(times) >= 3 * rate  # it was busy, not idle
    worst = max(sum(1 for u in times[i:] if u < t + 1.0) for i, t in enumerate(times))
    assert worst <= rate * 1.1 + 1  # bursts of a tenth of a second's worth at most
    assert not [r for r in calls if r["status"] == 429]  # never over the vendor's limit


async def test_a_429_with_retry_after_is_honoured(sandbox, pool, db_dsn):
    config = make_config(sandbox, db_dsn, tracking_window_s=10.0, sparksender={"concurrency": 1})
    await send(sandbox, pool, config, "sparksender", numbers(10))
    sandbox.set_knobs("sparksender", throttle_share=1.0, retry_after_s=1)
    p = await start_poller(config, pool)
    await asyncio.sleep(3.5)
    calls = status_requests(sandbox, "sparksender")
    assert calls and all(r["status"] == 429 for r in calls)
    gaps = [b["t"] - a["t"] for a, b in zip(calls, calls[1:])]
    assert len(calls) <= 5 and min(gaps) >= 0.95  # one call per Retry-After, not a storm
    assert await count(pool, "SELECT count(*) FROM tracker.observations WHERE source = 'poll'") == 0
    sandbox.set_knobs("sparksender", throttle_share=0.0)
    await finish(p, pool)
    assert mismatches(sandbox, await db_states(pool), ("sparksender",)) == []


async def test_a_long_retry_after_hands_the_messages_back_unpolled(sandbox, pool, db_dsn):
    config = make_config(sandbox, db_dsn, sparksender={"concurrency": 1})
    await send(sandbox, pool, config, "sparksender", numbers(10))
    sandbox.set_knobs("sparksender", throttle_share=1.0, retry_after_s=5)
    p = await start_poller(config, pool)
    try:
        await wait_until(lambda: _any_call(sandbox), 5)
        await asyncio.sleep(2.0)
        calls = status_requests(sandbox, "sparksender")
        assert len(calls) == 1  # nothing else goes out during the 5 s asked for
        async with pool.acquire() as conn:
            rows = await conn.fetch("SELECT poll_count, lease_owner,"
                                    " extract(epoch FROM next_poll_at - now()) AS due_in"
                                    " FROM tracker.messages")
        assert sum(r["poll_count"] for r in rows) <= 1  # the rest were handed back unpolled
        assert all(r["lease_owner"] is None and r["due_in"] > 2.0 for r in rows)
    finally:
        await p.stop()


async def _any_call(sandbox) -> bool:
    return bool(status_requests(sandbox, "sparksender"))


async def test_account_errors_open_the_circuit_change_nothing_and_a_probe_closes_it(
        sandbox, pool, db_dsn):
    config = make_config(sandbox, db_dsn, circuit_reset_s=1.0)
    vendors = ("sparksender", "engagespark", "sparrow")
    for vendor in vendors:
        await send(sandbox, pool, config, vendor, numbers(40), chunk=20)
    sandbox.set_knobs("sparksender", account="suspended")  # sms_status 8
    sandbox.set_knobs("engagespark", account="no_funds")  # HTTP 402
    sandbox.set_knobs("sparrow", bad_credentials=True)  # the login is refused
    secrets = [v for c in sandbox.credentials.values() for k, v in c.items()
               if k not in ("user_id", "org_id")]
    first = len(sandbox.requests)
    with structlog.testing.capture_logs() as logs:
        p = await start_poller(config, pool)
        await asyncio.sleep(2.6)
        await p.flush_health()
        async with pool.acquire() as conn:
            health = {r["vendor"]: r for r in await conn.fetch("SELECT * FROM tracker.vendor_health")}
            stats = await conn.fetch("SELECT last_error FROM tracker.poll_stats")
            changed = await conn.fetchval("SELECT count(*) FROM tracker.transitions WHERE source = 'poll'")
            reports = await conn.fetchval("SELECT count(*) FROM tracker.observations WHERE source = 'poll'")
        calls = {v: len([r for r in list(sandbox.requests)[first:] if r["vendor"] == v]) for v in vendors}
        for v in vendors:
            sandbox.set_knobs(v, account="ok", bad_credentials=False)
        await finish(p, pool)
    # While open: no message changed; only what was in flight, then one probe per reset.
    assert {health[v]["circuit_state"] for v in vendors} == {"open"}
    assert all(health[v]["poll_errors"] >= 1 for v in vendors)
    assert all(1 <= n <= 8 + 3 for n in calls.values()), calls
    assert changed == 0 and reports == 0
    # Once the account is fixed, a probe closes the circuit and polling finishes the job.
    assert mismatches(sandbox, await db_states(pool)) == []
    closed = {e.get("vendor") for e in logs if e.get("event") == "vendor circuit closed: polling again"}
    assert closed == set(vendors)
    async with pool.acquire() as conn:
        after = {r["vendor"]: r["circuit_state"] for r in await conn.fetch("SELECT * FROM tracker.vendor_health")}
    assert {after[v] for v in vendors} == {None}  # the poller stopped: nobody polls them now
    # Credentials appear in no log line and in no stored error.
    text = repr(logs) + repr([r["last_error"] for r in stats])
    assert not [s for s in secrets if s in text]


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


async def test_sparrow_token_is_refreshed_before_it_expires_and_after_a_401(sandbox, pool, db_dsn):
    sandbox.set_knobs("sparrow", token_ttl_s=150.0)  # 1.5 s
    config = make_config(sandbox, db_dsn, tracking_window_s=5.0)
    await send(sandbox, pool, config, "sparrow", numbers(100), chunk=10)
    p = await start_poller(config, pool)
    await asyncio.sleep(2.0)
    sandbox.vendors["sparrow"]._tokens.clear()  # the vendor revokes every token it gave
    await finish(p, pool)
    assert mismatches(sandbox, await db_states(pool), ("sparrow",)) == []
    logins = [r for r in sandbox.requests if r["vendor"] == "sparrow" and "login" in r["path"]]
    refused = [r for r in status_requests(sandbox, "sparrow") if r["status"] == 401]
    assert len(logins) >= 4  # the send's, the first, refreshes before expiry, the one after revocation
    assert 1 <= len(refused) <= 8  # only the calls in flight when the tokens were revoked
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT sum(polls_failed) FROM tracker.poll_stats WHERE vendor = 'sparrow'") == 0


async def test_the_database_going_away_and_coming_back(sandbox, pool, db_dsn, pg_server):
    sandbox.set_knobs(None, no_receipt=0.0)  # every message gets a receipt: no waiting for windows
    config = make_config(sandbox, db_dsn, tracking_window_s=10.0)
    await send(sandbox, pool, config, "sparksender", numbers(100))
    name = db_dsn.rsplit("/", 1)[1]
    p = await start_poller(config, pool)
    await asyncio.sleep(0.6)
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
    from tests.polling_support import tracker_on
    from tracker import adapters
    from tracker.poller import circuit as cb
    from tracker.poller.engine import Poller, VendorWorker

    config = make_config(sandbox, db_dsn)
    closed = await asyncpg.create_pool(db_dsn, min_size=0, max_size=1)
    await closed.close()  # every acquire fails, as with the database down
    poller = Poller(tracker_on(config, closed))
    worker = VendorWorker(poller, adapters.get("sparksender"), config.vendors["sparksender"])
    worker.circuit = cb.Circuit("open", opened_at=time.monotonic() - 60)  # a probe is due
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.3)
    poller.stopping.set()
    worker.wake.set()
    await asyncio.wait_for(task, 5)
    await worker.client.close()
    assert worker.circuit.state == "half_open" and not worker.circuit.probing  # the next may go


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
