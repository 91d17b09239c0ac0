"""Vendor limits hold for the whole deployment, not per replica (issue #11): two replicas
together send no more than the configured rate, and each runs its share of the concurrency."""
from __future__ import annotations

import asyncio
import time

import orjson

from tests.polling_support import poller_on
from tracker.adapters.base import HttpRequest, HttpResponse
from tracker.config_types import Config, DatabaseConfig, VendorConfig
from tracker.poller.client import VendorClient
from tracker.poller.shared_limits import SharedRate, Slots, share
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


async def test_each_replica_runs_its_share_of_the_concurrency(pool):
    vendors = {v: VendorConfig(v, enabled=(v == "sparksender"), base_url="http://x.test",
                               user_id="u", api_key="k", concurrency=5)
               for v in ("sparksender", "engagespark", "skycore", "sparrow")}
    cfg = Config(database=DatabaseConfig(), vendors=vendors)
    first, second = poller_on(cfg, pool), poller_on(cfg, pool)
    first.workers["sparksender"] = first.worker("sparksender")
    second.workers["sparksender"] = second.worker("sparksender")
    try:
        await first.flush_health()
        assert first.workers["sparksender"].slots.limit == 5  # alone: all of it
        await second.flush_health()
        await first.flush_health()
        assert [p.workers["sparksender"].slots.limit for p in (first, second)] == [3, 3]
    finally:
        for p in (first, second):
            await p.workers["sparksender"].close()


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
    assert (share(5, 2), share(5, 1), share(1, 3), share(4, 0)) == (3, 5, 1, 4)
