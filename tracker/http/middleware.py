"""aiohttp middleware shared by the daemon's listeners."""
from __future__ import annotations

import asyncio

from aiohttp import web

from tracker import metrics
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


@web.middleware
async def count_router_refusals(request: web.Request, handler):
    """Requests the router refuses before any handler (no such path: 404; a method the route
    does not take: 405) counted in tracker_http_refused_total{status}, and a 405 logged a line a
    minute: a vendor that posts with a method we do not take (PUT) was refused without a trace.
    The server's own name is left out of every answer (aiohttp's carried its version)."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status in (404, 405):
            metrics.http_refused.labels(str(e.status)).inc()
            # one key for every method: a method is any token to aiohttp's pure-Python parser
            if e.status == 405 and (left_out := _method_lines.allow(405)) is not None:
                log.warning("request refused: method not allowed", method=request.method[:20],
                            path=request.path[:40], left_out=left_out)
        raise


_method_lines = Throttle()


async def server_name(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: "tracker" for aiohttp's "Python/3.11 aiohttp/3.14.5"."""
    response.headers["Server"] = "tracker"
