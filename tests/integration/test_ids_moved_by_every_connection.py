"""Every connection of the daemon's moves the ids past the clock (tracker.db.sessions.ids_past_now),
the main pool's too, one connection at a time (reviewer B, session 28: neither was tested)."""
from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.postbacks_support import config_for, running
from tracker.db import sessions


async def test_the_moves_wait_for_one_another(db_dsn):
    holder = await asyncpg.connect(db_dsn)
    other = await asyncpg.connect(db_dsn)
    try:
        async with holder.transaction():
            await holder.execute("SELECT pg_advisory_xact_lock(hashtext('tracker.ids'))")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(sessions.ids_past_now(other), 0.5)
    finally:
        await other.close()
        await holder.close()


async def test_the_daemons_main_pool_moves_the_ids_at_each_new_connection(db_dsn):
    # Intake and the publisher (they insert messages, number events) use the main pool.
    async with running(config_for(db_dsn)) as (tr, _):
        other = await asyncpg.connect(db_dsn)
        try:
            reached = await other.fetchval("SELECT nextval('tracker.messages_id_seq')")
            await other.execute("SELECT setval('tracker.messages_id_seq', 1)")
        finally:
            await other.close()
        await tr.pool.expire_connections()
        async with tr.pool.acquire() as conn:
            assert await conn.fetchval("SELECT nextval('tracker.messages_id_seq')") > reached
