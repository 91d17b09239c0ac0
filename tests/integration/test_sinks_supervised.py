"""A sink's own unexpected errors are the supervisor's (DESIGN §9): a statement PostgreSQL
refuses in a sink's database work (no outage: here a trigger raising check_violation when the
sink's cursor is written) is logged, counted as tracker_component_failures_total{component=
"sink:<name>"}, the loop restarts, /readyz names it while it lasts; once the database takes the
statement again, every event is delivered and the cursor reaches the end. Real PostgreSQL, a
real receiver on loopback, a real nats-server."""
from __future__ import annotations

import dataclasses
import io
import sys

import orjson
import pytest

from tests.metrics_support import failures
from tests.faults_support import refusing
from tests.nats_support import NatsServer, check_stream, needs_nats, stream_messages
from tests.postbacks_support import readyz, running, session
from tests.sinks_support import (Receiver, config, events, make_messages, new_secret, report,
                                 wait_until)
from tracker import logging as tlog
from tracker.core.states import State


def refusing_cursor(sink: str) -> tuple[str, str]:
    """The sink's cursor refused when written (check_violation), and allowed again."""
    return refusing("consumers", f"NEW.consumer = 'sink:{sink}'", "check_violation",
                    "cursor refused by the test", name="test_refuse_cursor", events="INSERT OR UPDATE")


def supervised(cfg):
    health = dataclasses.replace(cfg.health, restart_backoff_max_s=0.5, failures_before_unready=2)
    return dataclasses.replace(cfg, health=health)


async def refused_until_allowed(pool, tr, base: str, sink: str, refs: list[str]) -> None:
    """Refuse the sink's cursor, make events, see the supervisor count and name the sink, then
    allow it again and see it ready."""
    component = f"sink:{sink}"
    before = failures(component)
    refuse, allow = refusing_cursor(sink)
    await pool.execute(refuse)
    async with session() as s:
        try:
            await report(pool, refs, State.sent)

            async def named() -> bool:
                status, body = await readyz(s, base)
                return status == 503 and any(
                    p["component"] == component and "CheckViolationError" in p["reason"]
                    for p in body.get("problems", []))

            await wait_until(named, 20, f"/readyz naming {component}", step=0.1)
            assert failures(component) - before >= 2  # counted, and restarted after each
            assert await behind(pool, sink) == len(refs)  # nothing skipped meanwhile
        finally:
            await pool.execute(allow)
        await wait_until(lambda: behind(pool, sink, 0), 30, "the cursor at the end")

        async def ready() -> bool:
            return (await readyz(s, base))[0] == 200

        await wait_until(ready, 20, "ready again", step=0.1)


async def behind(pool, sink: str, n: int | None = None):
    got = await pool.fetchval("SELECT events_behind FROM tracker.sink_status WHERE sink = $1", sink)
    return got if n is None else got == n


async def test_a_refused_statement_in_a_webhook_sink_is_the_supervisors(db_dsn, pool):
    secret = new_secret()
    rx = await Receiver([secret]).start()
    refs = [f"w{i}" for i in range(5)]
    try:
        await make_messages(pool, refs)
        hook = {"url": rx.url, "secrets": (secret,), "timeout_s": 2.0, "retry_schedule_s": [0, 0.2]}
        async with running(supervised(config(db_dsn, webhooks={"crm": hook}))) as (tr, base):
            await refused_until_allowed(pool, tr, base, "crm", refs)
            await wait_until(lambda: len(rx.delivered_ids()) == 5, 20, "5 events delivered")
    finally:
        await rx.stop()
    assert rx.delivered_ids() == {e["event_id"] for e in await events(pool)}
    assert all(d.verified for d in rx.requests)


@needs_nats
async def test_a_refused_statement_in_a_nats_sink_is_the_supervisors(db_dsn, pool, tmp_path):
    broker = NatsServer(tmp_path).start()
    refs = [f"n{i}" for i in range(5)]
    try:
        await make_messages(pool, refs)
        bus = {"servers": (broker.url,), "stream": "SMS_EVENTS", "subject_prefix": "sms.events",
               "create_stream": True, "timeout_s": 2.0}
        async with running(supervised(config(db_dsn, nats={"bus": bus}))) as (tr, base):
            await refused_until_allowed(pool, tr, base, "bus", refs)
            # a remote that works is no error of the sink: last_error holds nothing of this
            assert await pool.fetchval("SELECT last_error FROM tracker.sinks WHERE name = 'bus'") is None
        check_stream(await stream_messages(broker.url), await events(pool))
    finally:
        broker.stop()


async def test_a_webhook_deliverys_own_error_is_a_failed_attempt_shown_and_dead_lettered(
        db_dsn, pool, monkeypatch):
    """An error of our own in a delivery (a host name the resolver refused raised UnicodeError):
    the claim was left to its lease and sent again for ever, a log line each time, nothing
    counted. Now it is a failed attempt in its words (last_error), retried on the schedule,
    then dead-lettered (counted); its traceback logged once a minute, not once per event."""
    from tracker.sinks import delivery

    async def buggy(*args, **kwargs):
        raise RuntimeError("a bug in the delivery")

    monkeypatch.setattr(delivery, "post", buggy)
    buf = io.StringIO()
    tlog.configure("info", "json", stream=buf, cache=False)
    refs = [f"b{i}" for i in range(5)]
    await make_messages(pool, refs)
    hook = {"url": "http://127.0.0.1:9/hooks", "secrets": (new_secret(),), "timeout_s": 2.0,
            "retry_schedule_s": [0, 0.2]}
    try:
        async with running(supervised(config(db_dsn, webhooks={"crm": hook}))):
            await report(pool, refs, State.sent)
            await wait_until(lambda: all_dead(pool), 30, "5 events dead-lettered")
            status = await pool.fetchrow("SELECT * FROM tracker.sink_status WHERE sink = 'crm'")
    finally:
        tlog.configure("info", "console", stream=sys.stderr, cache=False)
    assert status["last_error"] == "the delivery failed: RuntimeError: a bug in the delivery"
    assert status["events_behind"] == 0  # the cursor went on: nothing sent again for ever
    lines = [orjson.loads(line) for line in buf.getvalue().splitlines()]
    bugs = [line for line in lines if "failed by an error of ours" in line["event"]]
    assert len(bugs) == 1 and "RuntimeError: a bug in the delivery" in bugs[0]["exception"], bugs


async def all_dead(pool) -> bool:
    return await pool.fetchval("SELECT dead_letters FROM tracker.sink_status WHERE sink = 'crm'") == 5
