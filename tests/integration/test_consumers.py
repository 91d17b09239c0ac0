"""SQL consumers known before their first ack, and forgotten (sql/023, `tracker consumers`).
Retention keeps every event a known consumer has not acknowledged; a consumer was known only
from its first ack, so a backlog it was still reading could be removed under it."""
from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import asyncpg
import pytest

from tests.polling_support import wait_until
from tests.sinks_support import write_config
from tracker import retention
from tracker.config_types import RetentionConfig
from tracker.db import queries as q

CONFIG = RetentionConfig(observations_days=0, postbacks_days=0, orphans_days=0, transitions_days=30,
                         refused_rows_days=0, final_messages_days=0, batch_size=100, pause_ms=0,
                         run_budget_s=30)


async def old_final_message(pool, ref: str, events: int) -> list[int]:
    """A message delivered 100 days ago, with `events` published events as old: retention's."""
    async with pool.acquire() as conn, conn.transaction():
        mid = await conn.fetchval(
            "INSERT INTO tracker.messages (vendor, vendor_ref, state, submitted_at, updated_at)"
            " VALUES ('sparksender', $1, 'delivered', now() - interval '100 days',"
            "         now() - interval '100 days') RETURNING id", ref)
        ids = []
        for _ in range(events):
            ids.append(await conn.fetchval(
                "INSERT INTO tracker.transitions (message_id, from_state, to_state, source, occurred_at,"
                "                                 recorded_at, pos)"
                " VALUES ($1, 'submitted', 'delivered', 'poll', now(), now() - interval '100 days',"
                "         (SELECT last_pos + 1 FROM tracker.event_publisher)) RETURNING event_id", mid))
            await conn.execute("UPDATE tracker.event_publisher SET last_pos = last_pos + 1")
        return ids


async def kept(pool) -> int:
    return await pool.fetchval("SELECT count(*) FROM tracker.transitions")


async def test_a_registered_consumer_keeps_its_backlog_until_it_acks(pool):
    await old_final_message(pool, "gone-first", 1)
    await pool.execute("SELECT tracker.ack_events('early', (SELECT max(event_id) FROM tracker.transitions))")
    await retention.sweep(pool, CONFIG)
    assert await kept(pool) == 0  # acknowledged by the only consumer known: removed
    ids = await old_final_message(pool, "backlog", 3)
    await pool.execute("SELECT tracker.ack_events('early', $1)", ids[-1])

    position = await pool.fetchval("SELECT tracker.register_consumer('late')")
    assert position == await pool.fetchval("SELECT min(pos) - 1 FROM tracker.transitions")
    await retention.sweep(pool, CONFIG)
    assert await kept(pool) == 3  # 'late' has acknowledged none of them
    read = await pool.fetch("SELECT event_id FROM tracker.read_events('late', 10)")
    assert [r["event_id"] for r in read] == ids
    status = await pool.fetchrow("SELECT * FROM tracker.consumer_status WHERE consumer = 'late'")
    assert status["position"] == position and status["events_behind"] == 3
    assert status["oldest_unacked_age"].days >= 99

    await pool.execute("SELECT tracker.ack_events('late', $1)", ids[1])
    assert await pool.fetchval("SELECT tracker.register_consumer('late')") > position  # never back
    await retention.sweep(pool, CONFIG)
    assert await kept(pool) == 1  # up to what both have acknowledged
    await pool.execute("SELECT tracker.ack_events('late', $1)", ids[2])
    await retention.sweep(pool, CONFIG)
    assert await kept(pool) == 0


async def test_a_forgotten_consumer_no_longer_holds_retention_back(pool):
    await old_final_message(pool, "held", 2)
    assert await pool.fetchval("SELECT tracker.register_consumer('gone-for-good')") == 0
    await retention.sweep(pool, CONFIG)
    assert await kept(pool) == 2
    assert await pool.fetchval("SELECT tracker.forget_consumer('gone-for-good')") is True
    assert await pool.fetchval("SELECT tracker.forget_consumer('gone-for-good')") is False
    await retention.sweep(pool, CONFIG)
    assert await kept(pool) == 0  # no consumer known: everything published may go


@pytest.mark.parametrize("name", ["sink:crm", "", "x" * 201])
async def test_a_name_that_is_no_consumers_is_refused_and_changes_nothing(pool, name):
    await pool.execute("INSERT INTO tracker.consumers (consumer, acked_pos) VALUES ('sink:crm', 7)")
    for function in ("register_consumer", "forget_consumer"):
        with pytest.raises(asyncpg.exceptions.InvalidParameterValueError):
            await pool.fetchval(f"SELECT tracker.{function}($1)", name)
    assert [tuple(r) for r in await pool.fetch("SELECT consumer, acked_pos FROM tracker.consumers")] == [
        ("sink:crm", 7)]
    assert await pool.fetchval("SELECT count(*) FROM tracker.consumer_status") == 0  # sinks apart


