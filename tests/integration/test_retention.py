"""Retention (tracker.retention) removes exactly what it should: old enough, and nothing a consumer
or sink has not acknowledged, nor any message with work left."""
from __future__ import annotations

import asyncio
import dataclasses

import pytest

from tracker import metrics, retention
from tracker.config_types import HealthConfig, RetentionConfig
from tracker.supervisor import Supervisor

CONFIG = RetentionConfig(observations_days=30, postbacks_days=14, orphans_days=7, transitions_days=30,
                         refused_rows_days=30, final_messages_days=90, batch_size=3, pause_ms=0,
                         run_budget_s=30)


async def message(conn, ref: str, state: str, age_days: float, final_days: float | None = None,
                  submission: int | None = None, events: int = 2) -> int:
    """A message submitted `age_days` ago, in `state` since `final_days` ago, with two reports
    and `events` published events (their positions follow on from the publisher's)."""
    mid = await conn.fetchval(
        "INSERT INTO tracker.messages (vendor, vendor_ref, state, submitted_at, updated_at, submission_id)"
        " VALUES ('sparksender', $1, $2::tracker.state, now() - make_interval(days => $3::int),"
        "         now() - make_interval(days => $4::int), $5) RETURNING id",
        ref, state, int(age_days), int(final_days if final_days is not None else age_days), submission)
    await conn.execute(
        "INSERT INTO tracker.observations (message_id, vendor, vendor_ref, source, state, code, raw, received_at)"
        " SELECT $1, 'sparksender', $2, 'poll', 'sent', '1', '{\"big\": \"payload\"}',"
        "        now() - make_interval(days => $3::int) FROM generate_series(1, 2)", mid, ref, int(age_days))
    for _ in range(events):
        await conn.execute(
            "INSERT INTO tracker.transitions (message_id, from_state, to_state, source, occurred_at, recorded_at, pos)"
            " VALUES ($1, 'submitted', 'sent', 'poll', now(), now() - make_interval(days => $2::int),"
            "         (SELECT last_pos + 1 FROM tracker.event_publisher))", mid, int(age_days))
        await conn.execute("UPDATE tracker.event_publisher SET last_pos = last_pos + 1")
    return mid


async def last_pos(conn) -> int:
    return await conn.fetchval("SELECT last_pos FROM tracker.event_publisher")


