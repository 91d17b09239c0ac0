"""Two tables that grew without bound (sql/028): submission rows no message points to (a
resubmission, an id used again) were never removed, and tracker.poll_stats gained a row per polled
vendor at every daemon start. The rows go; tracker.vendor_health shows the same figures."""
from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import asyncpg
import structlog

from tests.faults_support import refusing
from tracker import metrics, retention
from tracker.config_types import Config, RetentionConfig
from tracker.db import queries as q
from tracker.intake import take_in

NONE = RetentionConfig(observations_days=0, postbacks_days=0, orphans_days=0, transitions_days=0,
                       refused_rows_days=0, final_messages_days=0, batch_size=3, pause_ms=0,
                       run_budget_s=30)
KEEP_MESSAGES = dataclasses.replace(NONE, final_messages_days=90)
VENDORS = ["sparksender", "sparrow"]


async def submissions(pool) -> list[tuple]:
    return [tuple(r) for r in await pool.fetch(
        "SELECT vendor_ref, client_ref FROM tracker.submissions ORDER BY id")]


# --- submission rows no message points to -------------------------------------------------------

async def test_rows_naming_a_message_already_tracked_go_when_the_messages_do(pool):
    # Through intake: order-2 names 5 in the same batch as order-1, order-3 in a later one. The
    # message points to order-1's row; nothing removed order-2's or order-3's, ever.
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO tracker.submissions (vendor, client_ref, vendor_ref) VALUES"
                           " ('sparksender', 'order-1', '5'), ('sparksender', 'order-2', '5'),"
                           " ('sparksender', 'order-4', '6')")
        await take_in(conn, Config())
        await conn.execute("INSERT INTO tracker.submissions (vendor, client_ref, vendor_ref)"
                           " VALUES ('sparksender', 'order-3', '5')")
        await take_in(conn, Config())
        assert await conn.fetchval("SELECT count(*) FROM tracker.messages") == 2
        assert [r[0] for r in await conn.fetch("SELECT message_count FROM tracker.submissions")] == [1] * 4
        await conn.fetchval("SELECT tracker.publish_events()")  # no reader: every event acknowledged
        # All of it delivered and 100 days old.
        await conn.execute("UPDATE tracker.messages SET state = 'delivered', next_poll_at = NULL,"
                           " submitted_at = now() - interval '100 days', updated_at = now() - interval '100 days'")
        await conn.execute("UPDATE tracker.submissions SET created_at = now() - interval '100 days',"
                           " processed_at = now() - interval '100 days'")
        await conn.execute("UPDATE tracker.transitions SET recorded_at = now() - interval '100 days'")
        await conn.execute("UPDATE tracker.observations SET received_at = now() - interval '100 days'")

    swept = {s.kind: s for s in await retention.sweep(pool, RetentionConfig(batch_size=3, pause_ms=0))}

    assert await pool.fetchval("SELECT count(*) FROM tracker.messages") == 0
    assert await submissions(pool) == []
    assert swept["final_messages"].also["submissions"] == 2  # order-1's and order-4's, with them
    assert (swept["unreferenced_rows"].removed, swept["unreferenced_rows"].error) == (2, None)
    status = await pool.fetchrow("SELECT * FROM tracker.retention_status WHERE kind = 'unreferenced_rows'")
    assert status["removed"] == 2 and status["error"] is None