def tracker_cli(config, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tracker", "--config", str(config), "consumers", *args],
                          capture_output=True, text=True, timeout=60)


async def test_the_consumers_command(db_dsn, pool, tmp_path):
    config = write_config(tmp_path / "tracker.toml", db_dsn)
    await old_final_message(pool, "listed", 2)
    assert tracker_cli(config, "status").stdout.strip() == "no consumers known yet"
    p = tracker_cli(config, "register", "billing")
    assert p.returncode == 0 and "consumer billing known, at position 0" in p.stdout, p.stderr
    lines = tracker_cli(config, "status").stdout.splitlines()
    assert lines[0].split() == ["consumer", "position", "events_behind", "oldest_unacked_age", "updated_at"]
    assert lines[1].split()[:3] == ["billing", "0", "2"]
    p = tracker_cli(config, "register", "sink:crm")
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.count("\n") == 1 and "is a sink's cursor" in p.stderr and "Traceback" not in p.stderr
    assert tracker_cli(config, "forget", "billing").returncode == 0
    p = tracker_cli(config, "forget", "billing")
    assert p.returncode == 1 and "no consumer named 'billing'" in p.stderr
    assert not await pool.fetchval("SELECT count(*) FROM tracker.consumers")


async def test_a_consumer_registered_while_a_retention_batch_runs_waits_for_it(db_dsn, pool):
    # The batch read the horizon before the consumer existed; registered meanwhile, the consumer
    # was placed before the events the batch was removing, and lost them at its commit.
    await old_final_message(pool, "racing", 3)
    await pool.execute("SELECT tracker.ack_events('early', (SELECT max(event_id) FROM tracker.transitions))")
    batch, late = await asyncpg.connect(db_dsn), await asyncpg.connect(db_dsn)
    try:
        tx = batch.transaction()
        await tx.start()
        await batch.execute(q.RETENTION_BATCH_LIMITS)
        await batch.execute(q.RETENTION_HOLD_HORIZON)  # as tracker.retention does for this kind
        cutoff = datetime.now(timezone.utc) - timedelta(days=30)
        removed = (await batch.fetchrow(q.RETENTION_BATCH["transitions"], 0, cutoff, 100))["removed"]
        assert removed == 3  # not committed yet
        registering = asyncio.ensure_future(late.fetchval("SELECT tracker.register_consumer('late')"))

        async def waiting() -> bool:
            return bool(await pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event = 'advisory'",
                late.get_server_pid()))

        await wait_until(waiting, 10)
        await tx.commit()
        position = await registering
    finally:
        await batch.close()
        await late.close()
    assert position == await pool.fetchval("SELECT last_pos FROM tracker.event_publisher")
    assert await pool.fetch("SELECT * FROM tracker.read_events('late', 10)") == []


async def test_registering_needs_read_committed_and_an_open_one_holds_back_only_the_horizons_kinds(db_dsn, pool):
    # Under REPEATABLE READ the position would come from a snapshot older than the wait for the
    # lock; and a registration left open in its transaction held every retention kind back.
    holder = await asyncpg.connect(db_dsn)
    try:
        async with holder.transaction(isolation="repeatable_read"):
            with pytest.raises(asyncpg.exceptions.InvalidTransactionStateError, match="READ COMMITTED"):
                await holder.fetchval("SELECT tracker.register_consumer('rr')")
        await pool.execute(
            "INSERT INTO tracker.observations (vendor, vendor_ref, source, code, raw, received_at)"
            " VALUES ('skycore', 'old', 'postback', 'N201', '{}', now() - interval '60 days')")
        tx = holder.transaction()
        await tx.start()
        await holder.fetchval("SELECT tracker.register_consumer('left-open')")
        orphans = RetentionConfig(observations_days=0, postbacks_days=0, orphans_days=7,
                                       transitions_days=0, refused_rows_days=0, final_messages_days=0,
                                       batch_size=100, pause_ms=0, run_budget_s=30)
        [swept] = await retention.sweep(pool, orphans)  # the orphan report: removed
        assert swept.error is None and not await pool.fetchval(
            "SELECT count(*) FROM tracker.observations WHERE vendor_ref = 'old'")
        await tx.rollback()
    finally:
        await holder.close()