async def test_removes_exactly_what_may_go(pool):
    async with pool.acquire() as conn:
        sub_gone = await conn.fetchval(
            "INSERT INTO tracker.submissions (vendor, vendor_ref, processed_at, created_at, message_count)"
            " VALUES ('sparksender', 'x', now() - interval '100 days', now() - interval '100 days', 1) RETURNING id")
        sub_shared = await conn.fetchval(
            "INSERT INTO tracker.submissions (vendor, vendor_ref, processed_at, created_at, message_count)"
            " VALUES ('sparksender', 'y', now() - interval '100 days', now() - interval '100 days', 2) RETURNING id")
        old_acked = await message(conn, "old-acked", "delivered", 100, 95, sub_gone)
        shared_old = await message(conn, "shared-old", "delivered", 100, 95, sub_shared)
        shared_new = await message(conn, "shared-new", "sent", 100, 1, sub_shared)  # still in flight
        month_old = await message(conn, "forty-days", "delivered", 40, 40, events=1)
        recent = await message(conn, "recent", "delivered", 10, 10)
        # Submitted 100 days ago, final only yesterday (its final event recorded then): it stays.
        late_final = await message(conn, "late-final", "delivered", 100, 1, events=1)
        await conn.execute(
            "INSERT INTO tracker.transitions (message_id, from_state, to_state, source, occurred_at, recorded_at, pos)"
            " VALUES ($1, 'sent', 'delivered', 'poll', now() - interval '1 day', now() - interval '1 day',"
            "         (SELECT last_pos + 1 FROM tracker.event_publisher))", late_final)
        await conn.execute("UPDATE tracker.event_publisher SET last_pos = last_pos + 1")
        # Old and final, every published event acknowledged, one event not published yet: it stays.
        old_unpublished = await message(conn, "old-unpublished", "delivered", 100, 95)
        pending_event = await conn.fetchval(
            "INSERT INTO tracker.transitions (message_id, from_state, to_state, source, occurred_at, recorded_at)"
            " VALUES ($1, 'sent', 'delivered', 'poll', now(), now() - interval '95 days') RETURNING event_id",
            old_unpublished)
        old_unacked = await message(conn, "old-unacked", "failed", 100, 95)
        # billing has acknowledged every event but old-unacked's last one.
        await conn.execute("INSERT INTO tracker.consumers (consumer, acked_pos) VALUES ('billing', $1)",
                           await last_pos(conn) - 1)
        unpublished = await conn.fetchval(
            "INSERT INTO tracker.transitions (message_id, from_state, to_state, source, occurred_at, recorded_at)"
            " VALUES ($1, 'sent', 'delivered', 'poll', now(), now() - interval '60 days') RETURNING event_id", month_old)
        await conn.execute(
            "INSERT INTO tracker.observations (vendor, vendor_ref, source, code, received_at) VALUES"
            " ('skycore', 'orphan-old', 'postback', 'N201', now() - interval '10 days'),"
            " ('skycore', 'orphan-new', 'postback', 'N201', now() - interval '2 days')")
        await conn.execute(
            "INSERT INTO tracker.postbacks (vendor, method, body, received_at, processed_at) VALUES"
            " ('skycore', 'POST', 'a', now() - interval '20 days', now() - interval '20 days'),"
            " ('skycore', 'POST', 'b', now() - interval '20 days', NULL),"
            " ('skycore', 'POST', 'c', now() - interval '5 days', now() - interval '5 days')")
        await conn.execute(
            "INSERT INTO tracker.submissions (vendor, vendor_ref, error, processed_at, created_at, message_count) VALUES"
            " ('twilio', 'old-refused', 'unknown vendor', now() - interval '40 days', now() - interval '40 days', 0),"
            " ('twilio', 'new-refused', 'unknown vendor', now() - interval '10 days', now() - interval '10 days', 0),"
            " ('sparksender', 'waiting', NULL, NULL, now() - interval '40 days', NULL)")
        removed_before = {k: metrics.retention_removed.labels(k)._value.get() for k in retention.KINDS}

    swept = await retention.sweep(pool, CONFIG)

    async with pool.acquire() as conn:
        messages = {r["vendor_ref"] for r in await conn.fetch("SELECT vendor_ref FROM tracker.messages")}
        assert messages == {"shared-new", "old-unacked", "forty-days", "recent", "late-final", "old-unpublished"}
        by_message = {r["message_id"]: r["n"] for r in await conn.fetch(
            "SELECT message_id, count(*) AS n FROM tracker.observations WHERE message_id IS NOT NULL GROUP BY 1")}
        # Reports of final messages older than 30 days go; in-flight and recent ones stay.
        assert by_message == {shared_new: 2, recent: 2}
        events = {r["message_id"]: r["n"] for r in await conn.fetch(
            "SELECT message_id, count(*) AS n FROM tracker.transitions GROUP BY 1")}
        # old-unacked: its acknowledged event went, the other holds the message; forty-days: its
        # acknowledged event went, the unpublished one stays; in flight and recent: all stay;
        # late-final: its old event went, yesterday's stays; old-unpublished: the unpublished one stays.
        assert events == {shared_new: 2, old_unacked: 1, month_old: 1, recent: 2, late_final: 1,
                          old_unpublished: 1}
        assert await conn.fetchval("SELECT event_id FROM tracker.transitions WHERE message_id = $1", month_old) \
            == unpublished
        assert await conn.fetchval("SELECT event_id FROM tracker.transitions WHERE message_id = $1",
                                   old_unpublished) == pending_event
        assert await conn.fetchval("SELECT to_state FROM tracker.transitions WHERE message_id = $1",
                                   late_final) == "delivered"
        orphans = [r[0] for r in await conn.fetch(
            "SELECT vendor_ref FROM tracker.observations WHERE message_id IS NULL")]
        assert orphans == ["orphan-new"]
        assert sorted(bytes(r[0]) for r in await conn.fetch("SELECT body FROM tracker.postbacks")) == [b"b", b"c"]
        subs = {r[0] for r in await conn.fetch("SELECT vendor_ref FROM tracker.submissions")}
        assert subs == {"y", "new-refused", "waiting"}  # x went with its message; y keeps one
        status = {r["kind"]: r for r in await conn.fetch("SELECT * FROM tracker.retention_status")}
    assert {s.kind: s.removed for s in swept} == {
        "orphans": 1, "postbacks": 1, "observations": 12, "transitions": 9, "final_messages": 2,
        "unreferenced_rows": 0, "refused_rows": 1}
    # Their reports and events had gone already (the kinds before); the submission row goes with them.
    final = next(s for s in swept if s.kind == "final_messages")
    assert final.also == {"observations": 0, "transitions": 0, "submissions": 1}
    assert not any(s.behind or s.error for s in swept)
    assert status["final_messages"]["removed"] == 2 and status["postbacks"]["batches"] >= 1
    for s in swept:
        assert metrics.retention_removed.labels(s.kind)._value.get() - removed_before[s.kind] == s.removed
    assert metrics.retention_last_run._value.get() > 0
    del shared_old, old_acked  # removed, as asserted through the names above


