"""tracker.read_events and tracker.read_sink_batch inside REPEATABLE READ and SERIALIZABLE
transactions (sql/018): when the daemon has published since the transaction's snapshot they no
longer fail with a serialization error; they return what is published as of the snapshot, and
the events published later come at the next read, none skipped."""
import asyncpg
import pytest

from tracker import events
from tracker.adapters.base import Observation
from tracker.core.states import State
from tracker.db import reducer

READS = {
    "read_events": "SELECT vendor_ref FROM tracker.read_events('rr', 100)",
    "read_sink_batch": "SELECT vendor_ref FROM tracker.read_sink_batch('rr', 0, 100)",
}


async def one_event(conn, ref: str) -> None:
    await conn.execute("INSERT INTO tracker.messages (vendor, vendor_ref) VALUES ('sparksender', $1)", ref)
    await reducer.apply(conn, "poll", [Observation(vendor="sparksender", vendor_ref=ref, recipient=None,
                                                    state=State.sent, code="sent")])


@pytest.mark.parametrize("isolation", ["repeatable_read", "serializable"])
@pytest.mark.parametrize("read", list(READS))
async def test_a_snapshot_reader_reads_what_was_published_as_of_its_snapshot(pool, db_dsn, isolation, read):
    async with pool.acquire() as daemon:
        await one_event(daemon, "e1")
        assert await events.publish_on(daemon) == 1  # the daemon's publisher
    consumer = await asyncpg.connect(db_dsn)
    try:
        tx = consumer.transaction(isolation=isolation)
        await tx.start()
        await consumer.fetchval("SELECT count(*) FROM tracker.consumers")  # the snapshot is taken
        async with pool.acquire() as daemon:
            await one_event(daemon, "e2")
            assert await events.publish_on(daemon) == 1  # published after the snapshot
            await one_event(daemon, "e3")  # committed, not published yet
        # Before sql/018: SerializationError "could not serialize access due to concurrent update".
        seen = [r[0] for r in await consumer.fetch(READS[read])]
        assert seen == ["e1"]
        assert [r[0] for r in await consumer.fetch(READS[read])] == ["e1"]  # and again, still no error
        await tx.commit()
        # In READ COMMITTED the next read publishes e3 and returns everything, in order.
        assert [r[0] for r in await consumer.fetch(READS[read])] == ["e1", "e2", "e3"]
    finally:
        await consumer.close()


@pytest.mark.parametrize("read", list(READS))
async def test_a_read_committed_read_still_publishes(pool, read):
    async with pool.acquire() as conn:
        await one_event(conn, "c1")  # committed, not published
        async with conn.transaction(isolation="read_committed"):
            assert [r[0] for r in await conn.fetch(READS[read])] == ["c1"]
        assert await conn.fetchval("SELECT last_pos FROM tracker.event_publisher") == 1
