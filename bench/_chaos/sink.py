"""A webhook sink in every scenario's load (issue #13): the tracker pushes every transition to a
receiver here that verifies each delivery as a receiver would (standardwebhooks), now and then
answers 503 (so that retries are part of the run), and at the end every event must have come,
in order per message. Repeats are allowed (at least once), only with the same webhook-id."""
from __future__ import annotations

import asyncio
import base64
import random
import time

import asyncpg
from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

SECRET = "whsec_" + base64.b64encode(b"chaos-suite-webhook-secret-32b!!").decode()
# Answered 503: the sink retries on its schedule, and pauses (503 means "slow down"), so a
# receiver refusing often makes a slow sink by design; one in a hundred keeps retries in play.
REFUSE_SHARE = 0.01


def sink_config(url: str) -> dict:
    return {"sinks.webhooks.chaos": {"url": url, "secrets": [SECRET], "timeout_s": 2.0,
                                     "retry_schedule_s": [0.0, 0.5, 1.0, 2.0, 4.0, 8.0]}}


class Receiver:
    def __init__(self, seed: int) -> None:
        self.hook = Webhook(SECRET)
        self.rng = random.Random(seed)
        self.first: dict[int, tuple[int, str, str]] = {}  # event id -> (message, from, to), in arrival order
        self.deliveries = 0
        self.forged = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/hook", self.receive)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self.url

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            event = self.hook.verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.forged += 1
            return web.Response(status=400)
        if self.rng.random() < REFUSE_SHARE:
            return web.Response(status=503)
        self.deliveries += 1
        d = event["data"]
        if request.headers["webhook-id"] != str(d["event_id"]):
            self.forged += 1
        self.first.setdefault(d["event_id"], (d["message_id"], d["from_state"], d["to_state"]))
        return web.Response(status=204)

    async def caught_up(self, pool: asyncpg.Pool, timeout_s: float) -> list[int]:
        """Wait until every transition has come (or the time is up); the event ids that never
        came."""
        end = time.monotonic() + timeout_s
        while True:
            async with pool.acquire() as conn:
                ids = [r[0] for r in await conn.fetch("SELECT event_id FROM tracker.transitions")]
            missing = [i for i in ids if i not in self.first]
            if not missing or time.monotonic() > end:
                return missing
            await asyncio.sleep(0.5)

    def out_of_order(self) -> int:
        """Events whose message's previous event (by first arrival) did not end where it starts."""
        last: dict[int, str] = {}
        bad = 0
        for message, from_state, to_state in self.first.values():
            if message in last and last[message] != from_state:
                bad += 1
            last[message] = to_state
        return bad


def summary(r: Receiver) -> str:
    return (f"webhook sink: {len(r.first)} events, {r.deliveries} deliveries "
            f"({r.deliveries - len(r.first)} repeats, allowed), bad signatures {r.forged}")
