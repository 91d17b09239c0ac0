"""The NATS JetStream sink against a real nats-server with JetStream (started here on a free
port, stopped here): every event published once per Nats-Msg-Id, on its subject, in order per
message, the cursor moved only on the publish acknowledgement; a missing stream; a broker restart."""
from __future__ import annotations

import nats
import pytest

from tests.postbacks_support import running
from tests.sinks_support import (NatsServer, check_stream, config, events, make_messages,
                                 nats_available, report, stream_count, stream_messages, wait_until)
from tracker.core.states import State

pytestmark = pytest.mark.skipif(not nats_available(), reason="nats-server is not installed (.ci/run installs it)")

STREAM = "SMS_EVENTS"  # as in sinks_support


@pytest.fixture
def broker(tmp_path):
    server = NatsServer(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


def sink(broker: NatsServer, **changes) -> dict:
    return {"servers": (broker.url,), "stream": STREAM, "subject_prefix": "sms.events",
            "create_stream": True, "timeout_s": 2.0, **changes}


async def test_events_published_once_each_in_order_and_the_cursor_follows_acks(db_dsn, pool, broker):
    refs = [f"m{i}" for i in range(40)]
    await make_messages(pool, refs)
    async with running(config(db_dsn, nats={"bus": sink(broker)})):
        for state in (State.accepted, State.sent, State.delivered):
            await report(pool, refs, state)
        await wait_until(lambda: _count_is(broker.url, 120), 20, "120 events in the stream")
        await wait_until(lambda: _behind(pool, 0), 20, "the cursor at the end")
    evs = await events(pool)
    check_stream(await stream_messages(broker.url), evs)
    st = await pool.fetchrow("SELECT * FROM tracker.sink_status WHERE sink = 'bus'")
    assert st["kind"] == "nats" and st["position"] == max(e["pos"] for e in evs) and st["last_success_at"]


async def test_missing_stream_is_reported_then_used_once_created(db_dsn, pool, broker):
    await make_messages(pool, ["a", "b"])
    async with running(config(db_dsn, nats={"bus": sink(broker, create_stream=False)})):
        await report(pool, ["a", "b"], State.sent)
        await wait_until(lambda: _error_mentions(pool, "does not exist"), 20, "the missing stream reported")
        assert await _behind(pool, 2)  # nothing acknowledged, nothing skipped
        nc = await nats.connect(broker.url)
        await nc.jetstream().add_stream(name=STREAM, subjects=["sms.events.>"])
        await nc.close()
        await wait_until(lambda: _behind(pool, 0), 30, "the events published once the stream exists")
    check_stream(await stream_messages(broker.url), await events(pool))


async def test_a_broker_restart_loses_and_repeats_nothing(db_dsn, pool, broker):
    refs = [f"m{i}" for i in range(30)]
    await make_messages(pool, refs)
    async with running(config(db_dsn, nats={"bus": sink(broker)})):
        await report(pool, refs, State.accepted)
        await wait_until(lambda: _count_is(broker.url, 30), 20, "the first 30 events")
        broker.stop()
        await report(pool, refs, State.sent)  # written while the broker is down
        await wait_until(lambda: _error_mentions(pool, ""), 20, "the outage noticed")
        broker.start()
        await report(pool, refs, State.delivered)
        await wait_until(lambda: _count_is(broker.url, 90), 40, "all 90 events after the restart")
        await wait_until(lambda: _behind(pool, 0), 20, "the cursor at the end")
    check_stream(await stream_messages(broker.url), await events(pool))


async def _count_is(url: str, n: int) -> bool:
    return await stream_count(url) == n


async def _behind(pool, n: int) -> bool:
    return await pool.fetchval("SELECT events_behind FROM tracker.sink_status WHERE sink = 'bus'") == n


async def _error_mentions(pool, text: str) -> bool:
    error = await pool.fetchval("SELECT last_error FROM tracker.sinks WHERE name = 'bus'")
    return error is not None and text in error
