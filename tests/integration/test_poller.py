"""The polling engine against the sandbox over real HTTP on loopback and a real PostgreSQL:
claims and leases, per-vendor schedules, batch and list polls, tracking windows."""
from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from tests.polling_support import (all_final, db_states, make_config, numbers, send,
                                   start_poller, status_requests, wait_until)
from tracker.db import queries as q
from tracker.poller.outcomes import Outcome
from tracker.poller import engine, schedule
from tracker.sandbox import Sandbox

# Vendor world at 1/100 speed: sent after ~20 ms, receipts within 1 s, engageSPARK retries 2 s.
KNOBS = {"time_scale": 0.01, "latency": "uniform", "latency_s": 100.0, "deadline_s": 200.0,
         "read": 0.0}  # "seen" comes after "delivered", a final state: only postbacks tell it


@pytest.fixture
async def sandbox():
    sb = Sandbox(knobs=KNOBS, seed=11)
    await sb.start()
    yield sb
    await sb.stop()


async def run_until_final(poller, pool, timeout: float = 30.0) -> None:
    async def done() -> bool:
        await poller.sweep_windows()
        return await all_final(pool)

    await wait_until(done, timeout, step=0.2)


async def claimed_by_hand(sandbox, pool, db_dsn, n: int):
    """`n` Spark Sender messages, all due, claimed by the worker of a poller that is not
    polling (started and stopped): (poller, worker, claimed rows, lease_until)."""
    config = make_config(sandbox, db_dsn)
    await send(sandbox, pool, config, "sparksender", numbers(n))
    p = await start_poller(config, pool)
    await p.stop()  # not polling: the test drives its worker by hand
    worker = p.workers["sparksender"]
    async with pool.acquire() as conn:
        await conn.execute("UPDATE tracker.messages SET next_poll_at = now()")
    rows, lease_until, *_ = await worker.claim(probe=False)
    return p, worker, rows, lease_until


def mismatches(truth, states):
    """Messages of polled vendors not in their ground-truth state (Skycore only pushes)."""
    return [(k, t["final"], states.get(k)) for k, t in truth.items()
            if k[0] != "skycore" and states.get(k) != t["final"]]


async def test_every_vendor_ends_in_the_ground_truth(sandbox, pool, db_dsn):
    config = make_config(sandbox, db_dsn)
    for vendor in ("sparksender", "engagespark", "sparrow"):
        await send(sandbox, pool, config, vendor, numbers(120), chunk=30)
    await send(sandbox, pool, config, "skycore", numbers(5), bulk=False)
    poller = await start_poller(config, pool)
    try:
        await run_until_final(poller, pool)
    finally:
        await poller.stop()
    assert mismatches(sandbox.truth(), await db_states(pool)) == []
    async with pool.acquire() as conn:
        # Skycore (postback-only) is never polled; with no postbacks its window ends: unknown.
        sky = await conn.fetch("SELECT state, next_poll_at, poll_count FROM tracker.messages"
                               " WHERE vendor = 'skycore'")
        assert {(r["state"], r["next_poll_at"], r["poll_count"]) for r in sky} == {("unknown", None, 0)}
        assert not any(r["vendor"] == "skycore" for r in sandbox.requests if "api" not in r["path"]
                       and r["method"] == "GET")
        # No receipt from the carrier: unknown after the window, the last real state kept.
        hist = await conn.fetch(
            "SELECT m.vendor, array_agg(h.to_state::text ORDER BY h.event_id) AS path"
            " FROM tracker.messages m JOIN tracker.message_history h ON h.message_id = m.id"
            " WHERE m.state = 'unknown' AND m.vendor IN ('sparksender', 'engagespark')"
            " GROUP BY m.id, m.vendor")
        assert hist and all(r["path"][-2:] == ["sent", "unknown"] for r in hist)
        # Nothing is left claimed.
        assert await conn.fetchval("SELECT count(*) FROM tracker.messages WHERE lease_owner IS NOT NULL") == 0


async def test_one_pair_of_report_calls_answers_a_whole_sparrow_batch(sandbox, pool, db_dsn):
    config = make_config(sandbox, db_dsn)
    await send(sandbox, pool, config, "sparrow", numbers(200), chunk=50)  # 4 batches of 50
    poller = await start_poller(config, pool)
    try:
        await run_until_final(poller, pool)
    finally:
        await poller.stop()
    assert mismatches(sandbox.truth(), await db_states(pool)) == []
    calls = Counter(r["refs"][0] for r in status_requests(sandbox, "sparrow"))
    async with pool.acquire() as conn:
        polls = {r["vendor_ref"]: r["polls"] for r in await conn.fetch(
            "SELECT vendor_ref, max(poll_count) AS polls, count(*) AS n FROM tracker.messages"
            " WHERE vendor = 'sparrow' GROUP BY vendor_ref")}
    assert len(polls) == 4
    # Each poll of a batch is one delivery call and one failed call, whatever its size.
    assert calls == {ref: 2 * n for ref, n in polls.items()}
    assert sum(polls.values()) * 50 > 10 * sum(calls.values())


