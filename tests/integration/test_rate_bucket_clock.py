"""A vendor's shared rate bucket (sql/012, sql/030) when the database's clock steps back (NTP):
the time since the last refill is negative, and was added as such, so that the bucket went far
below zero and no replica polled the vendor until the clock caught up, without a word."""
from __future__ import annotations

from tracker.db import queries as q


async def test_a_clock_stepped_back_costs_a_refill_never_the_bucket(pool) -> None:
    async with pool.acquire() as conn:
        # the last refill 10 minutes "ahead": what a step back of 10 minutes leaves
        await conn.execute("INSERT INTO tracker.vendor_rate (vendor, tokens, refilled_at)"
                           " VALUES ('skycore', 5, clock_timestamp() + interval '10 minutes')")
        assert await conn.fetchval(q.TAKE_RATE_TOKENS, "skycore", 3, 100.0, 10.0) == 3
        assert await conn.fetchval("SELECT tokens FROM tracker.vendor_rate WHERE vendor = 'skycore'") == 2
        # a bucket the old function left far below zero is refilled from zero
        await conn.execute("UPDATE tracker.vendor_rate SET tokens = -60000,"
                           " refilled_at = clock_timestamp() - interval '1 second'")
        assert await conn.fetchval(q.TAKE_RATE_TOKENS, "skycore", 3, 100.0, 10.0) == 3
