"""tracker.sink_status counts pending deliveries and dead letters each through its own partial
index (sql/029): dead letters are kept for ever by default, and every daemon reads the lag every
10 s, so that read must not go through them."""
from __future__ import annotations

import orjson

from tracker.db import queries as q
from tracker.sinks import store


def rows_read(plan: dict, table: str) -> int:
    """Rows the plan's nodes on `table` read: returned and removed by a filter, every loop."""
    own = 0
    if plan.get("Relation Name") == table:
        own = (plan["Actual Rows"] + plan.get("Rows Removed by Filter", 0)) * plan["Actual Loops"]
    return own + sum(rows_read(p, table) for p in plan.get("Plans", ()))


async def test_pending_and_dead_are_counted_apart_and_the_lag_reads_no_dead_letter(pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO tracker.sinks (name, kind, consumer) VALUES"
                           " ('hooks', 'webhook', 'sink:hooks'), ('other', 'webhook', 'sink:other')")
        await conn.execute("""
            INSERT INTO tracker.sink_deliveries (sink, event_id, pos, message_id, recorded_at, body, status)
            SELECT CASE WHEN g <= 1000 THEN 'other' ELSE 'hooks' END, g, g, g,
                   now() - g * interval '1 second', '\\x00',
                   CASE WHEN g % 200 = 0 THEN 'pending' ELSE 'dead' END
            FROM generate_series(1, 20000) g""")
        await conn.execute("VACUUM ANALYZE tracker.sink_deliveries")
        rows = {r["sink"]: r for r in await store.status(conn)}
        assert {k: (r["pending"], r["dead_letters"], r["events_behind"]) for k, r in rows.items()} == {
            "hooks": (95, 18905, 95), "other": (5, 995, 5)}
        # the oldest pending delivery's age: event 20000's, 20000 s old
        assert 19990 < rows["hooks"]["oldest_undelivered_age"].total_seconds() < 20100
        assert [(r["sink"], r["events_behind"]) for r in await store.lag(conn)] == [("hooks", 95), ("other", 5)]
        [plan] = orjson.loads(await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + q.SINK_LAG))
        assert rows_read(plan["Plan"], "sink_deliveries") <= 100  # the pending ones at most