async def test_engagespark_uses_its_list_endpoint_when_many_are_in_flight(sandbox, pool, db_dsn):
    config = make_config(sandbox, db_dsn, engagespark={"list_poll_min": 50})
    await send(sandbox, pool, config, "engagespark", numbers(300), chunk=100)
    poller = await start_poller(config, pool)
    try:
        await run_until_final(poller, pool)
    finally:
        await poller.stop()
    assert mismatches(sandbox.truth(), await db_states(pool)) == []
    lists = [r for r in sandbox.requests if r["path"].rstrip("/").endswith("/messages")]
    singles = status_requests(sandbox, "engagespark")
    async with pool.acquire() as conn:
        polls = await conn.fetchval("SELECT sum(poll_count) FROM tracker.messages WHERE vendor = 'engagespark'")
    assert lists, "the list endpoint was never used"
    assert len(lists) + len(singles) < polls / 2  # far fewer calls than message polls


async def test_two_pollers_never_poll_one_message_within_one_lease(sandbox, pool, db_dsn):
    import asyncpg

    config = make_config(sandbox, db_dsn, batch_size=10)
    await send(sandbox, pool, config, "sparksender", numbers(300), chunk=100)
    other_pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=4)
    a = await start_poller(config, pool)
    b = await start_poller(config, other_pool)
    try:
        await run_until_final(a, pool)
    finally:
        await a.stop()
        await b.stop()
        await other_pool.close()
    assert a.owner != b.owner
    assert mismatches(sandbox.truth(), await db_states(pool)) == []
    by_ref = defaultdict(list)
    for r in status_requests(sandbox, "sparksender"):
        by_ref[r["refs"][0]].append(r["t"])
    # A message is polled again only after its claim was written back and its next poll came:
    # at least half of 0.8 * 2 * first_poll_s later. Two claims of one message at once would
    # show up as two calls a few milliseconds apart.
    min_gap = (1 - schedule.JITTER) * schedule.base_delay(config.vendors["sparksender"], 1) / 2
    gaps = [b - a for ts in by_ref.values() for a, b in zip(ts, ts[1:])]
    assert gaps and min(gaps) >= min_gap - 0.05
    async with pool.acquire() as conn:
        polls = await conn.fetchval("SELECT sum(poll_count) FROM tracker.messages WHERE vendor = 'sparksender'")
        per_owner = await conn.fetch("SELECT replica, polls_ok FROM tracker.poll_stats"
                                     " WHERE vendor = 'sparksender'")
    assert polls == sum(len(ts) for ts in by_ref.values())  # one call per poll, none lost
    assert len(per_owner) == 2 and all(r["polls_ok"] > 0 for r in per_owner)  # both worked


async def test_stop_hands_back_claims_due_at_once(sandbox, pool, db_dsn):
    p, _, rows, _ = await claimed_by_hand(sandbox, pool, db_dsn, 20)
    assert rows
    async with pool.acquire() as conn:
        held = await conn.fetchval("SELECT count(*) FROM tracker.messages WHERE lease_owner = $1", p.owner)
        assert held == len(rows)
    await p.stop()  # as on SIGTERM with a claim in flight
    async with pool.acquire() as conn:
        left = await conn.fetch("SELECT lease_owner, next_poll_at <= now() AS due FROM tracker.messages")
    assert all(r["lease_owner"] is None and r["due"] for r in left)


async def test_window_sweep_turns_open_messages_unknown_keeping_history(sandbox, pool, db_dsn):
    config = make_config(sandbox, db_dsn)
    await send(sandbox, pool, config, "sparksender", numbers(3))
    await send(sandbox, pool, config, "skycore", numbers(2), bulk=False)
    p = await start_poller(config, pool)
    await p.stop()
    async with pool.acquire() as conn:
        await conn.execute("UPDATE tracker.messages SET window_ends_at = now() - interval '1 s',"
                           " poll_count = greatest(poll_count, 1)"  # looked up at least once
                           " WHERE vendor_ref IN (SELECT vendor_ref FROM tracker.messages ORDER BY id LIMIT 4)")
    await p.sweep_windows()
    async with pool.acquire() as conn:
        states = Counter(r["state"] for r in await conn.fetch("SELECT state FROM tracker.messages"))
        history = await conn.fetch(
            "SELECT h.source, h.from_state, h.to_state FROM tracker.message_history h"
            " WHERE h.to_state = 'unknown'")
        polled = await conn.fetchval("SELECT count(*) FROM tracker.messages"
                                     " WHERE state = 'unknown' AND next_poll_at IS NOT NULL")
    assert states == {"unknown": 4, "accepted": 1} or states == {"unknown": 4, "submitted": 1}
    assert len(history) == 4 and {r["source"] for r in history} == {"tracker"}
    assert polled == 0


