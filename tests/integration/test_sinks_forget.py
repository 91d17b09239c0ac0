"""`tracker sinks forget` against running daemons, as a reviewer ran it following the README
(without --config, the database from the environment): it answered "forgotten" while the
daemon delivered to the sink, which then stopped without a word and, after a restart, sent every
kept event again. Now a forget is refused while a daemon runs the sink (tracker.sink_runners,
written by every daemon every few seconds, whatever its loops do), in one transaction with the
delete; and a loop whose sink's row is gone anyway fails, loudly, through the supervisor, making
no cursor again. Real PostgreSQL, a real receiver, a real nats-server, the CLI as a process."""
from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import subprocess
import sys

import asyncpg
import pytest
import structlog

from tests.conftest import until_waiting_on_a_lock
from tests.faults_support import refusing
from tests.nats_support import NatsServer, free_port, needs_nats, stream_count
from tests.postbacks_support import named, readyz, running, session
from tests.sinks_support import (Receiver, config, error_mentions, make_messages, new_secret, report,
                                 wait_until)
from tracker.core.states import State
from tracker.db import queries as q
from tracker.sinks import store


def tracker_cli(dsn: str, *args: str) -> subprocess.CompletedProcess:
    """`tracker ARGS` without --config, as the README writes it: the database from the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    env["TRACKER_DATABASE__DSN"] = dsn
    return subprocess.run([sys.executable, "-m", "tracker", *args], capture_output=True, text=True,
                          timeout=60, env=env)


def supervised(cfg):
    health = dataclasses.replace(cfg.health, restart_backoff_max_s=0.5, failures_before_unready=2)
    return dataclasses.replace(cfg, health=health)


def hook(rx: Receiver, secret: str) -> dict:
    return {"url": rx.url, "secrets": (secret,), "timeout_s": 2.0, "retry_schedule_s": [0, 0.2]}


async def has_row(pool, sink: str) -> bool:
    return bool(await pool.fetchval("SELECT count(*) FROM tracker.sinks WHERE name = $1", sink))


async def has_cursor(pool, sink: str) -> bool:
    return bool(await pool.fetchval("SELECT count(*) FROM tracker.consumers WHERE consumer = $1",
                                    store.consumer_name(sink)))


async def age_runners(pool, sink: str, seconds: float) -> None:
    await pool.execute("UPDATE tracker.sink_runners SET seen_at = now() - make_interval(secs => $2)"
                       " WHERE sink = $1", sink, seconds)


async def seen_within(pool, sink: str, seconds: float) -> bool:
    return bool(await pool.fetchval("SELECT count(*) FROM tracker.sink_runners WHERE sink = $1"
                                    " AND seen_at > now() - make_interval(secs => $2)", sink, seconds))


async def until_named(base: str, component: str, text: str) -> None:
    async with session() as s:
        async def said() -> bool:
            status, body = await readyz(s, base)
            return status == 503 and any(text in r for r in named(body, component))
        await wait_until(said, 20, f"/readyz naming {component}: {text}", step=0.1)


async def test_forget_is_refused_while_a_daemon_runs_the_webhook_sink_and_done_once_it_stopped(db_dsn, pool):
    secret = new_secret()
    rx = await Receiver([secret]).start()
    await make_messages(pool, ["a", "b"])
    try:
        async with running(config(db_dsn, webhooks={"billing": hook(rx, secret)})):
            await report(pool, ["a", "b"], State.sent)
            await wait_until(lambda: len(rx.delivered_ids()) == 2, 20, "2 events delivered")
            # Idle, its daemon still says it runs it: seen again after it was made to look old.
            await age_runners(pool, "billing", 3600)
            await wait_until(lambda: seen_within(pool, "billing", store.SEEN_FRESH_S), 3 * store.SEEN_EVERY_S,
                             "the daemon writing again that it runs the sink")
            p = tracker_cli(db_dsn, "sinks", "forget", "billing")
            assert p.returncode == 2, (p.stdout, p.stderr)
            assert "a daemon is running sink 'billing' now" in p.stderr and f"pid {os.getpid()}" in p.stderr
            assert "Take the sink out of the configuration, restart every daemon, then forget it" in p.stderr
            assert await has_row(pool, "billing") and await has_cursor(pool, "billing")
            await report(pool, ["a", "b"], State.delivered)  # and it goes on
            await wait_until(lambda: len(rx.delivered_ids()) == 4, 20, "2 more events delivered")
        # Stopped: it wrote that it runs the sink no more, so the forget goes through at once.
        p = tracker_cli(db_dsn, "sinks", "forget", "billing")
        assert p.returncode == 0 and "forgotten" in p.stdout, p.stderr
        assert not await has_row(pool, "billing") and not await has_cursor(pool, "billing")
        assert not await pool.fetchval("SELECT count(*) FROM tracker.sink_runners")
    finally:
        await rx.stop()


async def test_a_stop_the_database_does_not_record_is_said_and_the_sink_counts_as_running_a_while(db_dsn, pool):
    secret = new_secret()
    rx = await Receiver([secret]).start()
    refuse, allow = refusing("sink_runners", "true", "check_violation", "refused by the test",
                             name="test_refuse_release", events="DELETE")
    try:
        with structlog.testing.capture_logs() as logs:
            async with running(config(db_dsn, webhooks={"billing": hook(rx, secret)})):
                await pool.execute(refuse)
        said = [e for e in logs if e["event"].startswith("sinks: could not write that this daemon stopped")]
        assert said and said[0]["log_level"] == "warning" and said[0]["error"] == "CheckViolationError"
        assert f"refuses them for {store.SEEN_FRESH_S:.0f} s more" in said[0]["event"]
        await pool.execute(allow)
        p = tracker_cli(db_dsn, "sinks", "forget", "billing")
        assert p.returncode == 2 and "a daemon is running sink 'billing' now" in p.stderr, p.stderr
    finally:
        await rx.stop()


async def test_a_daemon_killed_without_a_stop_counts_as_running_the_sink_for_a_while(db_dsn, pool):
    async with pool.acquire() as conn:
        await store.register(conn, [("billing", "webhook")])
        await store.see(conn, ["billing"], "host-a pid 41 1f2e3d")  # then killed: never released
    await age_runners(pool, "billing", 10)
    p = tracker_cli(db_dsn, "sinks", "forget", "billing")
    assert p.returncode == 2 and re.search(r"seen running it 1\d s ago by host-a pid 41 1f2e3d \(", p.stderr), p.stderr
    assert f"until {store.SEEN_FRESH_S:.0f} s after it was last seen" in p.stderr
    await age_runners(pool, "billing", store.SEEN_FRESH_S + 1)
    p = tracker_cli(db_dsn, "sinks", "forget", "billing")
    assert p.returncode == 0 and "forgotten" in p.stdout, p.stderr
    assert not await has_row(pool, "billing")


async def test_a_forget_waits_for_a_daemon_writing_that_it_runs_the_sink_and_then_refuses(db_dsn, pool):
    # The look and the delete are one transaction, the sink's row locked first: a daemon's write
    # under way when the forget starts is waited for and seen, not deleted with the sink.
    async with pool.acquire() as conn:
        await store.register(conn, [("billing", "webhook")])
    daemon, operator = await asyncpg.connect(db_dsn), await asyncpg.connect(db_dsn)
    try:
        writing = daemon.transaction()
        await writing.start()
        await store.see(daemon, ["billing"], "host-b pid 7 aa00bb")
        forget = asyncio.create_task(store.forget(operator, "billing"))
        await until_waiting_on_a_lock(pool, operator.get_server_pid(), "the forget")
        await writing.commit()
        done = await forget
        assert done.known and [r for r, _ in done.running] == ["host-b pid 7 aa00bb"]
        assert await has_row(pool, "billing")
    finally:
        await daemon.close()
        await operator.close()


async def test_a_daemon_writing_during_a_forget_is_told_the_sink_is_gone_not_failed(db_dsn, pool):
    # The other way round: a forget under way (its delete not committed) holds the daemon's
    # write, which then finds no row (the loop is told) instead of failing on the foreign key.
    async with pool.acquire() as conn:
        await store.register(conn, [("billing", "webhook")])
    daemon, operator = await asyncpg.connect(db_dsn), await asyncpg.connect(db_dsn)
    try:
        forgetting = operator.transaction()
        await forgetting.start()
        await operator.fetchval(q.LOCK_SINK, "billing")
        await operator.execute(q.FORGET_SINK, "billing")
        seen = asyncio.create_task(store.see(daemon, ["billing"], "host-c pid 9 cc11dd"))
        await until_waiting_on_a_lock(pool, daemon.get_server_pid(), "the daemon's write")
        await forgetting.commit()
        assert await seen == set()
        assert not await pool.fetchval("SELECT count(*) FROM tracker.sink_runners")
    finally:
        await daemon.close()
        await operator.close()


async def test_the_statements_that_move_a_cursor_make_none_for_a_sink_whose_row_is_gone(pool):
    # A webhook loop's look at its row, and what a loop writes last should its row go between
    # its look and its write: SinkGone, and no cursor made again (tracker.ack_events would make
    # one at the event's position) nor a delivery row.
    await make_messages(pool, ["a"])
    await report(pool, ["a"], State.sent)
    await pool.execute("SELECT tracker.publish_events()")
    event = await pool.fetchrow("SELECT t.*, m.vendor, m.vendor_ref, m.recipient, m.client_ref"
                                " FROM tracker.transitions t JOIN tracker.messages m ON m.id = t.message_id")
    unsent = store.Unsettled(store.from_outbox(event))
    async with pool.acquire() as conn:
        for write in (lambda: store.take_reader(conn, "gone", "t", 10.0),
                      lambda: store.ack(conn, "gone", event["event_id"]),
                      lambda: store.settle(conn, "gone", "t", 10.0, [], event["event_id"], True),
                      lambda: store.settle(conn, "gone", "t", 10.0, [unsent], event["event_id"], False)):
            with pytest.raises(store.SinkGone, match="'gone' is no longer in the database"):
                await write()
    assert not await has_cursor(pool, "gone")
    assert not await pool.fetchval("SELECT count(*) FROM tracker.sink_deliveries")


async def test_a_webhook_sink_whose_row_is_gone_fails_loudly_and_a_restart_registers_it_anew(db_dsn, pool):
    secret = new_secret()
    rx = await Receiver([secret]).start()
    cfg = supervised(config(db_dsn, webhooks={"billing": hook(rx, secret)}))
    await make_messages(pool, ["a", "b", "c"])
    try:
        with structlog.testing.capture_logs() as logs:
            async with running(cfg) as (_, base):
                await report(pool, ["a", "b", "c"], State.sent)
                await wait_until(lambda: len(rx.delivered_ids()) == 3, 20, "3 events delivered")
                await pool.fetchrow(q.FORGET_SINK, "billing")  # as forget did, looking at nothing
                await report(pool, ["a", "b", "c"], State.delivered)
                await until_named(base, "sink:billing", "SinkGone: sink 'billing' is no longer in the database")
                assert len(rx.requests) == 3  # nothing sent since
                assert not await has_cursor(pool, "billing") and not await has_row(pool, "billing")
        failed = [e for e in logs if e["event"] == "component failed" and e["component"] == "sink:billing"]
        assert failed and failed[0]["log_level"] == "error"
        assert "Take it out of the configuration of every daemon and restart them" in failed[0]["error"]
        # A restart with the sink still configured: a new sink, from the oldest event kept.
        with structlog.testing.capture_logs() as logs:
            async with running(cfg):
                await wait_until(lambda: len(rx.requests) == 9, 20, "every kept event sent again")
        assert any(e["event"].startswith("sink new to the database") and e["sink"] == "billing" for e in logs)
        assert len(rx.delivered_ids()) == 6 and len({d.id for d in rx.requests}) == 6  # the same ids again
    finally:
        await rx.stop()


async def test_a_nats_sink_backing_off_from_its_broker_still_counts_as_running_and_says_its_row_gone(
        db_dsn, pool):
    # Its loop makes no statement while the broker is down: the daemon's write does not depend on it.
    bus = {"servers": (f"nats://127.0.0.1:{free_port()}",), "stream": "SMS_EVENTS",
           "subject_prefix": "sms.events", "timeout_s": 1.0}
    async with running(supervised(config(db_dsn, nats={"bus": bus}))) as (tr, base):
        await wait_until(lambda: error_mentions(pool, "could not connect to the broker"), 20, "the broker down")
        await age_runners(pool, "bus", 3600)
        await wait_until(lambda: seen_within(pool, "bus", store.SEEN_FRESH_S), 3 * store.SEEN_EVERY_S,
                         "the daemon writing again that it runs the sink")
        p = tracker_cli(db_dsn, "sinks", "forget", "bus")
        assert p.returncode == 2 and "a daemon is running sink 'bus' now" in p.stderr, p.stderr
        await pool.fetchrow(q.FORGET_SINK, "bus")  # as forget did, looking at nothing
        await until_named(base, "sink:bus", "SinkGone: sink 'bus' is no longer in the database")
        # Its row back (a daemon started with it configured): the loop is told, and goes on.
        loop = next(c for c in tr.components if type(c).__name__ == "Sinks").loops[0]
        assert loop.gone
        async with pool.acquire() as conn:
            await store.register(conn, [("bus", "nats")])

        async def back() -> bool:
            return not loop.gone and await seen_within(pool, "bus", store.SEEN_FRESH_S)

        await wait_until(back, 3 * store.SEEN_EVERY_S, "the loop told its row is back")
        await wait_until(lambda: error_mentions(pool, "could not connect to the broker"), 20,
                         "the loop trying its broker again")


@needs_nats
async def test_a_nats_sink_whose_row_is_gone_reads_nothing_again_and_fails_loudly(db_dsn, pool, tmp_path):
    broker = NatsServer(tmp_path).start()
    bus = {"servers": (broker.url,), "stream": "SMS_EVENTS", "subject_prefix": "sms.events",
           "create_stream": True, "timeout_s": 2.0}
    await make_messages(pool, ["a", "b"])
    try:
        async with running(supervised(config(db_dsn, nats={"bus": bus}))) as (_, base):
            await report(pool, ["a", "b"], State.sent)
            await wait_until(lambda: _count_is(broker.url, 2), 20, "2 events in the stream")
            await pool.fetchrow(q.FORGET_SINK, "bus")
            await report(pool, ["a", "b"], State.delivered)
            await until_named(base, "sink:bus", "SinkGone: sink 'bus' is no longer in the database")
            assert await stream_count(broker.url) == 2  # the new events not published
            assert not await has_cursor(pool, "bus")  # no cursor made again at position 0
    finally:
        broker.stop()


async def _count_is(url: str, n: int) -> bool:
    return await stream_count(url) == n


async def test_a_daemon_that_does_not_run_a_sink_the_database_has_says_so_at_start(db_dsn, pool):
    # A sink taken out of the configuration (or enabled = false) holds back the removal of every
    # event it has not acknowledged; one that never acknowledged anything has no cursor, so no
    # consumer lag: only this line tells that the disk grows for it.
    rx = await Receiver([new_secret()]).start()
    try:
        await rx.stop()  # nothing answers: the sink never acknowledges
        await make_messages(pool, ["a"])
        async with running(config(db_dsn, webhooks={"billing": hook(rx, new_secret())})):
            await report(pool, ["a"], State.sent)
        with structlog.testing.capture_logs() as logs:
            async with running(config(db_dsn)):  # no sink configured any more
                pass
        said = [e for e in logs if e["event"].startswith("sink in the database but not run")]
        assert [(e["log_level"], e["sink"]) for e in said] == [("warning", "billing")], said
        assert said[0]["events_behind"] >= 1
    finally:
        await rx.stop()


async def test_forget_is_refused_while_a_daemon_of_an_older_release_holds_the_reader_lease(db_dsn, pool):
    # During a rolling upgrade a daemon of the release before writes no runner row; a webhook
    # sink's reader lease, which every release takes while it reads, still tells it runs.
    async with pool.acquire() as conn:
        await store.register(conn, [("billing", "webhook")])
        assert (await conn.fetchrow(q.TAKE_SINK_READER, "billing", "old-release-lease", 30.0))["ours"]
    p = tracker_cli(db_dsn, "sinks", "forget", "billing")
    assert p.returncode == 2 and "reader lease (old-release-lease)" in p.stderr, (p.stdout, p.stderr)
    assert await has_row(pool, "billing")
    await pool.execute("UPDATE tracker.sinks SET reader_until = now() WHERE name = 'billing'")  # ran out
    p = tracker_cli(db_dsn, "sinks", "forget", "billing")
    assert p.returncode == 0 and not await has_row(pool, "billing"), (p.stdout, p.stderr)
