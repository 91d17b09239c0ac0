"""A consumer's read finds each event's message by its primary key, whatever the statistics say.
While tracker.transitions had none (a new deployment, the first minutes of a run, before
autoanalyze), the planner took a third of the table to lie after any cursor and joined the events
to a sequential scan of every message: each of a consumer's first five reads (PL/pgSQL plans
them with the values given) read all 10,000 messages to return 3 events (sql/015)."""
from __future__ import annotations

from tests.plan_support import rolled_back

MESSAGES = 10_000
EVENTS = 50
AFTER_CURSOR = 3
READS = 7  # the five plans made with the values given, then the generic one

MESSAGE_ROWS_READ = """
SELECT seq_tup_read + coalesce(idx_tup_fetch, 0) FROM pg_stat_xact_user_tables
WHERE schemaname = 'tracker' AND relname = 'messages'"""


async def outbox(conn) -> int:
    """MESSAGES messages (analyzed), EVENTS published events on a table with no statistics,
    the consumer 'c' and the sink 's' AFTER_CURSOR events behind; the position they are at."""
    await conn.execute("""
        INSERT INTO tracker.messages (vendor, vendor_ref, state)
        SELECT 'skycore', 'r' || g, 'sent' FROM generate_series(1, $1::int) g""", MESSAGES)
    await conn.execute("ANALYZE tracker.messages")
    await conn.execute("ALTER TABLE tracker.transitions SET (autovacuum_enabled = false)")
    await conn.execute("""
        INSERT INTO tracker.transitions (message_id, from_state, to_state, source, occurred_at)
        SELECT id, 'sent', 'delivered', 'postback', now() FROM tracker.messages
        ORDER BY id LIMIT $1""", EVENTS)
    await conn.execute("SELECT tracker.publish_events()")
    event_id, pos = await conn.fetchrow(
        "SELECT event_id, pos FROM tracker.transitions ORDER BY pos DESC OFFSET $1 LIMIT 1",
        AFTER_CURSOR)
    await conn.execute("SELECT tracker.ack_events('c', $1)", event_id)
    await conn.execute("INSERT INTO tracker.consumers (consumer, acked_pos) VALUES ('sink:s', $1)", pos)
    return pos


async def messages_read(conn, sql: str, *args) -> tuple[int, int]:
    """(events returned, rows of tracker.messages read: by sequential scans and through
    indexes) when `sql` ran in a transaction that was then rolled back."""
    async with rolled_back(conn):
        before = await conn.fetchval(MESSAGE_ROWS_READ)
        rows = await conn.fetch(sql, *args)
        return len(rows), await conn.fetchval(MESSAGE_ROWS_READ) - before


async def test_a_consumers_reads_probe_one_message_per_event(pool):
    async with pool.acquire() as conn:
        await outbox(conn)
        reads = [await messages_read(conn, "SELECT * FROM tracker.read_events('c', 1000)")
                 for _ in range(READS)]
    assert reads == [(AFTER_CURSOR, AFTER_CURSOR)] * READS, reads


async def test_a_webhook_sinks_reads_probe_one_message_per_event(pool):
    async with pool.acquire() as conn:
        pos = await outbox(conn)
        reads = [await messages_read(conn, "SELECT * FROM tracker.read_sink_batch('s', $1, 1000)", pos)
                 for _ in range(READS)]
    assert reads == [(AFTER_CURSOR, AFTER_CURSOR)] * READS, reads
