"""A sink's reader lease (tracker.sinks.reader, queries TAKE_SINK_READER / DROP_SINK_READER): one
replica reads a sink's outbox at a time. Another's live lease is neither taken nor dropped: a
replica that stops or loses its broker drops its own only (dropping the holder's would let two
readers send every event twice); an expired one is taken over (a replica killed mid-batch)."""
from __future__ import annotations

from tracker.db import queries as q


async def test_a_lease_is_taken_only_when_free_or_expired_and_dropped_only_by_its_holder(pool):
    await pool.execute(q.REGISTER_SINKS, ["hook"], ["webhook"])

    async def holder() -> str | None:
        return await pool.fetchval("SELECT reader FROM tracker.sinks WHERE name = 'hook'")

    assert (await pool.fetchrow(q.TAKE_SINK_READER, "hook", "replica-a", 60.0))["ours"]
    assert not (await pool.fetchrow(q.TAKE_SINK_READER, "hook", "replica-b", 60.0))["ours"]
    await pool.execute(q.DROP_SINK_READER, "hook", "replica-b")  # b stops: a's lease stays
    assert await holder() == "replica-a"
    assert (await pool.fetchrow(q.TAKE_SINK_READER, "hook", "replica-a", 60.0))["ours"]  # renewed
    await pool.execute("UPDATE tracker.sinks SET reader_until = now() - interval '1 s'")  # a died
    assert (await pool.fetchrow(q.TAKE_SINK_READER, "hook", "replica-b", 60.0))["ours"]
    assert await holder() == "replica-b"
    await pool.execute(q.DROP_SINK_READER, "hook", "replica-b")
    assert await holder() is None