async def test_a_message_never_looked_up_is_asked_before_its_window_is_taken_as_ended(sandbox, pool, db_dsn):
    # A backlog taken in with its senders' times, its windows over already: it was `unknown`
    # before any status call went out. A vendor down for good still ends them, a day later.
    config = make_config(sandbox, db_dsn)
    await send(sandbox, pool, config, "sparksender", numbers(3))
    async with pool.acquire() as conn:
        ids = [r[0] for r in await conn.fetch("SELECT id FROM tracker.messages ORDER BY id")]
        await conn.execute("UPDATE tracker.messages SET window_ends_at = now() - interval '1 s'")
        await conn.execute("UPDATE tracker.messages SET window_ends_at = now() - interval '25 hours'"
                           " WHERE id = $1", ids[0])
        assert await engine.end_windows(conn) == 1  # the one a day past its window, unasked
        assert await engine.end_windows(conn) == 0  # the others wait for their look
        await conn.execute("UPDATE tracker.messages SET poll_count = 1 WHERE id = $1", ids[1])  # asked
        assert await engine.end_windows(conn) == 1
        states = [r[0] for r in await conn.fetch("SELECT state FROM tracker.messages ORDER BY id")]
    assert states[:2] == ["unknown", "unknown"] and states[2] != "unknown"


async def test_unmapped_codes_and_counts_show_in_vendor_health(sandbox, pool, db_dsn):
    config = make_config(sandbox, db_dsn)
    await send(sandbox, pool, config, "sparksender", numbers(10))
    async with pool.acquire() as conn:  # an id the vendor does not know: sms_status 5
        await conn.execute("INSERT INTO tracker.submissions (vendor, vendor_ref, recipient)"
                           " VALUES ('sparksender', '99999999', '639170000099')")
    from tracker.intake import take_in
    async with pool.acquire() as conn:
        await take_in(conn, config)
        vendors = list(config.vendors.values())  # as the daemon does at start
        await conn.execute(q.UPSERT_VENDOR_SETTINGS, [v.name for v in vendors],
                           [v.expected_final_s for v in vendors])
    p = await start_poller(config, pool)
    try:
        await wait_until(lambda: _polled_all(pool), 10)
        await p.flush_health()  # the periodic flush, now
        async with pool.acquire() as conn:
            h = await conn.fetchrow("SELECT * FROM tracker.vendor_health WHERE vendor = 'sparksender'")
            sky = await conn.fetchrow("SELECT * FROM tracker.vendor_health WHERE vendor = 'skycore'")
    finally:
        await p.stop()
    assert h["poll_successes"] >= 11 and h["poll_errors"] == 0 and h["last_success_at"] is not None
    assert h["unmapped_codes"] == ["5"] and h["unmapped_reports"] >= 1
    assert h["circuit_state"] == "closed" and h["polling_replicas"] == 1
    assert sky["poll_successes"] == 0 and sky["circuit_state"] is None  # never polled
    async with pool.acquire() as conn:
        gone = await conn.fetchrow("SELECT * FROM tracker.vendor_health WHERE vendor = 'sparksender'")
    assert gone["polling_replicas"] == 0 and gone["poll_successes"] >= h["poll_successes"]


async def _polled_all(pool) -> bool:
    async with pool.acquire() as conn:
        return await conn.fetchval("SELECT bool_and(poll_count > 0) FROM tracker.messages")


async def test_a_postback_that_pushed_the_next_poll_out_during_a_claim_is_kept(sandbox, pool, db_dsn):
    _, worker, rows, lease_until = await claimed_by_hand(sandbox, pool, db_dsn, 2)
    async with pool.acquire() as conn:  # what tracker.postbacks does on a report (DEFER_POLLS)
        await conn.execute("UPDATE tracker.messages SET next_poll_at = now() + interval '1 hour'"
                           " WHERE id = $1", rows[0].id)
    await worker.write(rows, {r.id: Outcome() for r in rows}, lease_until)
    async with pool.acquire() as conn:
        due_in = {r["id"]: r["s"] for r in await conn.fetch(
            "SELECT id, extract(epoch FROM next_poll_at - now()) AS s FROM tracker.messages")}
    assert due_in[rows[0].id] > 3000  # the postback's later time
    assert due_in[rows[1].id] < 5  # the backoff (2 x first_poll_s, jittered)