async def test_a_sinks_cursor_is_moved_by_the_daemon_only(pool, db_dsn):
    """ack_events with a sink's cursor name (`sink:<name>`, as tracker.consumers shows it) moved
    the sink past events it never sent, in silence. Refused from a session that names itself
    otherwise than the daemon; the daemon's (application_name 'tracker', or none: a release
    before session names, during a rolling upgrade) move it as before."""
    ids = await old_final_message(pool, "sink-cursor", 3)
    await pool.execute("INSERT INTO tracker.consumers (consumer, acked_pos) VALUES ('sink:billing', 0)")
    for name in ("psql", "billing-service"):  # an operator's psql, a consumer that names itself
        other = await asyncpg.connect(db_dsn, server_settings={"application_name": name})
        try:
            with pytest.raises(asyncpg.InvalidParameterValueError, match="is a sink's cursor: only the daemon moves it"):
                await other.execute("SELECT tracker.ack_events('sink:billing', $1)", ids[-1])
        finally:
            await other.close()
    assert await pool.fetchval("SELECT acked_pos FROM tracker.consumers WHERE consumer = 'sink:billing'") == 0
    for name in ("tracker", ""):  # the daemon's main pool; one of a release before session names
        daemon = await asyncpg.connect(db_dsn, server_settings={"application_name": name})
        try:
            assert await daemon.fetchval("SELECT tracker.ack_events('sink:billing', $1)", ids[-1]) > 0
        finally:
            await daemon.close()
    await pool.execute("SELECT tracker.ack_events('billing', $1)", ids[-1])  # a consumer of that name: its own


async def test_a_consumers_role_needs_only_usage_and_execute_and_a_read_only_role_moves_nothing(pool):
    """read_events, ack_events, register_consumer and forget_consumer run as their owner: a
    consumer's role is granted USAGE on the schema and EXECUTE on them, nothing on the tables
    (which would let it write any cursor directly); a role without EXECUTE (Grafana's, read
    only) can call none of them."""
    ids = await old_final_message(pool, "grants", 2)
    async with pool.acquire() as conn:
        await conn.execute("CREATE ROLE billing_reader; CREATE ROLE dashboards")
        await conn.execute("GRANT USAGE ON SCHEMA tracker TO billing_reader, dashboards")
        await conn.execute(
            "GRANT EXECUTE ON FUNCTION tracker.read_events(text, int), tracker.ack_events(text, bigint),"
            " tracker.register_consumer(text), tracker.forget_consumer(text) TO billing_reader")
        await conn.execute("GRANT SELECT ON tracker.consumer_status TO dashboards")
        try:
            await conn.execute("SET ROLE billing_reader")
            assert await conn.fetchval("SELECT tracker.register_consumer('billing')") is not None
            rows = await conn.fetch("SELECT * FROM tracker.read_events('billing', 10)")
            assert [r["event_id"] for r in rows] == ids
            assert await conn.fetchval("SELECT tracker.ack_events('billing', $1)", ids[-1]) == rows[-1]["pos"]
            with pytest.raises(asyncpg.InsufficientPrivilegeError):  # nothing on the tables
                await conn.execute("UPDATE tracker.consumers SET acked_pos = 0")
            assert await conn.fetchval("SELECT tracker.forget_consumer('billing')") is True
            await conn.execute("RESET ROLE; SET ROLE dashboards")
            for call in ("SELECT * FROM tracker.read_events('x', 1)", "SELECT tracker.forget_consumer('x')",
                         "SELECT tracker.ack_events('x', 1)", "SELECT tracker.register_consumer('x')"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(call)
            assert await conn.fetch("SELECT * FROM tracker.consumer_status") == []
        finally:
            await conn.execute("RESET ROLE")
            await conn.execute("DROP OWNED BY billing_reader, dashboards; DROP ROLE billing_reader, dashboards")


async def test_the_consumer_functions_still_run_as_their_owner(pool):
    # a later migration's CREATE OR REPLACE of one of them would make it SECURITY INVOKER again
    rows = await pool.fetch(
        "SELECT p.proname, p.prosecdef, p.proconfig FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = 'tracker' AND p.proname IN ('read_events', 'ack_events', 'register_consumer',"
        " 'forget_consumer') ORDER BY 1")
    assert [(r["proname"], r["prosecdef"], r["proconfig"]) for r in rows] == [
        (name, True, ["search_path=pg_catalog, pg_temp"])
        for name in ("ack_events", "forget_consumer", "read_events", "register_consumer")]