async def test_a_sink_that_never_acknowledged_holds_every_event(pool):
    async with pool.acquire() as conn:
        await message(conn, "acked-by-consumer", "delivered", 100, 95)
        await conn.execute("INSERT INTO tracker.consumers (consumer, acked_pos) VALUES ('billing', $1)",
                           await last_pos(conn))
        await conn.execute("INSERT INTO tracker.sinks (name, kind, consumer) VALUES ('crm', 'webhook', 'sink:crm')")
        assert await conn.fetchval("SELECT tracker.acknowledged_pos()") == 0
    swept = {s.kind: s.removed for s in await retention.sweep(pool, CONFIG)}
    assert swept["transitions"] == 0 and swept["final_messages"] == 0
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO tracker.consumers (consumer, acked_pos) VALUES ('sink:crm', $1)",
                           await last_pos(conn))
    swept = {s.kind: s.removed for s in await retention.sweep(pool, CONFIG)}
    assert swept["final_messages"] == 1


async def test_dead_letters_go_once_dead_that_long_and_not_while_redriven_or_kept(pool):
    # A sink's dead letters only grew, for years of receivers' outages; now as long as
    # sink_dead_letters_days says (0, the default: for ever). Oldest first by when they died:
    # letters redriven and dead again keep their low ids with a new time, and a walk by id
    # stopped at them (events 1-3 here) and never reached the older ones past them.
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO tracker.sinks (name, kind, consumer) VALUES ('crm', 'webhook', 'sink:crm'),"
                           " ('bus', 'nats', 'sink:bus')")
        await conn.execute(
            "INSERT INTO tracker.sink_deliveries (sink, event_id, pos, message_id, recorded_at, body, status, dead_at)"
            " SELECT s, g, g, g, now() - interval '50 days', '\\x7b7d',"
            "        CASE WHEN g = 7 THEN 'pending' ELSE 'dead' END,"  # 7: redriven since
            "        CASE WHEN g = 7 THEN NULL WHEN g <= 3 THEN now() - interval '1 day'"  # dead again
            "             WHEN g <= 9 THEN now() - interval '40 days' ELSE now() - interval '2 days' END"
            " FROM generate_series(1, 10) g, unnest(ARRAY['crm', 'bus']) s")
    assert "sink_dead_letters" not in {s.kind for s in await retention.sweep(pool, CONFIG)}  # 0: kept
    assert await pool.fetchval("SELECT count(*) FROM tracker.sink_deliveries") == 20
    removed_before = metrics.retention_removed.labels("sink_dead_letters")._value.get()
    swept = {s.kind: s for s in await retention.sweep(pool, dataclasses.replace(CONFIG, sink_dead_letters_days=30))}
    assert swept["sink_dead_letters"].removed == 10  # events 4, 5, 6, 8, 9 of both sinks
    left = await pool.fetch("SELECT sink, event_id FROM tracker.sink_deliveries ORDER BY sink, event_id")
    assert [(r["sink"], r["event_id"]) for r in left] == [(s, e) for s in ("bus", "crm") for e in (1, 2, 3, 7, 10)]
    assert metrics.retention_removed.labels("sink_dead_letters")._value.get() - removed_before == 10
    assert await pool.fetchval("SELECT removed FROM tracker.retention_status WHERE kind = 'sink_dead_letters'") == 10


async def test_zero_days_keeps_a_kind_and_one_sweeper_at_a_time(pool):
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO tracker.postbacks (vendor, method, body, received_at, processed_at)"
            " VALUES ('skycore', 'POST', 'a', now() - interval '400 days', now())")
        await conn.execute("SELECT pg_advisory_lock(hashtext('tracker.retention'))")
        assert await retention.sweep(pool, CONFIG) is None  # another replica is sweeping
        await conn.execute("SELECT pg_advisory_unlock(hashtext('tracker.retention'))")
    kept = dataclasses.replace(CONFIG, postbacks_days=0)
    assert "postbacks" not in {s.kind for s in await retention.sweep(pool, kept)}
    assert await pool.fetchval("SELECT count(*) FROM tracker.postbacks") == 1


