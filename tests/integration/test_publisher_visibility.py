"""Publication held up is visible (DESIGN §9): a session that holds the publisher row in a
transaction it keeps open (an operator's; readers no longer take it since sql/022) holds up the
daemon's publisher, which times out on it turn after turn. That is no progress: /readyz names the publisher (blocked by a lock, by which
session) once it has lasted `health.wedged_after_s`, a warning names the session holding the
row, and every consumer's lag counts the events waiting unpublished. Once the transaction ends,
publication resumes and the tracker is ready again. Real PostgreSQL, the daemon in-process."""
from __future__ import annotations

import dataclasses

import asyncpg
import structlog

from tests.metrics_support import metric
from tests.postbacks_support import config_for, named, readyz, running, session
from tests.sinks_support import all_published, make_messages, report, wait_until
from tracker import upkeep
from tracker.core.states import State


def config(dsn: str):
    cfg = config_for(dsn, sparksender={"base_url": "http://127.0.0.1:9"})  # polled, never called
    health = dataclasses.replace(cfg.health, wedged_after_s=2.0, restart_backoff_max_s=0.2)
    return dataclasses.replace(cfg, health=health)


async def lag(pool, consumer: str) -> float:
    await upkeep.measure_lag(pool)
    return metric("tracker_consumer_lag_events", consumer=consumer)


async def test_a_consumer_holding_the_publisher_row_shows_in_readyz_and_lag(db_dsn, pool):
    refs = [f"p{i}" for i in range(3)]
    await make_messages(pool, refs)
    with structlog.testing.capture_logs() as logs:
        async with running(config(db_dsn)) as (tr, base), session() as s:
            await report(pool, refs, State.sent)
            await wait_until(lambda: all_published(pool), 10, "the first events published")
            # 'billing' has read and acknowledged everything so far: no lag.
            async with pool.acquire() as c:
                seen = await c.fetch("SELECT * FROM tracker.read_events('billing', 100)")
                assert len(seen) == 3
                await c.execute("SELECT tracker.ack_events('billing', $1)", seen[-1]["event_id"])
            assert await lag(tr.pool, "billing") == 0

            slowpoke = await asyncpg.connect(db_dsn, server_settings={"application_name": "slowpoke"})
            try:
                holding = slowpoke.transaction()
                await holding.start()
                await slowpoke.execute("SELECT FROM tracker.event_publisher FOR UPDATE")
                await report(pool, refs, State.delivered)  # 3 transitions, notified on commit

                async def blocked_and_named() -> bool:
                    status, body = await readyz(s, base)
                    return status == 503 and any("publication blocked by a lock" in r
                                                 for r in named(body, "publisher"))

                await wait_until(blocked_and_named, 20, "/readyz naming the publisher", step=0.2)
                reason = named((await readyz(s, base))[1], "publisher")[0]
                assert f"pid {slowpoke.get_server_pid()}" in reason and "'slowpoke'" in reason
                assert "3 events wait unpublished" in reason
                assert await pool.fetchval(
                    "SELECT count(*) FROM tracker.transitions WHERE pos IS NULL") == 3
                assert await pool.fetch("SELECT * FROM tracker.read_events('billing', 10)") == []
                assert await lag(tr.pool, "billing") == 3  # behind by the unpublished events
                assert metric("tracker_consumer_lag_seconds", consumer="billing") > 0
            finally:
                await slowpoke.close()  # its transaction ends: the row is free

            await wait_until(lambda: all_published(pool), 10, "publication resumed")

            async def ready() -> bool:
                return await readyz(s, base) == (200, {"status": "ready"})

            await wait_until(ready, 10, "ready again", step=0.1)
            events = await pool.fetch("SELECT * FROM tracker.read_events('billing', 10)")
            assert [e["to_state"] for e in events] == ["delivered"] * 3
            assert await lag(tr.pool, "billing") == 3  # published now, not acknowledged yet
    warned = [e for e in logs if e.get("event", "").startswith("publication blocked")]
    assert warned and warned[0]["log_level"] == "warning"
    assert warned[0]["holder_application"] == "slowpoke"
    assert all("query" not in e for e in warned)  # the holder's query text is never logged