async def test_rows_not_taken_in_yet_or_of_a_live_message_or_refused_or_held_stay(pool, db_dsn):
    async with pool.acquire() as conn:
        rows = {r["client_ref"]: r["id"] for r in await conn.fetch(
            "INSERT INTO tracker.submissions (vendor, client_ref, vendor_ref, error, processed_at,"
            "                                 created_at, message_count) VALUES"
            " ('sparksender', 'live', '1', NULL, now() - interval '100 days', now() - interval '100 days', 1),"
            " ('sparksender', 'again', '1', NULL, now() - interval '100 days', now() - interval '100 days', 1),"
            " ('sparksender', 'count-unknown', '1', NULL, now() - interval '100 days',"
            "  now() - interval '100 days', NULL),"
            " ('sparksender', 'held', '1', NULL, now() - interval '100 days', now() - interval '100 days', 1),"
            " ('sparksender', 'waiting', '1', NULL, NULL, now() - interval '100 days', NULL),"
            " ('sparksender', 'taken-late', '1', NULL, now() - interval '10 days', now() - interval '100 days', 1),"
            " ('sparksender', 'young', '1', NULL, now() - interval '10 days', now() - interval '10 days', 1),"
            " ('twilio', 'refused', 'x', 'unknown vendor', now() - interval '100 days',"
            "  now() - interval '100 days', 0),"
            " ('sparksender', 'named-none', NULL, NULL, now() - interval '100 days',"
            "  now() - interval '100 days', 0)"
            " RETURNING id, client_ref")}
        # Still in flight, submitted 100 days ago: its row stays, and with it the message.
        await conn.execute("INSERT INTO tracker.messages (vendor, vendor_ref, state, submitted_at, updated_at,"
                           " submission_id) VALUES ('sparksender', '1', 'sent', now() - interval '100 days',"
                           " now() - interval '100 days', $1)", rows["live"])

    holder = await asyncpg.connect(db_dsn)  # an intake claim holding the row: passed over, not waited for
    try:
        async with holder.transaction():
            await holder.execute("SELECT 1 FROM tracker.submissions WHERE id = $1 FOR UPDATE", rows["held"])
            swept = {s.kind: s for s in await retention.sweep(pool, KEEP_MESSAGES)}
    finally:
        await holder.close()

    assert (swept["unreferenced_rows"].removed, swept["unreferenced_rows"].error) == (2, None)
    # Refused rows and rows that named no message are refused_rows' (0 here: kept for ever).
    assert [r[1] for r in await submissions(pool)] == [
        "live", "held", "waiting", "taken-late", "young", "refused", "named-none"]
    assert await pool.fetchval("SELECT count(*) FROM tracker.messages") == 1
    views = await pool.fetch("SELECT table_name FROM information_schema.views WHERE table_schema = 'tracker'")
    for v in views:  # every view still reads (a removed row is referenced by none)
        await pool.fetchval(f"SELECT count(*) FROM tracker.{v[0]}")

    [swept] = [s for s in await retention.sweep(pool, KEEP_MESSAGES) if s.kind == "unreferenced_rows"]
    assert swept.removed == 1 and "held" not in [r[1] for r in await submissions(pool)]
    # final_messages_days 0 keeps messages, and with them these rows, for ever.
    assert "unreferenced_rows" not in {s.kind for s in await retention.sweep(
        pool, dataclasses.replace(NONE, refused_rows_days=30))}


# --- poll counters ------------------------------------------------------------------------------

async def flush(conn, replica: str, counts: dict[str, tuple], *, circuit: str = "closed") -> None:
    """One flush of a replica's counters, as the poller writes it: per vendor (ok, failed, error)."""
    vendors, now = list(counts), datetime.now(UTC)
    await conn.execute(q.ADD_POLL_STATS, vendors, replica, [counts[v][0] for v in vendors],
                       [counts[v][1] for v in vendors], [now if counts[v][0] else None for v in vendors],
                       [now if counts[v][2] else None for v in vendors], [counts[v][2] for v in vendors],
                       [circuit] * len(vendors), [now] * len(vendors))


