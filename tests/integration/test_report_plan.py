"""A batch of reports finds its messages by one index probe each, however small the batch and the
table. The planner, reading 100 rows for any jsonb_array_elements(), once turned the lookup into
a hash join over a sequential scan of every message: 1.9 ms for a batch of 4 on 10,000 messages
(auto_explain during bench/events.py at 1,000 postbacks/s). The postback path plans once per
connection, so a plan made while the table was small stayed."""
from __future__ import annotations

from datetime import datetime, timezone

import orjson

from tests.plan_support import analyzed, most_rows_read, rolled_back
from tracker.db.queries import reducer as q

MESSAGES = 10_000
REPORTS = 4


def report(i: int, postback_id: int | None = None) -> list:
    """An observation row as the reducer sends it (tracker.db.rows), about message 'r<i>'."""
    now = datetime.now(timezone.utc).isoformat()
    return ["skycore", f"r{i}", "", "delivered", "DELIVRD", None, now, None, None, None,
            None, now, postback_id, None]


async def most_messages_read(conn, sql: str, *args) -> int:
    """`sql` run under EXPLAIN ANALYZE, then rolled back: the most rows any node reading
    tracker.messages returned."""
    async with rolled_back(conn):
        return most_rows_read(await analyzed(conn, sql, *args), "messages")


async def messages(conn) -> None:
    await conn.execute("""
        INSERT INTO tracker.messages (vendor, vendor_ref, state)
        SELECT 'skycore', 'r' || g, 'sent' FROM generate_series(1, $1::int) g""", MESSAGES)
    await conn.execute("ANALYZE tracker.messages")


async def test_reports_find_their_messages_by_index(pool):
    async with pool.acquire() as conn:
        await messages(conn)
        rows = orjson.dumps([report(i) for i in range(1, REPORTS + 1)]).decode()
        read = await most_messages_read(conn, q.INSERT_OBSERVATIONS, rows, "postback")
    assert read <= REPORTS, read


async def test_claimed_postbacks_find_their_messages_by_index(pool):
    async with pool.acquire() as conn:
        await messages(conn)
        ids = await conn.fetchval("""
            WITH p AS (INSERT INTO tracker.postbacks (vendor, method, body, received_at)
                       SELECT 'skycore', 'POST', '{}', now() FROM generate_series(1, $1::int)
                       RETURNING id)
            SELECT array_agg(id ORDER BY id) FROM p""", REPORTS)
        rows = orjson.dumps([report(i, pid) for i, pid in enumerate(ids, 1)]).decode()
        read = await most_messages_read(conn, q.CLAIM_AND_INSERT_OBSERVATIONS, rows, "postback", ids)
    assert read <= REPORTS, read


async def test_a_new_messages_orphans_are_looked_up_by_key_even_on_statistics_older_than_they_are(pool):
    """A campaign's postbacks before its submission rows: orphans the table's statistics do not
    know of (taken before they came; on a large table autovacuum analyzes again only after a
    tenth of it changed). The intake's look took the orphan sweep's index (same predicate,
    smaller), reading every orphan for each new message: intake fell from 14,700 rows a second
    to 67 (sql/034)."""
    async with pool.acquire() as conn:
        await conn.execute("""
            INSERT INTO tracker.messages (vendor, vendor_ref, state)
            SELECT 'skycore', 'old' || g, 'sent' FROM generate_series(1, 30000) g;
            INSERT INTO tracker.observations (message_id, vendor, vendor_ref, source, state, code)
            SELECT id, vendor, vendor_ref, 'postback', 'sent', 'N201' FROM tracker.messages;
            ANALYZE tracker.observations;
            INSERT INTO tracker.observations (vendor, vendor_ref, source, state, code)
            SELECT 'skycore', 'camp' || g, 'postback', 'delivered', 'N202' FROM generate_series(1, 10000) g;
            INSERT INTO tracker.messages (vendor, vendor_ref, state)
            SELECT 'skycore', 'camp' || g, 'submitted' FROM generate_series(1, 5) g""")
        new = [r[0] for r in await conn.fetch("SELECT id FROM tracker.messages WHERE vendor_ref LIKE 'camp%'")]
        async with rolled_back(conn):
            plan = await analyzed(conn, q.ADOPT_ORPHANS_OF_MESSAGES + q.ADOPT_WAITING, new)
        async with rolled_back(conn):  # and the sweep still reads recent orphans by their index
            sweep = await analyzed(conn, q.ADOPT_RECENT_ORPHANS + q.ADOPT_WAITING, 600.0)
    assert "observations_orphans_recent" in {n.get("Index Name") for n in sweep}
    probes = [n for n in plan if n.get("Relation Name") == "observations" and "Index Name" in n]
    assert {n["Index Name"] for n in probes} >= {"observations_orphans"}
    assert "observations_orphans_recent" not in {n["Index Name"] for n in probes}
    assert most_rows_read(plan, "observations") <= 5 * 2  # one probe a message, not every orphan
