"""A receiver gone for longer than the retry schedule dead-letters every event: at a million
events a day that was a warning each, gigabytes of log. Now a line a minute per sink, saying how
many were left out since; tracker_sink_deliveries_total{outcome="dead"} counts every one."""
from __future__ import annotations

import structlog

from tests.metrics_support import metric
from tests.postbacks_support import running
from tests.sinks_support import Receiver, config, make_messages, new_secret, report, wait_until
from tracker.core.states import State


async def test_dead_letters_are_logged_a_line_a_minute_and_counted_each(db_dsn, pool):
    secret = new_secret()
    rx = await Receiver([secret], answer=lambda d: 500).start()
    refs = [f"m{i}" for i in range(10)]
    hooks = {"gone": {"url": rx.url, "secrets": (secret,), "timeout_s": 2.0, "retry_schedule_s": [0.0]}}
    before = metric("tracker_sink_deliveries_total", sink="gone", outcome="dead")
    try:
        await make_messages(pool, refs)
        with structlog.testing.capture_logs() as logs:
            async with running(config(db_dsn, webhooks=hooks)):
                await report(pool, refs, State.sent)
                dead = "SELECT count(*) = 10 FROM tracker.sink_failures WHERE sink = 'gone'"
                await wait_until(lambda: pool.fetchval(dead), 20, "the 10 events dead-lettered")
    finally:
        await rx.stop()
    assert metric("tracker_sink_deliveries_total", sink="gone", outcome="dead") - before == 10
    lines = [e for e in logs if e["event"] == "event dead-lettered"]
    assert [(e["sink"], e["left_out"]) for e in lines] == [("gone", 0)], lines