async def started_and_stopped(conn, replica: str, counts: dict[str, tuple], ago: str, *,
                              stopped: bool = True, circuit: str = "closed") -> None:
    """A daemon's start that flushed `counts` and stopped (or died, not stopping) `ago`."""
    await flush(conn, replica, counts, circuit=circuit)
    if stopped:
        await conn.execute(q.STOP_POLL_STATS, replica)
    await conn.execute(
        "UPDATE tracker.poll_stats SET updated_at = updated_at - $2::text::interval,"
        " stopped_at = stopped_at - $2::text::interval, last_success_at = last_success_at - $2::text::interval,"
        " last_error_at = last_error_at - $2::text::interval, circuit_since = circuit_since - $2::text::interval"
        " WHERE replica = $1", replica, ago)


async def figures(conn, live: str) -> tuple:
    """What reads tracker.poll_stats: vendor_health (every column), the status page's replicas,
    and the slot query's count of replicas polling each vendor."""
    health = [tuple(r) for r in await conn.fetch("SELECT * FROM tracker.vendor_health ORDER BY vendor")]
    replicas = [tuple(r) for r in await conn.fetch(q.STATUS_POLLING_REPLICAS)]
    tr = conn.transaction()  # the slots' leases taken are given back
    await tr.start()
    try:
        slots = [tuple(r) for r in await conn.fetch(q.HOLD_SLOTS, live, VENDORS, [4, 4], [0, 0], [30.0, 30.0])]
    finally:
        await tr.rollback()
    return health, replicas, sorted(slots)


async def test_poll_counters_of_replicas_gone_a_day_fold_into_one_row_per_vendor(pool):
    live = "host/1/live"
    async with pool.acquire() as conn:
        await flush(conn, live, {"sparksender": (5, 1, "timeout"), "sparrow": (7, 0, None)}, circuit="half_open")
        await started_and_stopped(conn, "host/2/recent", {"sparksender": (1, 0, None)}, "1 hour")
        rounds = []
        # Three rounds of daemons started and stopped (the table only grew); each round's are
        # older than the last's, so the history row keeps its latest error over those folded later.
        for n in range(3):
            await flush(conn, live, {"sparksender": (1, 0, None), "sparrow": (0, 0, None)}, circuit="half_open")
            for i in range(4):
                await started_and_stopped(
                    conn, f"host/{n}{i}/gone", {"sparksender": (10 * i + n, i, f"http 50{i}" if i else None),
                                                "sparrow": (i, n, f"refused {n}" if n else None)},
                    f"{2 + n + i} days", circuit="open")
            # One that died without stopping (its circuit was open), and a vendor no one polls now.
            await started_and_stopped(conn, f"host/{n}/died", {"sparksender": (3, 3, "account error"),
                                                               "skycore": (2, 2, f"boom {n}")},
                                      f"{3 + n} days", stopped=False, circuit="open")
            before = await figures(conn, live)
            assert await retention.sweep(pool, NONE) == []  # no kind has a limit: the fold runs all the same
            after = await figures(conn, live)
            assert after == before
            rounds.append(await conn.fetchval("SELECT count(*) FROM tracker.poll_stats"))
        # The live replica's 2 rows, the one stopped an hour ago, one history row per vendor.
        assert rounds == [6, 6, 6]
        history = {r["vendor"]: r for r in await conn.fetch(
            "SELECT * FROM tracker.poll_stats WHERE replica = '(history)'")}
        assert set(history) == {"sparksender", "sparrow", "skycore"}
        assert all(h["stopped_at"] is not None for h in history.values())
        status = await conn.fetchrow("SELECT * FROM tracker.retention_status WHERE kind = 'poll_stats'")
        assert status["removed"] == 10 and status["error"] is None  # the last round's

        # A replica silent for days that reports again writes a new row: counted once.
        health = {r["vendor"]: r["poll_successes"] for r in await conn.fetch(
            "SELECT vendor, poll_successes FROM tracker.vendor_health")}
        await flush(conn, "host/2/died", {"sparksender": (4, 0, None)})
        assert await conn.fetchval("SELECT poll_successes FROM tracker.vendor_health"
                                   " WHERE vendor = 'sparksender'") == health["sparksender"] + 4


