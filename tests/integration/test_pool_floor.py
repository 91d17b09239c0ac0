"""The smallest pool the configuration accepts (`database.pool_max` = MIN_POOL) runs every
component at once: the connections kept for the daemon's life (the intake listener, the
publisher, a sink's listener) leave room for the loops that take one in turn (intake, the sink,
the sweeps). With one connection fewer, a loop waits for the pool for ever."""
from __future__ import annotations

import dataclasses

import aiohttp

from tests.postbacks_support import running
from tests.sinks_support import (Receiver, all_published, config, make_messages, new_secret, report,
                                 wait_until)
from tracker.config import MIN_POOL
from tracker.core.states import State


async def test_the_smallest_pool_takes_in_publishes_and_delivers(db_dsn, pool):
    secret = new_secret()
    receiver = await Receiver([secret]).start()
    try:
        cfg = config(db_dsn, webhooks={"crm": {"url": receiver.url, "secrets": (secret,),
                                               "timeout_s": 2.0, "concurrency": 4}})
        cfg = dataclasses.replace(cfg, database=dataclasses.replace(cfg.database, pool_min=1,
                                                                    pool_max=MIN_POOL))
        refs = [f"floor{i}" for i in range(20)]
        await make_messages(pool, refs)
        async with running(cfg) as (tracker, base):
            assert tracker.pool.get_max_size() == MIN_POOL
            await report(pool, refs, State.delivered)  # 20 transitions, from outside the daemon
            await pool.execute("INSERT INTO tracker.submissions (vendor, vendor_ref, recipient)"
                               " VALUES ('sparksender', 'floor-new', '15550000001')")
            await wait_until(lambda: _count(pool, "SELECT count(*) FROM tracker.submissions"
                                                  " WHERE processed_at IS NULL", 0), 20,
                             "the submission taken in")
            await wait_until(lambda: all_published(pool), 20, "every event published")
            total = await pool.fetchval("SELECT count(*) FROM tracker.transitions")
            assert total >= len(refs)
            await wait_until(lambda: len(receiver.delivered_ids()) == total, 20, "every event delivered")
            async with aiohttp.ClientSession() as http, http.get(f"{base}/readyz") as r:
                assert r.status == 200, await r.text()
    finally:
        await receiver.stop()


async def _count(pool, sql: str, expected: int) -> bool:
    return await pool.fetchval(sql) == expected
