"""tracker.read_events and tracker.read_sink_batch inside REPEATABLE READ and SERIALIZABLE
transactions (sql/018): when the daemon has published since the transaction's snapshot they do
not fail with a serialization error; they return what is published as of the snapshot, and the
events published later come at the next read, none skipped. And a read publishes nothing, in any
isolation (sql/022): a position it gave in its own transaction was taken back when that
transaction rolled back, and a later ack passed over an event the consumer never read."""
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
        # The next read returns what is published, in order; e3 once the daemon publishes it.
        assert [r[0] for r in await consumer.fetch(READS[read])] == ["e1", "e2"]
        async with pool.acquire() as daemon:
            assert await events.publish_on(daemon) == 1
        assert [r[0] for r in await consumer.fetch(READS[read])] == ["e1", "e2", "e3"]
    finally:
        await consumer.close()


@pytest.mark.parametrize("read", list(READS))
async def test_a_read_publishes_nothing_so_a_rolled_back_read_takes_no_position_back(pool, db_dsn, read):
    # Events commit out of id order: c2 published first, then c1 commits. A consumer read in a
    # transaction that it rolled back; had the read published, c2's position (read, handled)
    # would have been taken back and given to c1, and an ack of c2 would pass over c1.
    async with pool.acquire() as conn:
        await one_event(conn, "c2")
        await events.publish_on(conn)
        await one_event(conn, "c1")  # committed, not yet published
        tx = conn.transaction(isolation="read_committed")
        await tx.start()
        assert [r[0] for r in await conn.fetch(READS[read])] == ["c2"]
        assert await conn.fetchval("SELECT last_pos FROM tracker.event_publisher") == 1
        await tx.rollback()
        assert await events.publish_on(conn) == 1  # the daemon's publisher: c1 after c2
        assert [r[0] for r in await conn.fetch(READS[read])] == ["c2", "c1"]


async def test_a_publication_commits_durably_whatever_the_session_says(pool):
    # Committed without its WAL flush, a publication a reader had seen could be lost in a crash
    # and made again over another set of events: the positions the reader saw, taken back.
    async with pool.acquire() as conn:
        await one_event(conn, "d1")
        await conn.execute("SET synchronous_commit = off")
        try:
            async with conn.transaction():
                assert await conn.fetchval("SELECT tracker.publish_events()") == 1
                assert await conn.fetchval("SELECT current_setting('synchronous_commit')") == "on"
            async with conn.transaction():  # nothing to publish: the session's own setting stays
                assert await conn.fetchval("SELECT tracker.publish_events()") == 0
                assert await conn.fetchval("SELECT current_setting('synchronous_commit')") == "off"
        finally:
            await conn.execute("RESET synchronous_commit")
