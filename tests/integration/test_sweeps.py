"""Long sweeps do not block the hot path (issue #11): a sweep over many messages commits chunk by
chunk, so polls' write-backs and postback applies never wait behind one long transaction."""
from __future__ import annotations

import asyncio

import asyncpg

from tests.postbacks_support import config_for, running
from tracker.db import reducer
from tracker.poller import engine


async def test_the_window_sweep_commits_each_chunk_and_holds_no_lock_between(db_dsn, monkeypatch):
    monkeypatch.setattr(engine, "WINDOW_BATCH", 100)
    first_done, go_on = asyncio.Event(), asyncio.Event()
    real_apply = reducer.apply
    chunks = 0

    async def apply(conn, source, observations, **kw):
        nonlocal chunks
        out = await real_apply(conn, source, observations, **kw)
        chunks += 1
        if chunks == 1:
            first_done.set()
            await go_on.wait()  # the sweep is still running: the first chunk must be done with
        return out

    monkeypatch.setattr(reducer, "apply", apply)
    async with running(config_for(db_dsn)) as (tr, _base):
        await tr.pool.execute(
            "INSERT INTO tracker.messages (vendor, vendor_ref, submitted_at, window_ends_at)"
            " SELECT 'skycore', 'w' || g, now() - interval '3 days', now() - interval '1 day'"
            " FROM generate_series(1, 250) g")
        sweep = asyncio.create_task(tr.exclusive("windows", engine.end_windows))
        await asyncio.wait_for(first_done.wait(), 10)
        other = await asyncpg.connect(db_dsn)
        try:
            await other.execute("SET lock_timeout = '200ms'")
            # Committed already: visible to another session, and not locked.
            done = await other.fetchval("SELECT count(*) FROM tracker.messages WHERE state = 'unknown'")
            assert done == 100
            async with other.transaction():
                await other.execute("SELECT 1 FROM tracker.messages WHERE state = 'unknown'"
                                    " FOR UPDATE")  # a postback's apply would take these locks
            # Only one replica runs it meanwhile.
            assert not await other.fetchval("SELECT pg_try_advisory_lock(hashtext('tracker.sweep.windows'))")
        finally:
            go_on.set()
            await sweep
            await other.close()
        assert await tr.pool.fetchval("SELECT count(*) FROM tracker.messages WHERE state = 'unknown'") == 250
        assert chunks == 3
        # The lock is given back when the sweep ends.
        async with tr.pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_try_advisory_lock(hashtext('tracker.sweep.windows'))")
            await conn.execute("SELECT pg_advisory_unlock(hashtext('tracker.sweep.windows'))")
