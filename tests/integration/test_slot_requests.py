"""A concurrency slot is one request at the vendor, not one poll: Sparrow's poll makes two
report calls, which went out together under one slot (two replicas with concurrency 2 had four
requests at the vendor at once, and the second of a pair waited for a connection past the gate,
so it could start after the replica's slots had lapsed)."""
from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime, timezone

from aiohttp import web

from tests.integration.test_poller_in_process import config
from tests.polling_support import poller_on
from tracker.adapters.base import MessageRef
from tracker.poller.outcomes import Claimed

V = "sparrow"


class Vendor:
    """Answers every request after `delay_s` (a slow vendor), counting requests in flight."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s, self.in_flight, self.most = delay_s, 0, 0

    async def handle(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)  # the vendor's own latency
        finally:
            self.in_flight -= 1
        return web.json_response({"data": []})

    async def start(self) -> "Vendor":
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self


def claimed(i: int) -> Claimed:
    now = datetime.now(timezone.utc)
    return Claimed(i, MessageRef(f"batch-{i}", f"97798000000{i}", now),
                   (f"batch-{i}", f"97798000000{i}"), 0, now, None)


def replica(pool, port: int):
    cfg = config()
    vendor = dataclasses.replace(cfg.vendors[V], base_url=f"http://127.0.0.1:{port}",
                                 concurrency=2, request_timeout_s=3.0)
    poller = poller_on(dataclasses.replace(cfg, vendors={**cfg.vendors, V: vendor}), pool)
    worker = poller.take_on(V)
    worker.tokens.token, worker.tokens.refresh_at = "tok", datetime(2100, 1, 1, tzinfo=timezone.utc)
    worker.client.shared = None  # the deployment's rate is not under test here
    return poller, worker


async def test_two_replicas_never_have_more_requests_at_the_vendor_than_its_concurrency(pool):
    vendor = await Vendor(0.3).start()
    (a, wa), (b, wb) = replica(pool, vendor.port), replica(pool, vendor.port)
    try:
        for _ in range(3):  # until each holds its part of the 2 slots
            for p in (a, b):
                await p.flush_health()
                await p.leases.flush()
        assert (wa.slots.allowed(), wb.slots.allowed()) == (1, 1)
        await asyncio.gather(wa.poll([claimed(1)]), wb.poll([claimed(2)]))
        assert vendor.most == 2  # 4 when a poll's two calls went out together
    finally:
        await vendor.runner.cleanup()
        for w in (wa, wb):
            await w.close()
