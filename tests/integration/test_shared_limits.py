"""Vendor limits hold for the whole deployment, not per replica (issue #11): two replicas
together send no more than the configured rate, nor more requests at once than its concurrency
(slots in PostgreSQL; their rules in tests/integration/test_slot_leases.py)."""
from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from tests.integration.test_poller_in_process import Vendors, config
from tests.polling_support import poller_on
from tracker.adapters.base import HttpRequest, HttpResponse
from tracker.config_types import Config, DatabaseConfig, VendorConfig
from tracker.poller.client import VendorClient
from tracker.poller.clock import ManualClock
from tracker.poller.shared_limits import NoSlot, SharedRate, Slots, fair_target
from tracker.poller.slot_leases import RENEW_EVERY_S, SlotLeases
from tracker.poller.transport import MockTransport


async def test_two_replicas_together_keep_to_the_rate(pool):
    rate, per_replica = 40.0, 60
    times: list[float] = []
    cfg = VendorConfig("sparksender", rate_limit_per_s=rate)

    def replica() -> VendorClient:
        client = VendorClient(cfg, MockTransport(lambda req: times.append(time.monotonic())
                                                 or HttpResponse(200, {}, orjson.dumps({}))))
        client.shared = SharedRate(cfg, lambda: pool)
        return client

    a, b = replica(), replica()
    await asyncio.gather(*(c.fetch(HttpRequest("GET", "http://x.test/"))
                           for c in (a, b) for _ in range(per_replica)))
    times.sort()
    worst = max(sum(1 for u in times[i:] if u < t + 1.0) for i, t in enumerate(times))
    # Alone, each replica's own limiter would allow `rate`: together, twice that.
    assert worst <= rate * 1.1 + rate * 0.1, worst
    assert times[-1] - times[0] >= (2 * per_replica - rate * 0.2) / rate - 0.1


async def test_two_replicas_together_run_the_concurrency_no_more(pool):
    """Concurrency 5 and two replicas: together 5 at most at every step, not 3 + 3."""
    vendors = {v: VendorConfig(v, enabled=(v == "sparksender"), base_url="http://x.test",
                               user_id="u", api_key="k", concurrency=5)
               for v in ("sparksender", "engagespark", "skycore", "sparrow")}
    cfg = Config(database=DatabaseConfig(), vendors=vendors)
    first, second = poller_on(cfg, pool), poller_on(cfg, pool)
    a, b = first.take_on("sparksender").slots, second.take_on("sparksender").slots
    ranks = sorted([first.owner, second.owner])
    want = [fair_target(5, 2, ranks.index(p.owner)) for p in (first, second)]
    try:
        assert (a.allowed(), b.allowed()) == (0, 0)  # nothing held yet: nothing may go
        await first.flush_health()  # (the poll counters say that it polls)
        await first.leases.flush()
        assert a.allowed() == 5  # alone: all of it
        steps = [second, first, first, second]  # first gives back at the renewal after it shrank
        for p in steps:
            await p.flush_health()
            await p.leases.flush()
            assert a.allowed() + b.allowed() <= 5
            assert await held(pool, first.owner) >= a.allowed()
            assert await held(pool, second.owner) >= b.allowed()
        assert [a.allowed(), b.allowed()] == want and sum(want) == 5
    finally:
        for p in (first, second):
            await p.workers["sparksender"].close()


async def held(pool, owner: str) -> int:
    async with pool.acquire() as conn:
        return await conn.fetchval("SELECT count(*) FROM tracker.vendor_slots"
                                   " WHERE replica = $1 AND lease_until > now()", owner)


async def test_slots_resize_while_held():
    slots = Slots(2)
    async with slots, slots:
        waiting = asyncio.create_task(slots.__aenter__())
        await asyncio.sleep(0)
        assert not waiting.done()  # both taken
        await slots.resize(3)
        await asyncio.wait_for(waiting, 1)
    assert slots.used == 1
    await slots.__aexit__(None, None, None)


async def test_slots_at_zero_turn_callers_away_and_keep_those_in_flight():
    clock = ManualClock()
    slots = Slots(1, clock)
    await slots.resize(1, valid_until=10.0)  # a lease: 1 until the clock's 10 s
    async with slots:
        waiting = asyncio.create_task(slots.__aenter__())
        await asyncio.sleep(0)
        assert not waiting.done()
        await slots.resize(0)  # shrunk while one is in flight: it keeps its slot
        assert slots.used == 1 and not waiting.done()
    with pytest.raises(NoSlot):  # told once the one in flight ended: none to be had
        await asyncio.wait_for(waiting, 1)
    await slots.resize(2, valid_until=10.0)
    async with slots:
        assert slots.need() == 2
    clock.advance(10.0)  # the lease ended: 0, with nothing said
    assert slots.allowed() == 0 and slots.need() == 0
    with pytest.raises(NoSlot):
        await slots.__aenter__()


@pytest.mark.parametrize("concurrency", [1, 2, 3, 5])
async def test_the_database_computes_the_fair_target(pool, concurrency):
    clock = ManualClock()
    vendor = f"v{concurrency}"
    for n in range(1, 6):
        owners = [f"replica-{n}-{i}" for i in range(n)]
        async with pool.acquire() as conn:
            await conn.execute("DELETE FROM tracker.vendor_slots WHERE vendor = $1", vendor)
            await conn.execute("DELETE FROM tracker.poll_stats WHERE vendor = $1", vendor)
            await conn.executemany("INSERT INTO tracker.poll_stats (vendor, replica)"
                                   " VALUES ($1, $2)", [(vendor, o) for o in owners])
        cfg = VendorConfig(vendor, concurrency=concurrency)
        got = []
        for o in reversed(owners):  # the last in name order takes first: it takes no more
            leases = SlotLeases(o, lambda: pool, clock)
            leases.add(cfg, s := Slots(concurrency, clock))
            await leases.flush()
            got.insert(0, s.allowed())
        assert got == [fair_target(concurrency, n, i) for i in range(n)], (concurrency, n)


async def test_a_started_poller_renews_its_slots_on_its_own_and_gives_them_back_at_stop(pool):
    p = poller_on(config(concurrency=3), pool,
                  transport=lambda _: MockTransport(Vendors(ManualClock())))
    await p.start()
    try:
        assert "poll-slots" in p.supervisor.components
        assert {name: w.slots.allowed() for name, w in p.workers.items()} == {
            name: 3 for name in p.workers}
        renewals = []
        async with pool.acquire() as conn:
            for _ in range(int(4 * RENEW_EVERY_S / 0.05)):  # until the loop has renewed them
                renewals.append(await conn.fetchval(
                    "SELECT max(lease_until) FROM tracker.vendor_slots WHERE replica = $1", p.owner))
                if renewals[-1] > renewals[0]:
                    break
                await asyncio.sleep(0.05)
        assert renewals[-1] > renewals[0], "never renewed"
    finally:
        await p.stop()
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM tracker.vendor_slots"
                                   " WHERE replica IS NOT NULL") == 0
    assert all(w.slots.allowed() == 0 for w in p.workers.values())
