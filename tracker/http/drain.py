"""http.drain_s: a stop that a load balancer sees coming. For that long before the listeners
close, /readyz answers 503 (the balancer takes the replica out) while every request is still
answered, with `Connection: close`, so that a client's next request opens a connection the
balancer sends elsewhere. Without it, requests sent on kept-alive connections as the listener
closed were reset (none stored, none lost: vendors retry, but count them as failures)."""
from __future__ import annotations

import asyncio

from aiohttp import web

from tracker.logging import get_logger

log = get_logger("tracker.app")


class Drain:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.under_way = False
        self._cut = asyncio.Event()

    async def run(self) -> None:
        """The drain itself: a fixed time, the balancer's to notice (its health checks' interval
        times their failures to take a replica out), unless cut short (a second signal)."""
        if not self.seconds:
            return
        self.under_way = True
        log.info("draining: /readyz answers 503 and requests are still answered",
                 drain_s=self.seconds)
        try:
            await asyncio.wait_for(self._cut.wait(), self.seconds)
        except TimeoutError:
            pass

    def cut(self) -> None:
        """End the drain now (an operator's second SIGTERM or Ctrl-C)."""
        if self.under_way and not self._cut.is_set():
            self._cut.set()
            log.info("drain cut short: stopping now")

    async def close_connections(self, _request: web.Request, response: web.StreamResponse) -> None:
        """on_response_prepare: while draining, the connection closes after this answer, and
        the answer says so (the hook runs after aiohttp wrote its headers' values: both)."""
        if self.under_way:
            response.force_close()
            response.headers["Connection"] = "close"
