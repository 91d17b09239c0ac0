"""A claim reads about as many messages as it takes, however many are due and whatever the
statistics say. They always lag: ANALYZE saw next polls in the future, then a backlog came due
(after a vendor outage, or a campaign's first polls). A planner trusting them expected a few due
messages and fetched and sorted every one of them to take the first 200."""
from __future__ import annotations

from tests.plan_support import analyzed, most_rows_read, rolled_back
from tracker.db.queries import polling as q

CLAIM = 200
DUE = 20_000


async def stale_statistics(conn, vendor: str) -> None:
    """60,000 messages, a few due when ANALYZE looks, then DUE of `vendor`'s come due."""
    await conn.execute("ALTER TABLE tracker.messages SET (autovacuum_enabled = false)")
    await conn.execute("""
        INSERT INTO tracker.messages (vendor, vendor_ref, next_poll_at)
        SELECT (ARRAY['sparksender', 'skycore', $1])[1 + g % 3], 'r' || g,
               now() - interval '2 seconds' + g * interval '10 ms'
        FROM generate_series(1, 3 * $2::int) g""", vendor, DUE)
    await conn.execute("ANALYZE tracker.messages")
    await conn.execute("""
        UPDATE tracker.messages SET next_poll_at = now() - interval '1 minute' + random() * interval '50 seconds'
        WHERE vendor = $1""", vendor)


async def rows_read(conn, sql: str, vendor: str) -> tuple[int, list[str]]:
    """The claim run under EXPLAIN ANALYZE, then rolled back: the most rows any scan of
    tracker.messages returned, and the plan's node types."""
    async with rolled_back(conn):
        plan = await analyzed(conn, sql, vendor, CLAIM, "test", 30)
        claimed = await conn.fetchval("SELECT count(*) FROM tracker.messages WHERE lease_owner = 'test'")
    assert claimed == CLAIM
    return most_rows_read(plan, "messages"), [n["Node Type"] for n in plan]


async def test_a_claim_reads_its_size_not_the_backlog(pool):
    async with pool.acquire() as conn:
        await stale_statistics(conn, "engagespark")
        read, types = await rows_read(conn, q.CLAIM_DUE, "engagespark")
    assert read <= CLAIM, (read, types)
    assert "Sort" not in types


async def test_a_batch_claim_reads_its_size_not_the_backlog(pool):
    async with pool.acquire() as conn:
        await stale_statistics(conn, "sparrow")
        read, types = await rows_read(conn, q.CLAIM_DUE_BATCHES, "sparrow")
    assert read <= CLAIM, (read, types)