async def test_a_fold_that_fails_is_logged_counted_recorded_and_the_sweep_goes_on(pool, db_dsn):
    refuse, allow = refusing("poll_stats", "true", "23514", "fold refused by the test",
                             name="test_refuse_fold", events="DELETE")
    async with pool.acquire() as conn:
        await started_and_stopped(conn, "host/1/gone", {"sparksender": (3, 1, "timeout")}, "2 days")
        await started_and_stopped(conn, "host/2/gone", {"sparksender": (4, 0, None)}, "3 days")
        await conn.execute("INSERT INTO tracker.submissions (vendor, vendor_ref, error, processed_at,"
                           " created_at, message_count) VALUES ('twilio', 'r', 'unreadable',"
                           " now() - interval '40 days', now() - interval '40 days', 0)")
        await conn.execute(refuse)
        before = await figures(conn, "host/9/live")
    errors = metrics.retention_errors.labels("poll_stats")._value.get()

    with structlog.testing.capture_logs() as logs:
        [swept] = await retention.sweep(pool, dataclasses.replace(NONE, refused_rows_days=30))

    assert (swept.kind, swept.removed) == ("refused_rows", 1)  # the kinds before it were done
    assert metrics.retention_errors.labels("poll_stats")._value.get() == errors + 1
    [warned] = [e for e in logs if e.get("kind") == "poll_stats" and e["log_level"] == "warning"]
    assert "fold refused by the test" in warned["error"]
    status = await pool.fetchrow("SELECT * FROM tracker.retention_status WHERE kind = 'poll_stats'")
    assert status["removed"] == 0 and "fold refused by the test" in status["error"]
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM tracker.poll_stats") == 2  # all rolled back
        assert await figures(conn, "host/9/live") == before

        # A history row held by another session: the fold waits 1 s for it (lock_timeout), no more.
        await conn.execute(allow)
        assert await retention.sweep(pool, NONE) == []
        await started_and_stopped(conn, "host/3/gone", {"sparksender": (1, 1, "timeout")}, "2 days")
        holder = await asyncpg.connect(db_dsn)
        try:
            async with holder.transaction():
                await holder.execute("SELECT 1 FROM tracker.poll_stats WHERE replica = '(history)' FOR UPDATE")
                assert await retention.sweep(pool, NONE) == []
        finally:
            await holder.close()
        assert "LockNotAvailableError" in await conn.fetchval(
            "SELECT error FROM tracker.retention_status WHERE kind = 'poll_stats' LIMIT 1")
        assert metrics.retention_errors.labels("poll_stats")._value.get() == errors + 2
        assert await retention.sweep(pool, NONE) == []
        assert await conn.fetchval("SELECT count(*) FROM tracker.poll_stats") == 1
        assert await conn.fetchval("SELECT poll_successes FROM tracker.vendor_health"
                                   " WHERE vendor = 'sparksender'") == 8


async def test_a_daemon_keeping_everything_still_folds_the_poll_counters(pool, db_dsn):
    # With every kind kept for ever no sweep was scheduled, so each start's rows (one a polled
    # vendor) were never folded: the table grew without end (reviewer E, session 28).
    from tests.postbacks_support import config_for, running
    from tests.sinks_support import wait_until

    async with pool.acquire() as conn:
        await started_and_stopped(conn, "host/9/gone", {"sparksender": (4, 1, "timeout")}, "3 days")
    config = dataclasses.replace(config_for(db_dsn), retention=dataclasses.replace(NONE, interval_s=0.2))
    async with running(config):
        async def folded() -> bool:
            return not await pool.fetchval(
                "SELECT count(*) FROM tracker.poll_stats WHERE replica = 'host/9/gone'")

        await wait_until(folded, 30, "the stopped replica's counters folded into history")
    assert await pool.fetchval("SELECT polls_ok FROM tracker.poll_stats"
                               " WHERE replica = '(history)' AND vendor = 'sparksender'") == 4
