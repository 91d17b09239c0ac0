"""Stopping the daemon while a webhook request hangs, with a real receiver on loopback, a real
PostgreSQL and the daemon's own loops (tracker.app): what was answered is recorded, the open
batch is settled and the reader lease released within the stop's grace, so that a restart sends
only what was cut off, at once."""
from __future__ import annotations

import asyncio
import time

import orjson
import structlog
from aiohttp import web

from tests.postbacks_support import running
from tests.sinks_support import config, make_messages, new_secret, report, wait_until
from tracker.core.states import State
from tracker.sinks import component, webhook

GRACE_S, MARGIN_S = 0.5, 3.0  # the component's stop grace, shortened; the margin to record in


class Hanging:
    """POST /hooks: 200 at once, but a request for `slow` hangs (until closed) while `hang` is on.
    Keeps (webhook-id, phase, vendor_ref) of every request."""

    def __init__(self) -> None:
        self.hang, self.phase = True, 1
        self.got: list[tuple[str, int, str]] = []
        self.closed = asyncio.Event()

    async def start(self) -> "Hanging":
        app = web.Application()
        app.router.add_post("/hooks", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/hooks"
        return self

    async def stop(self) -> None:
        self.closed.set()
        await self.runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        ref = orjson.loads(await request.read())["data"]["vendor_ref"]
        self.got.append((request.headers["webhook-id"], self.phase, ref))
        if ref == "slow" and self.hang:
            await self.closed.wait()
        return web.Response(status=200)

    def ids(self, phase: int) -> list[str]:
        return [i for i, p, _ in self.got if p == phase]

    def id_of(self, ref: str) -> str:
        return next(i for i, _, r in self.got if r == ref)


async def test_a_stop_with_a_hanging_request_records_what_was_answered_and_releases_the_reader(
        db_dsn, pool, monkeypatch):
    # The request timeout (60 s) is longer than the stop's grace: the sink used to wait it out
    # and be cancelled before recording, settling and releasing anything, so the 40 answered
    # events were sent again, and only once the reader lease (70 s) had run out.
    monkeypatch.setattr(component, "STOP_GRACE_MAX_S", GRACE_S)
    monkeypatch.setattr(component, "STOP_GRACE_MARGIN_S", MARGIN_S)
    monkeypatch.setattr(webhook, "BATCH_BUDGET_S", 30.0)  # the batch is still open at the stop
    rx = await Hanging().start()
    refs = [f"f{i}" for i in range(40)] + ["slow"]
    cfg = config(db_dsn, webhooks={"crm": {"url": rx.url, "secrets": (new_secret(),), "timeout_s": 60.0}})
    try:
        await make_messages(pool, refs)
        with structlog.testing.capture_logs() as logs:
            async with running(cfg):
                await report(pool, refs, State.sent)
                await wait_until(lambda: len(rx.got) == 41, 20, "41 requests (40 answered, 1 hanging)")
                stopping = time.monotonic()
        stop_s = time.monotonic() - stopping
        st = await pool.fetchrow("SELECT reader, events_behind, pending FROM tracker.sinks"
                                 " JOIN tracker.sink_status ON sink = name WHERE name = 'crm'")
        assert st["reader"] is None, dict(st)  # the lease released: a restart reads at once
        assert st["events_behind"] == 1 and st["pending"] == 1, dict(st)  # only the cut-off one
        assert not [e for e in logs if e["event"].startswith("component did not stop in time")]
        assert stop_s < GRACE_S + MARGIN_S

        rx.hang, rx.phase = False, 2
        async with running(cfg):
            await wait_until(lambda: rx.ids(2), 10, "the cut-off event sent again at once")
            await wait_until(lambda: _behind_is(pool, 0), 10, "nothing behind")
        assert rx.ids(2) == [rx.id_of("slow")]  # the 40 answered ones not again
    finally:
        await rx.stop()


async def _behind_is(pool, n: int) -> bool:
    return await pool.fetchval("SELECT events_behind FROM tracker.sink_status WHERE sink = 'crm'") == n
