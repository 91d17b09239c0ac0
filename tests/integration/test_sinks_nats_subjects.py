"""The stream a NATS sink publishes into, against a real nats-server with JetStream (started
here): it must take the subject of every event the sink can publish, `<prefix>.<vendor>.<state>`
for the enabled vendors and every state but `submitted` (no event goes to it), and no more; one
that does not is reported at start, nothing goes elsewhere, and the sink goes on once it does."""
from __future__ import annotations

import asyncio
import contextlib

import nats
import pytest

from tests.metrics_support import metric
from tests.nats_support import (STREAM, NatsServer, check_stream, needs_nats, stream_count,
                                stream_messages)
from tests.postbacks_support import running
from tests.sinks_support import (behind, config, error_mentions, events, make_messages, report,
                                 wait_until)
from tracker.config_types import NatsSinkConfig, SinksConfig
from tracker.core.states import State
from tracker.sinks import store
from tracker.sinks.jetstream import NatsSink

pytestmark = needs_nats


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


async def test_a_stream_taking_exactly_the_subjects_events_can_have_is_used(db_dsn, pool, broker):
    # No event goes to `submitted`: a stream listing the other states was refused for good
    # (the sink asked for sms.events.<vendor>.submitted too) and got nothing.
    nc = await nats.connect(broker.url)
    await nc.jetstream().add_stream(name=STREAM, subjects=[f"sms.events.*.{s.name}" for s in State
                                                           if s is not State.submitted])
    await nc.close()
    await make_messages(pool, ["a", "b", "c"])
    async with running(config(db_dsn, nats={"bus": sink(broker, create_stream=False)})):
        for state in (State.accepted, State.sent, State.delivered, State.read):
            await report(pool, ["a", "b", "c"], state)
        await wait_until(lambda: behind(pool, 0), 20, "every event published")
    assert await pool.fetchval("SELECT last_error FROM tracker.sinks WHERE name = 'bus'") is None
    check_stream(await stream_messages(broker.url), await events(pool))


async def test_a_stream_taking_some_vendors_only_is_refused_and_one_missing_is_named(pool, broker):
    # A stream taking only sms.events.twilio.> for a deployment sending through Twilio: refused at
    # start, naming a subject it misses. A disabled vendor's messages still end (their window, a
    # row taken in), and one such event would stall the sink behind it for good.
    nc = await nats.connect(broker.url)
    await nc.jetstream().add_stream(name=STREAM, subjects=["sms.events.twilio.>"])
    await nc.close()
    await make_messages(pool, ["a", "b"], vendor="twilio")
    await report(pool, ["a", "b"], State.sent, vendor="twilio")
    await pool.execute("SELECT tracker.publish_events()")  # the daemon's publisher, which is not running
    cfg = NatsSinkConfig(name="bus", **sink(broker, create_stream=False))
    async with pool.acquire() as conn:
        await store.register(conn, [("bus", "nats")])
    async with _running(NatsSink(cfg, pool, SinksConfig(poll_interval_s=0.2))):
        await wait_until(lambda: error_mentions(pool, f"stream {STREAM} does not take the sink's subjects"),
                         20, "the stream's subjects reported")
        assert "e.g. sms.events." in await pool.fetchval("SELECT last_error FROM tracker.sinks WHERE name = 'bus'")
        assert await behind(pool, 2) and await stream_count(broker.url) == 0  # nothing published


async def _count_is(url: str, n: int) -> bool:
    return await stream_count(url) == n


@contextlib.asynccontextmanager
async def _running(s: NatsSink):
    """The sink's loop, as the daemon runs it, stopped again at the end."""
    task = asyncio.create_task(s.run())
    try:
        yield s
    finally:
        s.stop()
        await asyncio.wait_for(task, 10)


async def test_a_stream_that_does_not_take_the_sinks_subjects_is_reported_and_nothing_goes_elsewhere(
        db_dsn, pool, broker):
    # The configured stream exists but takes other subjects; another stream takes the sink's. Its
    # acknowledgements moved the cursor while the configured stream got nothing.
    nc = await nats.connect(broker.url)
    js = nc.jetstream()
    await js.add_stream(name=STREAM, subjects=["other.>"])
    await js.add_stream(name="AUDIT", subjects=["sms.>"])
    await make_messages(pool, ["a", "b", "c"])
    try:
        # sparksender enabled: its events are the ones the stream must take
        async with running(config(db_dsn, nats={"bus": sink(broker, create_stream=False)},
                                  vendors=("sparksender",))):
            await report(pool, ["a", "b", "c"], State.sent)
            await wait_until(lambda: error_mentions(pool, f"stream {STREAM} does not take the sink's subjects"),
                             20, "the stream's subjects reported")
            assert await behind(pool, 3) and (await js.stream_info("AUDIT")).state.messages == 0
            await js.delete_stream("AUDIT")
            await js.update_stream(name=STREAM, subjects=["sms.events.>"])
            await wait_until(lambda: behind(pool, 0), 30, "the events published once the stream takes them")
    finally:
        await nc.close()
    check_stream(await stream_messages(broker.url), await events(pool))


async def test_a_stream_changed_under_a_running_sink_gets_nothing_past_the_cursor(db_dsn, pool, broker):
    # The sink checked its stream at start; then the stream gives the subjects up and another
    # takes them. Nats-Expected-Stream makes that one refuse the events: an error, not a cursor
    # moved past events the configured stream never got.
    await make_messages(pool, ["a", "b"])
    nc = await nats.connect(broker.url)
    js = nc.jetstream()
    failed_before = metric("tracker_sink_deliveries_total", sink="bus", outcome="failed")
    try:
        async with running(config(db_dsn, nats={"bus": sink(broker)})):
            await report(pool, ["a"], State.sent)
            await wait_until(lambda: _count_is(broker.url, 1), 20, "the first event")
            await js.update_stream(name=STREAM, subjects=["other.>"])
            await js.add_stream(name="AUDIT", subjects=["sms.>"])
            await report(pool, ["b"], State.sent)
            await wait_until(lambda: error_mentions(pool, ""), 20, "the refusal reported")
            assert await behind(pool, 1) and (await js.stream_info("AUDIT")).state.messages == 0
            assert metric("tracker_sink_deliveries_total", sink="bus", outcome="failed") > failed_before
            await js.delete_stream("AUDIT")
            await js.update_stream(name=STREAM, subjects=["sms.events.>"])
            await wait_until(lambda: behind(pool, 0), 40, "the event published once the stream takes it")
    finally:
        await nc.close()
    check_stream(await stream_messages(broker.url), await events(pool))
