"""Retention's walks reach what may go behind a head of rows kept longer (sql/021): refused
submission rows are found through their own index, and a kind whose time ran out goes on where it
stopped at the next sweep, starting over from id 0 once it has reached the young end, or after a
batch that failed."""
from __future__ import annotations

import dataclasses

import asyncpg

from tracker import metrics, retention
from tracker.config.schema import MAX_BATCH_ROWS
from tracker.config_types import RetentionConfig

# Small batches, and a pause that bounds how many batches a sweep's budget allows (at most
# budget / pause + 1, however fast the machine): the same shape as the defaults' 500 rows and
# 10 s a kind against a few hundred thousand rows, without inserting them.
NONE = RetentionConfig(observations_days=0, postbacks_days=0, orphans_days=0, transitions_days=0,
                       refused_rows_days=0, final_messages_days=0, batch_size=10, pause_ms=100,
                       run_budget_s=2.0)


async def test_refused_rows_behind_rows_taken_in_go_in_one_sweep(pool):
    # 500 rows taken in 60 days ago (kept while their messages live), then the refused ones: a
    # sweep could examine at most 21 batches of 10 from id 0, and never reached them.
    cfg = dataclasses.replace(NONE, refused_rows_days=30)
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO tracker.submissions (vendor, vendor_ref, processed_at, created_at, message_count)"
            " SELECT 'sparksender', 'ok' || g, now() - interval '60 days', now() - interval '60 days', 1"
            " FROM generate_series(1, 500) g")
        await conn.execute(
            "INSERT INTO tracker.messages (vendor, vendor_ref, submission_id, state, submitted_at, updated_at)"
            " SELECT 'sparksender', vendor_ref, id, 'sent', now(), now() FROM tracker.submissions")
        await conn.execute(
            "INSERT INTO tracker.submissions (vendor, vendor_ref, error, processed_at, created_at, message_count)"
            " SELECT 'twilio', 'refused' || g, 'unreadable', now() - interval '40 days',"
            "        now() - interval '40 days', 0 FROM generate_series(1, 5) g")
        await conn.execute(
            "INSERT INTO tracker.submissions (vendor, vendor_ref, error, processed_at, created_at, message_count) VALUES"
            " ('sparksender', 'no-message', NULL, now() - interval '40 days', now() - interval '40 days', 0),"
            " ('twilio', 'young-refused', 'unreadable', now() - interval '10 days', now() - interval '10 days', 0),"
            " ('sparksender', 'waiting', NULL, NULL, now() - interval '40 days', NULL)")

    [swept] = await retention.sweep(pool, cfg)

    assert (swept.kind, swept.removed, swept.behind, swept.error) == ("refused_rows", 6, False, None)
    assert metrics.retention_behind.labels("refused_rows")._value.get() == 0
    left = {r[0] for r in await pool.fetch(
        "SELECT vendor_ref FROM tracker.submissions WHERE vendor_ref NOT LIKE 'ok%'")}
    assert left == {"young-refused", "waiting"}
    assert await pool.fetchval("SELECT count(*) FROM tracker.submissions WHERE vendor_ref LIKE 'ok%'") == 500


