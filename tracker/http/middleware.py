"""aiohttp middleware shared by the daemon's listeners."""
from __future__ import annotations

import asyncio

from aiohttp import web

from tracker.logging import get_logger
from tracker.throttle import Throttle

log = get_logger("tracker.http")
_slow_lines = Throttle()  # a line a minute


def cut_slow_bodies(timeout_s: float):
    """Middleware: a request whose body has not all arrived `timeout_s` after its headers loses
    its connection (a body trickled byte by byte would hold a handler for ever)."""
    @web.middleware
    async def middleware(request: web.Request, handler):
        if not request.body_exists or request.content.is_eof():  # none, or all in already
            return await handler(request)

        def cut() -> None:
            if not request.content.is_eof():
                if (left_out := _slow_lines.allow("slow")) is not None:  # anyone can send them
                    log.warning("request body too slow; connection closed", peer=request.remote,
                                body_timeout_s=timeout_s, left_out=left_out)
                request.protocol.force_close()

        timer = asyncio.get_running_loop().call_later(timeout_s, cut)
        try:
            return await handler(request)
        finally:
            timer.cancel()
    return middleware
