"""The deployment's rate limit lives in PostgreSQL (tracker.poller.shared_limits): when taking a
token fails because the database is away, the messages of that poll are handed back unpolled
(the vendor not blamed) and the claim's other answers are written. Real PostgreSQL; the
database unreachable for one token is a pool on a port nothing listens on."""
from __future__ import annotations

import asyncpg

from tests.integration.test_poller_in_process import Vendors, config, make_messages, messages
from tests.polling_support import poller_on
from tracker.poller.clock import SYSTEM_CLOCK, ManualClock
from tracker.poller.shared_limits import SharedRate
from tracker.poller.transport import MockTransport


async def test_a_rate_token_lost_to_a_database_outage_hands_its_message_back(pool):
    clock = ManualClock()
    vendors = Vendors(clock)
    cfg = config(rate_limit_per_s=10.0, concurrency=2)
    await make_messages(pool, cfg, "sparksender", 6)
    away = await asyncpg.create_pool("postgresql://tracker@127.0.0.1:1/none", min_size=0, max_size=1)
    asked = []

    def pool_for_tokens():  # the third token's query finds the database away
        asked.append(1)
        return away if len(asked) == 3 else pool

    w = poller_on(cfg, pool, clock=clock, transport=lambda _: MockTransport(vendors)).worker("sparksender")
    # The database's bucket fills in real time: waited for on the ManualClock, it ran that clock
    # past the claim's lease (and a claim sends nothing then)
    w.client.shared = SharedRate(cfg.vendors["sparksender"], pool_for_tokens, SYSTEM_CLOCK)
    try:
        assert await w.tick() == 0.0  # written, not raised (which lost the claim's answers)
        assert w.health.stats.failed == 0 and not w.health.is_open  # the vendor is not blamed
        assert w.unwritten == []
    finally:
        await w.close()
        await away.close()
    rows = await messages(pool, "sparksender")
    assert len(asked) >= 3 and len(vendors.status_calls("sparksender.test")) == 5
    assert sorted((r["state"], r["poll_count"]) for r in rows) == [("delivered", 1)] * 5 + [("submitted", 0)]
    assert all(r["lease_owner"] is None for r in rows)  # none left leased


async def test_a_list_walk_without_its_rate_token_hands_the_claim_back(pool):
    clock = ManualClock()
    vendors = Vendors(clock)
    cfg = config(rate_limit_per_s=10.0, list_poll_min=3)
    await make_messages(pool, cfg, "engagespark", 4)
    away = await asyncpg.create_pool("postgresql://tracker@127.0.0.1:1/none", min_size=0, max_size=1)
    w = poller_on(cfg, pool, clock=clock, transport=lambda _: MockTransport(vendors)).worker("engagespark")
    w.client.shared = SharedRate(cfg.vendors["engagespark"], lambda: away, clock)  # the database away
    try:
        assert await w.tick() == 0.0
        assert w.health.stats.failed == 0 and w.unwritten == [] and vendors.log == []
    finally:
        await w.close()
        await away.close()
    rows = await messages(pool, "engagespark")
    assert [(r["state"], r["poll_count"], r["lease_owner"]) for r in rows] == [("submitted", 0, None)] * 4