async def test_a_walk_out_of_time_goes_on_where_it_stopped_and_starts_over_at_the_end(pool):
    # Reports of 30 messages still in flight head tracker.observations (old, but not to go); the
    # reports of 10 final messages follow. A sweep examines at most 3 batches of 5: from id 0
    # every time, it never got past the head.
    cfg = dataclasses.replace(NONE, observations_days=30, batch_size=5, run_budget_s=0.25)
    async with pool.acquire() as conn:
        for state, n in (("sent", 30), ("delivered", 10)):
            await conn.execute(
                "WITH m AS (INSERT INTO tracker.messages (vendor, vendor_ref, state, submitted_at, updated_at)"
                "           SELECT 'sparksender', $1 || g, $1::tracker.state, now() - interval '40 days',"
                "                  now() - interval '40 days' FROM generate_series(1, $2::int) g RETURNING id, vendor_ref)"
                " INSERT INTO tracker.observations (message_id, vendor, vendor_ref, source, state, code, received_at)"
                " SELECT m.id, 'sparksender', m.vendor_ref, 'poll', 'sent', '1', now() - interval '40 days'"
                " FROM m CROSS JOIN generate_series(1, 2) ORDER BY m.id", state, n)

    async def reports_of(state: str) -> int:
        return await pool.fetchval(
            "SELECT count(*) FROM tracker.observations o JOIN tracker.messages m ON m.id = o.message_id"
            " WHERE m.state = $1::tracker.state", state)

    async def sweep_until_gone(state: str) -> list[retention.Swept]:
        done = []
        while await reports_of(state) and len(done) < 40:
            [swept] = await retention.sweep(pool, cfg)
            assert swept.error is None
            done.append(swept)
        return done

    sweeps = await sweep_until_gone("delivered")
    assert await reports_of("delivered") == 0, [(s.removed, s.batches) for s in sweeps]
    assert sum(s.removed for s in sweeps) == 20 and await reports_of("sent") == 60
    assert sweeps[0].behind  # the head alone takes more than one sweep
    # The walk reached the end; the next one starts from id 0 again, for reports that may go since.
    await pool.execute("UPDATE tracker.messages SET state = 'delivered' WHERE state = 'sent'")
    sweeps = await sweep_until_gone("delivered")
    assert await reports_of("delivered") == 0 and sum(s.removed for s in sweeps) == 60


async def test_a_batch_that_keeps_failing_leaves_no_row_before_it_for_good(pool, db_dsn):
    # Eight old refused rows, a batch each; r1 is held by another session during the first sweep
    # (passed over), and r5 can never be deleted (a stand-in for any batch that keeps failing).
    # Resumed just before r5, every later walk failed at once and never went back for r1.
    cfg = dataclasses.replace(NONE, refused_rows_days=30, batch_size=1, pause_ms=10)
    await pool.execute(
        "INSERT INTO tracker.submissions (vendor, vendor_ref, error, processed_at, created_at, message_count)"
        " SELECT 'twilio', 'r' || g, 'unreadable', now() - interval '40 days', now() - interval '40 days', 0"
        " FROM generate_series(1, 8) g")
    await pool.execute("""
        CREATE FUNCTION tracker.test_keep_r5() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF OLD.vendor_ref = 'r5' THEN RAISE EXCEPTION 'kept by the test' USING ERRCODE = '23503'; END IF;
            RETURN OLD;
        END $$;
        CREATE TRIGGER test_keep_r5 BEFORE DELETE ON tracker.submissions
            FOR EACH ROW EXECUTE FUNCTION tracker.test_keep_r5()""")

    async def left() -> list[str]:
        return [r[0] for r in await pool.fetch("SELECT vendor_ref FROM tracker.submissions ORDER BY id")]

    holder = await asyncpg.connect(db_dsn)
    try:
        async with holder.transaction():
            await holder.execute("SELECT 1 FROM tracker.submissions WHERE vendor_ref = 'r1' FOR UPDATE")
            [first] = await retention.sweep(pool, cfg)
    finally:
        await holder.close()
    assert (first.removed, first.behind) == (3, True) and "kept by the test" in first.error
    assert await left() == ["r1", "r5", "r6", "r7", "r8"]

    [second] = await retention.sweep(pool, cfg)  # from id 0 again: r1, then r5 fails again
    assert (second.removed, second.behind) == (1, True) and "kept by the test" in second.error
    assert await left() == ["r5", "r6", "r7", "r8"]


async def test_the_largest_batch_check_config_accepts_is_one_every_kind_takes(pool):
    # 3,000,000,000 failed every batch (the batch functions take an int): check-config's bound
    # must be one they take.
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO tracker.postbacks (vendor, method, body, received_at, processed_at)"
            " VALUES ('skycore', 'POST', 'a', now() - interval '20 days', now() - interval '20 days')")
    every_kind = dataclasses.replace(RetentionConfig(), sink_dead_letters_days=30)  # 0 by default: kept
    swept = await retention.sweep(pool, dataclasses.replace(every_kind, batch_size=MAX_BATCH_ROWS))
    assert [(s.kind, s.error) for s in swept] == [(k, None) for k in retention.KINDS]
    assert {s.kind: s.removed for s in swept}["postbacks"] == 1