async def test_a_budget_spent_leaves_the_rest_to_the_next_sweep(pool):
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO tracker.postbacks (vendor, method, body, received_at, processed_at)"
            " SELECT 'skycore', 'POST', 'x', now() - interval '30 days', now() FROM generate_series(1, 50)")
    tight = dataclasses.replace(CONFIG, run_budget_s=0.0)
    [first] = [s for s in await retention.sweep(pool, tight) if s.kind == "postbacks"]
    assert first.behind and first.removed == 0
    assert metrics.retention_behind.labels("postbacks")._value.get() == 1
    # recorded, so that RetentionBehind's runbook finds the kind's run (nothing removed, no error)
    run = await pool.fetchrow("SELECT * FROM tracker.retention_status WHERE kind = 'postbacks'")
    assert run is not None and (run["removed"], run["error"]) == (0, None)
    swept = {s.kind: s for s in await retention.sweep(pool, dataclasses.replace(CONFIG, batch_size=7))}
    assert swept["postbacks"].removed == 50 and swept["postbacks"].batches == 9  # 8 batches, 1 to see the end
    assert metrics.retention_behind.labels("postbacks")._value.get() == 0


async def test_a_sweep_longer_than_the_wedge_limit_is_not_wedged_while_its_batches_go_on(pool):
    # The sweep runs as a supervised job, busy from start to end: each batch done is progress,
    # or a sweep of more than health.wedged_after_s (120 s by default) made /readyz 503 and
    # held back the watchdog's ping, and systemd restarted a daemon that was working.
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO tracker.postbacks (vendor, method, body, received_at, processed_at)"
            " SELECT 'skycore', 'POST', 'x', now() - interval '30 days', now() FROM generate_series(1, 12)")
    supervisor = Supervisor(HealthConfig(wedged_after_s=0.3))
    slow = dataclasses.replace(CONFIG, batch_size=1, pause_ms=100)
    job = asyncio.create_task(supervisor.job("sweep:retention", lambda: retention.sweep(pool, slow))())
    began, seen = asyncio.get_running_loop().time(), []
    while not job.done():
        seen += supervisor.problems()
        await asyncio.sleep(0.02)
    await job
    assert asyncio.get_running_loop().time() - began > 1.0  # several times the wedge limit
    assert seen == []
    assert await pool.fetchval("SELECT count(*) FROM tracker.postbacks") == 0


async def test_a_batch_that_cannot_have_its_lock_gives_up_soon_and_says_so(pool):
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO tracker.postbacks (vendor, method, body, received_at, processed_at)"
            " VALUES ('skycore', 'POST', 'x', now() - interval '30 days', now())")
    errors_before = metrics.retention_errors.labels("postbacks")._value.get()
    holder = await pool.acquire()
    try:
        tx = holder.transaction()
        await tx.start()
        await holder.execute("LOCK TABLE tracker.postbacks IN ACCESS EXCLUSIVE MODE")
        started = asyncio.get_running_loop().time()
        swept = {s.kind: s for s in await retention.sweep(pool, CONFIG)}
        assert asyncio.get_running_loop().time() - started < 10
        await tx.rollback()
    finally:
        await pool.release(holder)
    assert swept["postbacks"].behind and "LockNotAvailable" in swept["postbacks"].error
    assert swept["orphans"].error is None  # the other kinds went on
    assert metrics.retention_errors.labels("postbacks")._value.get() == errors_before + 1
    status = await pool.fetchrow("SELECT * FROM tracker.retention_status WHERE kind = 'postbacks'")
    assert "LockNotAvailable" in status["error"]
    assert await pool.fetchval("SELECT count(*) FROM tracker.postbacks") == 1


async def test_a_final_message_takes_its_reports_and_events_along(pool):
    async with pool.acquire() as conn:
        await message(conn, "old", "expired", 120, 100)
        await conn.execute("INSERT INTO tracker.consumers (consumer, acked_pos) VALUES ('billing', $1)",
                           await last_pos(conn))
    keep_parts = dataclasses.replace(CONFIG, observations_days=0, transitions_days=0)
    [final] = [s for s in await retention.sweep(pool, keep_parts) if s.kind == "final_messages"]
    assert (final.removed, final.also) == (1, {"observations": 2, "transitions": 2, "submissions": 0})
    for table in ("messages", "observations", "transitions"):
        assert await pool.fetchval(f"SELECT count(*) FROM tracker.{table}") == 0
    # What it counted for stays in the delivery figures (the rollup keeps history).
    assert await pool.fetchval("SELECT sum(expired) FROM tracker.delivery_by_route") == 1
