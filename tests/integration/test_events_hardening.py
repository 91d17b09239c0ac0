"""Hostile input to the consumer contract (sql/007): bounded consumer names and arguments, and
tracker.read_events inside a READ ONLY transaction."""
import asyncpg
import pytest

from tracker.adapters.base import Observation
from tracker.core.states import State
from tracker.db import reducer


def obs(ref, state):
    return Observation(vendor="sparksender", vendor_ref=ref, recipient=None, state=state, code=state.name)


async def one_event(conn, ref="h1", state=State.sent) -> None:
    """An event, published as the daemon's publisher does (a read publishes nothing: sql/022)."""
    await conn.execute("INSERT INTO tracker.messages (vendor, vendor_ref) VALUES ('sparksender', $1)", ref)
    await reducer.apply(conn, "poll", [obs(ref, state)])
    await conn.execute("SELECT tracker.publish_waiting()")


async def read(conn, consumer, n=100):
    return await conn.fetch("SELECT * FROM tracker.read_events($1, $2)", consumer, n)


@pytest.mark.parametrize("name", ["x" * 10_000, "x" * 201, "", None],
                         ids=["10000 chars", "201 chars", "empty", "NULL"])
async def test_a_bad_consumer_name_is_refused_clearly(pool, name):
    async with pool.acquire() as c:
        await one_event(c)
        event_id = (await read(c, "fine"))[0]["event_id"]
        with pytest.raises(asyncpg.InvalidParameterValueError, match="consumer name must be 1 to 200"):
            await c.execute("SELECT tracker.ack_events($1, $2)", name, event_id)
        with pytest.raises(asyncpg.InvalidParameterValueError, match="consumer name must be 1 to 200"):
            await read(c, name)
        assert await c.fetchval("SELECT count(*) FROM tracker.consumers") == 0


async def test_the_longest_allowed_name_works(pool):
    name = "é" * 200  # characters, not bytes
    async with pool.acquire() as c:
        await one_event(c)
        [event] = await read(c, name)
        await c.execute("SELECT tracker.ack_events($1, $2)", name, event["event_id"])
        assert await read(c, name) == []


async def test_a_long_name_written_directly_is_refused_too(pool):
    async with pool.acquire() as c:
        with pytest.raises(asyncpg.CheckViolationError):
            await c.execute("INSERT INTO tracker.consumers (consumer) VALUES ($1)", "y" * 201)


@pytest.mark.parametrize("max_events", [-1, None])
async def test_max_events_must_be_zero_or_more(pool, max_events):
    async with pool.acquire() as c:
        await one_event(c)
        with pytest.raises(asyncpg.InvalidParameterValueError, match="max_events must be 0 or more"):
            await read(c, "k", max_events)
        assert await read(c, "k", 0) == []


async def test_read_events_in_a_read_only_transaction(pool):
    async with pool.acquire() as c:
        await one_event(c, "ro1")
        await one_event(c, "ro2")
        async with c.transaction(readonly=True):
            seen = await read(c, "ro")  # no error: a read writes nothing
        assert [e["vendor_ref"] for e in seen] == ["ro1", "ro2"]
        assert [e["vendor_ref"] for e in await read(c, "ro")] == ["ro1", "ro2"]


async def test_read_events_on_a_read_only_session(pool):
    async with pool.acquire() as c:
        await one_event(c, "s1")
        await c.execute("SET default_transaction_read_only = on")
        try:
            assert [e["vendor_ref"] for e in await read(c, "fresh")] == ["s1"]  # no error
        finally:
            await c.execute("RESET default_transaction_read_only")
        assert [e["vendor_ref"] for e in await read(c, "fresh")] == ["s1"]
