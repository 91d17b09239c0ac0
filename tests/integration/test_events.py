"""The consumer contract: tracker.read_events / tracker.ack_events."""
import asyncio
import random

import asyncpg
import pytest

from tracker.adapters.base import Observation
from tracker.core.states import State
from tracker.db import reducer


def obs(ref, state):
    return Observation(vendor="sparksender", vendor_ref=ref, recipient=None, state=state, code=state.name)


async def read(conn, consumer, n=100):
    """The daemon's publisher has run (its statement, committed), then the consumer reads: a read
    publishes nothing itself (sql/022)."""
    await conn.execute("SELECT tracker.publish_waiting()")
    return await conn.fetch("SELECT * FROM tracker.read_events($1, $2)", consumer, n)


async def test_out_of_order_commit_is_not_skipped(pool, db_dsn):
    async with pool.acquire() as c:
        await c.execute("INSERT INTO tracker.messages (vendor, vendor_ref) VALUES ('sparksender','a'),('sparksender','b')")
    a = await asyncpg.connect(db_dsn)
    b = await asyncpg.connect(db_dsn)
    consumer = await asyncpg.connect(db_dsn)
    try:
        ta = a.transaction(); await ta.start()
        ra = await reducer.apply(a, "poll", [obs("a", State.sent)])  # takes the lower event id
        tb = b.transaction(); await tb.start()
        rb = await reducer.apply(b, "poll", [obs("b", State.sent)])
        await tb.commit()  # the higher id commits first
        q = ("SELECT t.event_id FROM tracker.transitions t JOIN tracker.messages m"
             " ON m.id = t.message_id WHERE m.vendor_ref = $1")
        low, high = await a.fetchval(q, "a"), await b.fetchval(q, "b")
        assert low < high and ra.transitions and rb.transitions

        first = await read(consumer, "c1")
        assert [e["event_id"] for e in first] == [high]
        await consumer.execute("SELECT tracker.ack_events('c1', $1)", high)
        assert await read(consumer, "c1") == []

        await ta.commit()
        second = await read(consumer, "c1")
        assert [e["event_id"] for e in second] == [low]
        assert second[0]["vendor_ref"] == "a" and second[0]["to_state"] == "sent"
        await consumer.execute("SELECT tracker.ack_events('c1', $1)", low)
        assert await read(consumer, "c1") == []
        # Another consumer starts from the beginning and sees both, in delivery order.
        assert [e["event_id"] for e in await read(consumer, "c2")] == [high, low]
    finally:
        for c in (a, b, consumer):
            await c.close()


async def test_read_does_not_move_and_ack_never_goes_back(pool):
    async with pool.acquire() as c:
        await c.execute("INSERT INTO tracker.messages (vendor, vendor_ref) VALUES ('sparksender','x')")
        await reducer.apply(c, "poll", [obs("x", State.accepted)])
        await reducer.apply(c, "poll", [obs("x", State.delivered)])
        e1 = await read(c, "k")
        assert e1 == await read(c, "k")  # reading moves nothing
        assert [(e["from_state"], e["to_state"]) for e in e1] == [("submitted", "accepted"), ("accepted", "delivered")]
        await c.execute("SELECT tracker.ack_events('k', $1)", e1[1]["event_id"])
        await c.execute("SELECT tracker.ack_events('k', $1)", e1[0]["event_id"])  # older: ignored
        assert await read(c, "k") == []
        with pytest.raises(asyncpg.InvalidParameterValueError):
            await c.execute("SELECT tracker.ack_events('k', 999999)")


async def test_concurrent_writers_consumer_gets_everything_once_in_order(pool, db_dsn):
    refs = [f"r{i}" for i in range(200)]
    async with pool.acquire() as c:
        await c.execute("INSERT INTO tracker.messages (vendor, vendor_ref) SELECT 'sparksender', unnest($1::text[])", refs)
    rnd = random.Random(3)
    batches = [[obs(rnd.choice(refs), rnd.choice(list(State))) for _ in range(20)] for _ in range(150)]
    done = asyncio.Event()

    async def writer(bs):
        async with pool.acquire() as c:
            for b in bs:
                await reducer.apply(c, "poll", b)
                await asyncio.sleep(0)

    received = []

    async def consume():
        conn = await asyncpg.connect(db_dsn)
        try:
            while True:
                finished = done.is_set()
                events = await read(conn, "stream", 50)
                if events:
                    received.extend(events)
                    await conn.execute("SELECT tracker.ack_events('stream', $1)", events[-1]["event_id"])
                elif finished:
                    return
                else:
                    await asyncio.sleep(0.005)
        finally:
            await conn.close()

    consumer = asyncio.create_task(consume())
    await asyncio.gather(*(writer(batches[i::5]) for i in range(5)))
    done.set()
    await consumer
    async with pool.acquire() as c:
        all_ids = [r["event_id"] for r in await c.fetch("SELECT event_id FROM tracker.transitions")]
    got = [e["event_id"] for e in received]
    assert len(got) == len(set(got)), "an acknowledged event was delivered twice"
    assert sorted(got) == sorted(all_ids), "an event was skipped"
    per_message = {}
    for e in received:
        prev = per_message.get(e["message_id"], "submitted")
        assert e["from_state"] == prev, "events of one message out of order"
        per_message[e["message_id"]] = e["to_state"]
