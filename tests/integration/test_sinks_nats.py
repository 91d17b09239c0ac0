"""The NATS JetStream sink against a real nats-server with JetStream (started here on a free
port, stopped here): every event published once per Nats-Msg-Id, on its subject, in order per
message, the cursor moved only on the publish acknowledgement; a missing stream; a broker restart;
a broker unreachable or silent at start (reported, backed off from, no hold-up of a stop); an
event the stream or the server refuses (dead-lettered, redriven with `tracker sinks redrive`).
The stream's subjects: test_sinks_nats_subjects."""
from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time

import nats
import pytest
import structlog

from tests.metrics_support import metric
from tests.nats_support import (STREAM, NatsServer, check_stream, needs_nats, stream_count,
                                stream_messages)
from tests.postbacks_support import running
from tests.sinks_support import (behind, config, error_mentions, events, make_messages, report,
                                 wait_until, write_config)
from tracker.app import Tracker
from tracker.core.states import State
from tracker.sinks.event import encode_event
from tracker.sinks.natsmsg import headers, size

pytestmark = needs_nats


@pytest.fixture
def broker(tmp_path):
    server = NatsServer(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


def sink(broker: NatsServer | None, **changes) -> dict:
    return {"servers": (broker.url,) if broker else (), "stream": STREAM, "subject_prefix": "sms.events",
            "create_stream": True, "timeout_s": 2.0, **changes}


async def test_events_published_once_each_in_order_and_the_cursor_follows_acks(db_dsn, pool, broker):
    refs = [f"m{i}" for i in range(40)]
    await make_messages(pool, refs)
    async with running(config(db_dsn, nats={"bus": sink(broker)})):
        for state in (State.accepted, State.sent, State.delivered):
            await report(pool, refs, state)
        await wait_until(lambda: _count_is(broker.url, 120), 20, "120 events in the stream")
        await wait_until(lambda: behind(pool, 0), 20, "the cursor at the end")
    evs = await events(pool)
    check_stream(await stream_messages(broker.url), evs)
    st = await pool.fetchrow("SELECT * FROM tracker.sink_status WHERE sink = 'bus'")
    assert st["kind"] == "nats" and st["position"] == max(e["pos"] for e in evs) and st["last_success_at"]


async def test_two_replicas_publish_each_event_once_and_the_other_takes_over_at_a_stop(
        db_dsn, pool, broker):
    # Every replica read and published every event, the broker dropping the repeats: one
    # publish per event and replica (2.07 a event with three replicas, a reviewer measured).
    refs = [f"m{i}" for i in range(40)]
    await make_messages(pool, refs)
    duplicates = metric("tracker_sink_deliveries_total", sink="bus", outcome="duplicate")
    delivered = metric("tracker_sink_deliveries_total", sink="bus", outcome="delivered")
    cfg = config(db_dsn, nats={"bus": sink(broker)})
    async with contextlib.AsyncExitStack() as replicas:
        a, _ = await replicas.enter_async_context(running(cfg))
        b, _ = await replicas.enter_async_context(running(cfg))
        for state in (State.accepted, State.sent):
            await report(pool, refs, state)
        await wait_until(lambda: behind(pool, 0), 20, "the cursor at the end")
        reader = await pool.fetchval("SELECT reader FROM tracker.sinks WHERE name = 'bus'")
        holder = next(t for t in (a, b) if _nats_loop(t).token == reader)
        await holder.stop()  # the lease's holder goes: the other takes over at once
        await report(pool, refs, State.delivered)
        await wait_until(lambda: behind(pool, 0), 10, "the cursor at the end again")
    check_stream(await stream_messages(broker.url), await events(pool))
    assert metric("tracker_sink_deliveries_total", sink="bus", outcome="delivered") - delivered == 120
    assert metric("tracker_sink_deliveries_total", sink="bus", outcome="duplicate") - duplicates == 0


async def test_missing_stream_is_reported_then_used_once_created(db_dsn, pool, broker):
    await make_messages(pool, ["a", "b"])
    async with running(config(db_dsn, nats={"bus": sink(broker, create_stream=False)})):
        await report(pool, ["a", "b"], State.sent)
        await wait_until(lambda: error_mentions(pool, "does not exist"), 20, "the missing stream reported")
        assert await behind(pool, 2)  # nothing acknowledged, nothing skipped
        nc = await nats.connect(broker.url)
        await nc.jetstream().add_stream(name=STREAM, subjects=["sms.events.>"])
        await nc.close()
        await wait_until(lambda: behind(pool, 0), 30, "the events published once the stream exists")
    check_stream(await stream_messages(broker.url), await events(pool))


async def test_a_stream_lost_under_the_sink_is_made_again_and_said_loudly(db_dsn, pool, broker):
    # A broker whose storage was wiped: the stream the sink had published to is gone, with the
    # events it had acknowledged. The sink made it again and said so only at info, as at a
    # first start: now a warning.
    await make_messages(pool, ["a", "b"])
    with structlog.testing.capture_logs() as logs:
        async with running(config(db_dsn, nats={"bus": sink(broker)})):
            await report(pool, ["a", "b"], State.accepted)
            await wait_until(lambda: _count_is(broker.url, 2), 20, "the first 2 events")
            nc = await nats.connect(broker.url)
            await nc.jetstream().delete_stream(STREAM)  # as a wiped store leaves it
            await nc.close()
            await report(pool, ["a", "b"], State.sent)
            await wait_until(lambda: _count_is(broker.url, 2), 30, "the next 2 events, in a new stream")
            await wait_until(lambda: behind(pool, 0), 20, "the cursor at the end")
    created = [(e["log_level"], e["event"]) for e in logs if e["event"].startswith("NATS stream created")]
    assert created == [("info", "NATS stream created"),
                       ("warning", "NATS stream created again: the stream this sink published to was "
                                   "gone from the broker, with the events it had acknowledged (its "
                                   "storage lost?)")]


async def test_a_stream_lost_while_the_daemon_was_down_is_said_loudly_a_renamed_one_is_not(
        db_dsn, pool, broker):
    # The daemon stopped, the broker's storage wiped, the daemon started again: the stream it
    # had published to is missing. That was said as a first start ("created", info); the sink
    # row remembers the stream that acknowledged its events (sql/027).
    await make_messages(pool, ["a", "b"])
    async with running(config(db_dsn, nats={"bus": sink(broker)})):
        await report(pool, ["a", "b"], State.accepted)
        await wait_until(lambda: behind(pool, 0), 20, "the first 2 events acknowledged")
    for stream, said in ((STREAM, "warning"), ("RENAMED", "info")):  # renamed in the configuration
        nc = await nats.connect(broker.url)  # as a wiped store leaves it (or an operator who
        await nc.jetstream().delete_stream(STREAM)  # renames it: two may not take one subject)
        await nc.close()
        with structlog.testing.capture_logs() as logs:
            async with running(config(db_dsn, nats={"bus": sink(broker, stream=stream)})):
                await report(pool, ["a", "b"], State.sent if stream == STREAM else State.delivered)
                await wait_until(lambda: behind(pool, 0), 30, "the next 2 events acknowledged")
        created = [e for e in logs if e["event"].startswith("NATS stream created")]
        assert [(e["log_level"], e["stream"]) for e in created] == [(said, stream)], created
    assert await pool.fetchval("SELECT acked_stream FROM tracker.sinks WHERE name = 'bus'") == "RENAMED"


async def test_a_broker_restart_loses_and_repeats_nothing(db_dsn, pool, broker):
    refs = [f"m{i}" for i in range(30)]
    await make_messages(pool, refs)
    async with running(config(db_dsn, nats={"bus": sink(broker)})):
        await report(pool, refs, State.accepted)
        await wait_until(lambda: _count_is(broker.url, 30), 20, "the first 30 events")
        broker.stop()
        await report(pool, refs, State.sent)  # written while the broker is down
        await wait_until(lambda: error_mentions(pool, ""), 20, "the outage noticed")
        broker.start()
        await report(pool, refs, State.delivered)
        await wait_until(lambda: _count_is(broker.url, 90), 40, "all 90 events after the restart")
        await wait_until(lambda: behind(pool, 0), 20, "the cursor at the end")
    check_stream(await stream_messages(broker.url), await events(pool))


async def test_an_unreachable_broker_is_reported_backed_off_from_then_used_once_up(db_dsn, pool, tmp_path):
    # nats-py alone would try the first connection forever: no last_error, no backoff, a
    # warning twice a second. Nothing listens on the broker's port until it is started here.
    later = NatsServer(tmp_path)
    await make_messages(pool, ["a", "b"])
    try:
        with structlog.testing.capture_logs() as logs:
            async with running(config(db_dsn, nats={"bus": sink(later, timeout_s=1.0)})):
                await report(pool, ["a", "b"], State.sent)
                await wait_until(lambda: error_mentions(pool, "ConnectionRefusedError"), 10,
                                 "the unreachable broker in last_error")
                seen = await _failure_times(pool, 4, 20)
                # 0.5 s doubling: the 4th failure at least 0.5 + 1 + 2 s after the 1st
                assert seen[-1] - seen[0] >= 3.5 * 0.9, seen
                assert await behind(pool, 2)  # nothing acknowledged, nothing skipped
                later.start()
                await wait_until(lambda: behind(pool, 0), 30, "the events published once the broker is up")
        check_stream(await stream_messages(later.url), await events(pool))
    finally:
        later.stop()
    retries = [e for e in logs if e["event"] == "NATS sink: not published; will retry"]
    assert 4 <= len(retries) <= 6, len(retries)  # one per backoff, not one per nats-py attempt
    assert not [e for e in logs if e["event"] == "NATS connection error"]  # its first connection's are ours
    assert await error_mentions(pool, "could not connect to the broker")


async def test_a_broker_that_never_answers_holds_up_neither_the_error_nor_a_stop(db_dsn, pool):
    # A port that accepts connections and says nothing: each attempt waits out its timeout.
    accepted: list[asyncio.StreamWriter] = []
    hole = await asyncio.start_server(lambda _r, w: accepted.append(w), "127.0.0.1", 0)
    port = hole.sockets[0].getsockname()[1]
    url = f"nats://127.0.0.1:{port}"
    try:
        async with running(config(db_dsn, nats={"bus": {**sink(None, timeout_s=1.0), "servers": (url,)}})):
            await wait_until(lambda: error_mentions(pool, "could not connect to the broker"), 10,
                             "the silent broker in last_error")
        with structlog.testing.capture_logs() as logs:
            tracker = Tracker(config(db_dsn, nats={"bus": {**sink(None, timeout_s=5.0), "servers": (url,)}}))
            await tracker.start()
            try:
                seen = len(accepted)
                await wait_until(lambda: len(accepted) > seen, 10, "the sink connecting")
            finally:
                started = time.monotonic()
                await tracker.stop()  # while its attempt waits for the broker's INFO (5 s)
        assert time.monotonic() - started < 3.0
        assert not [e for e in logs if e["event"].startswith("component did not stop in time")]
    finally:
        for w in accepted:
            w.close()
        hole.close()
        await hole.wait_closed()


async def test_an_event_the_stream_refuses_is_dead_lettered_holds_up_nothing_and_is_redriven(
        db_dsn, pool, broker, tmp_path):
    # An event over the stream's max_msg_size is refused (JetStream error 10054) however often it
    # is sent: it becomes a dead letter, as a webhook's would, and the sink goes on. The operator
    # redrives it with the CLI, as for a webhook sink.
    nc = await nats.connect(broker.url)
    js = nc.jetstream()
    await js.add_stream(name=STREAM, subjects=["sms.events.>"], max_msg_size=1024)
    refs = [f"m{i}" for i in range(10)]
    await make_messages(pool, refs)
    await pool.execute("INSERT INTO tracker.messages (vendor, vendor_ref, recipient, client_ref)"
                       " VALUES ('sparksender', 'big', '1555big', repeat('x', 2000))")
    dead_before = metric("tracker_sink_deliveries_total", sink="bus", outcome="dead")
    try:
        async with running(config(db_dsn, nats={"bus": sink(broker, create_stream=False)})):
            await report(pool, ["big", *refs], State.accepted)
            await report(pool, ["big", *refs], State.sent)
            await wait_until(lambda: _count_is(broker.url, 20), 20, "the 20 events that fit")
            await wait_until(lambda: _status_is(pool, events_behind=0, dead_letters=2), 20,
                             "the cursor at the end, the big message's 2 events dead letters")
            failed = await pool.fetch("SELECT * FROM tracker.sink_failures WHERE sink = 'bus'")
            assert all("max_msg_size" in f["last_error"] for f in failed), [dict(f) for f in failed]
            # ... and the sink says why (sinks status' last_error): it was empty, the sink silent
            assert "max_msg_size" in await pool.fetchval("SELECT last_error FROM tracker.sink_status WHERE sink = 'bus'")
            assert metric("tracker_sink_deliveries_total", sink="bus", outcome="dead") - dead_before == 2
            big = await pool.fetchval("SELECT id FROM tracker.messages WHERE vendor_ref = 'big'")
            evs = await events(pool)
            check_stream(await stream_messages(broker.url), [e for e in evs if e["message_id"] != big])

            await js.update_stream(name=STREAM, subjects=["sms.events.>"], max_msg_size=-1)
            cfg_file = write_config(tmp_path / "t.toml", db_dsn, nats={"bus": sink(broker, create_stream=False)})
            enable = _cli(cfg_file, "sinks", "enable", "bus")
            assert enable.returncode == 2 and "NATS sink" in enable.stderr  # never disabled: nothing to enable
            redrive = _cli(cfg_file, "sinks", "redrive", "bus")
            assert redrive.returncode == 0 and "2 dead letters to send again" in redrive.stdout, redrive.stderr
            await wait_until(lambda: _count_is(broker.url, 22), 20, "the redriven events published")
            await wait_until(lambda: _status_is(pool, events_behind=0, dead_letters=0, pending=0), 20,
                             "nothing pending, no dead letter")
    finally:
        await nc.close()
    check_stream(await stream_messages(broker.url), await events(pool))


MAX_PAYLOAD = 1024


async def test_an_event_over_max_payload_only_with_its_headers_is_dead_lettered_and_the_rest_goes_on(
        db_dsn, pool, tmp_path):
    # nats-py checks the body alone against the server's max_payload; the server counts the
    # headers too, answers -ERR and closes the connection, and the publish times out: sent again
    # and again, it held up the sink for good.
    broker = NatsServer(tmp_path, max_payload=MAX_PAYLOAD).start()
    try:
        await make_messages(pool, ["before", "big", "after"])
        await report(pool, ["before", "big", "after"], State.sent)
        body, event_id = await _body_of(pool, "big")
        await pool.execute("UPDATE tracker.messages SET client_ref = $1 WHERE vendor_ref = 'big'",
                           "x" * (MAX_PAYLOAD - 10 - len(body)))
        body, event_id = await _body_of(pool, "big")
        assert len(body) <= MAX_PAYLOAD < size(body, headers(event_id, STREAM))  # only with its headers
        async with running(config(db_dsn, nats={"bus": sink(broker)})):
            await wait_until(lambda: _status_is(pool, events_behind=0, dead_letters=1), 20,
                             "the cursor at the end, the big event a dead letter")
            failure = await pool.fetchrow("SELECT * FROM tracker.sink_failures WHERE sink = 'bus'")
            assert failure["event_id"] == event_id and "max_payload" in failure["last_error"], dict(failure)
            assert await stream_count(broker.url) == 2
        assert "maximum payload" not in (tmp_path / "nats.log").read_text().lower()  # never sent
    finally:
        broker.stop()


PERMISSIONS = """
authorization {
  users = [
    {user: admin, password: admin-pw-1}
    {user: tracker, password: tracker-pw-1,
     permissions: {publish: {allow: ["sms.events.*.accepted", "$JS.API.>"]},
                   subscribe: {allow: ["_INBOX.>"]}}}
  ]
}
"""


async def test_a_publish_the_broker_refuses_permission_for_is_named_not_only_timed_out(
        db_dsn, pool, tmp_path):
    # The broker answers a publish outside the user's permissions with an asynchronous -ERR, and
    # the publish then times out: the sink said only "nats: timeout", and an operator went after
    # the network. Nothing is skipped: the sink holds until the permission is given.
    broker = NatsServer(tmp_path, conf=PERMISSIONS).start()
    admin = broker.url.replace("nats://", "nats://admin:admin-pw-1@")
    nc = await nats.connect(admin)
    try:
        await nc.jetstream().add_stream(name=STREAM, subjects=["sms.events.>"])
        await make_messages(pool, ["p1"])
        bus = sink(None, servers=(broker.url.replace("nats://", "nats://tracker:tracker-pw-1@"),),
                   create_stream=False)
        async with running(config(db_dsn, nats={"bus": bus})):
            await report(pool, ["p1"], State.accepted)
            await report(pool, ["p1"], State.sent)  # not allowed: sms.events.*.sent
            await wait_until(lambda: error_mentions(pool, "permissions violation for publish"), 20,
                             "the broker's refusal in last_error")
            error = await pool.fetchval("SELECT last_error FROM tracker.sinks WHERE name = 'bus'")
            assert "timeout" in error and "tracker-pw-1" not in error, error
            assert await stream_count(admin) == 1 and await _status_is(pool, events_behind=1)
    finally:
        await nc.close()
        broker.stop()


def _nats_loop(tracker):
    return next(c for c in tracker.components if hasattr(c, "loops")).loops[0]


async def _body_of(pool, vendor_ref: str) -> tuple[bytes, int]:
    """The event body the sink would publish for the message's one event, and its id (read by a
    throwaway consumer, which is removed again; published first, as the daemon's publisher would)."""
    await pool.execute("SELECT tracker.publish_events()")
    rows = await pool.fetch("SELECT * FROM tracker.read_events('probe', 100)")
    await pool.execute("DELETE FROM tracker.consumers WHERE consumer = 'probe'")
    row = next(r for r in rows if r["vendor_ref"] == vendor_ref)
    return encode_event(row), row["event_id"]


async def _status_is(pool, **want) -> bool:
    st = await pool.fetchrow("SELECT * FROM tracker.sink_status WHERE sink = 'bus'")
    return st is not None and all(st[k] == v for k, v in want.items())


async def _failure_times(pool, n: int, timeout: float) -> list[float]:
    """The sink's next `n` distinct last_error_at times (seconds), as they are written."""
    seen: list[float] = []

    async def another() -> bool:
        at = await pool.fetchval("SELECT extract(epoch FROM last_error_at)::float8 FROM tracker.sinks"
                                 " WHERE name = 'bus'")
        if at is not None and (not seen or at != seen[-1]):
            seen.append(at)
        return len(seen) >= n

    await wait_until(another, timeout, f"{n} failures recorded", step=0.02)
    return seen


async def _count_is(url: str, n: int) -> bool:
    return await stream_count(url) == n


def _cli(config_file, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tracker", "--config", str(config_file), *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("max_age_days,expected_s", [(None, 7 * 86400.0), (0.5, 43200.0), (0, None)])
async def test_a_stream_the_sink_creates_keeps_events_max_age_days(db_dsn, pool, broker, max_age_days,
                                                                   expected_s):
    """JetStream's own default keeps every event for ever (gigabytes a day at a few million
    events, until its storage is full and publishes fail): a stream the sink creates keeps them
    max_age_days (7 by default; 0: for ever)."""
    changes = {} if max_age_days is None else {"max_age_days": max_age_days}
    await make_messages(pool, ["aged"])
    async with running(config(db_dsn, nats={"bus": sink(broker, **changes)})):
        await report(pool, ["aged"], State.accepted)
        await wait_until(lambda: _count_is(broker.url, 1), 20, "the event in the stream")
    nc = await nats.connect(broker.url)
    try:
        info = await nc.jetstream().stream_info(STREAM)
    finally:
        await nc.close()
    assert (info.config.max_age or None) == expected_s


async def test_a_password_holding_url_delimiters_percent_encoded_authenticates(db_dsn, pool, tmp_path):
    # A URL's user and password hold `@ : / %` percent-encoded, as they must; nats-py sent them
    # as written, so such a password never authenticated (reviewer C, session 28).
    user, password = "tr@cker", "p@ss/w:rd%1"
    conf = f'authorization {{ users = [ {{user: "{user}", password: "{password}"}} ] }}\n'
    broker = NatsServer(tmp_path, conf=conf).start()
    try:
        url = broker.url.replace("nats://", "nats://tr%40cker:p%40ss%2Fw%3Ard%251@")
        await make_messages(pool, ["enc1"])
        async with running(config(db_dsn, nats={"bus": sink(None, servers=(url,))})):
            await report(pool, ["enc1"], State.accepted)
            await wait_until(lambda: _status_is(pool, events_behind=0), 20,
                             "the event published with the decoded credentials")
        nc = await nats.connect(broker.url, user=user, password=password)
        try:
            assert (await nc.jetstream().stream_info(STREAM)).state.messages == 1
        finally:
            await nc.close()
    finally:
        broker.stop()
