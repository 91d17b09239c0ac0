"""The vendors' side of the sandbox's HTTP server: each fake's routes under its prefix
(`/sparksender`, `/engagespark`, ...), behind a middleware that plays the knobs' faults (delay,
rate limit, throttling, server errors, slowness, garbled answers) and logs every request. A
rate limit, throttle or server error is answered before the vendor's handler, in the vendor's own
error shape (Vendor.fault_answer), with Retry-After on a 429."""
from __future__ import annotations

import asyncio
import math
import time
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from tracker.sandbox.common import MALFORMABLE, REFS, json_response
from tracker.sandbox.knobs import Knobs

if TYPE_CHECKING:
    from tracker.sandbox.common import Vendor
    from tracker.sandbox.server import Sandbox


def add_vendor_routes(app: web.Application, sandbox: "Sandbox") -> None:
    for name, vendor in sandbox.vendors.items():
        for route in vendor.routes():
            handler = _malformable(route.handler) if route.malformable else route.handler
            full = f"/{name}{route.path}"
            variants = {full, full.rstrip("/") or f"/{name}", full.rstrip("/") + "/"}
            for path in sorted(variants):
                for method in route.methods:
                    app.router.add_route(method, path, handler)


class Faults:
    """The knobs' faults, played on every vendor request; owns the rate-limit token buckets."""

    def __init__(self, sandbox: "Sandbox") -> None:
        self.sandbox = sandbox
        self._buckets: dict[str, list[float]] = {}  # vendor -> [tokens, last refill]

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        vendor = request.path.split("/", 2)[1] if request.path.count("/") >= 1 else ""
        if vendor == "_sandbox":
            return await handler(request)
        vendors = self.sandbox.vendors
        if vendor not in vendors:
            return json_response({"error": "not found"}, status=404)
        request[REFS] = []
        knobs = self.sandbox.get_knobs(vendor)
        status, retry_after, garbled = 0, None, None
        try:
            if knobs.answer_delay_s:
                await asyncio.sleep(knobs.answer_delay_s)
            response = self._fault(vendor, knobs, request)
            if response is None:
                if knobs.slow_share and vendors[vendor].rng.random() < knobs.slow_share:
                    await asyncio.sleep(knobs.slow_delay_s)
                response = await handler(request)
                if (request.get(MALFORMABLE) and knobs.malformed_share
                        and vendors[vendor].rng.random() < knobs.malformed_share):
                    response, garbled = self._garble(vendor, response)
            status = response.status
            retry_after = response.headers.get("Retry-After")
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            self.sandbox.log_request(request, vendor, status, retry_after, garbled)

    def _fault(self, vendor: str, knobs: Knobs, request: web.Request) -> web.Response | None:
        """A fault knob's answer, in the vendor's own error shape (Vendor.fault_answer), or None."""
        fake = self.sandbox.vendors[vendor]
        rng = fake.rng
        if knobs.rate_limit_per_s > 0:
            wait = self._take_token(vendor, knobs.rate_limit_per_s)
            if wait > 0:
                return self._too_many(fake, request, max(1, math.ceil(wait)))
        if knobs.throttle_share and rng.random() < knobs.throttle_share:
            return self._too_many(fake, request, knobs.retry_after_s)
        if knobs.server_error_share and rng.random() < knobs.server_error_share:
            return fake.fault_answer(request, rng.choice((500, 502, 503)))
        return None

    @staticmethod
    def _too_many(fake: "Vendor", request: web.Request, retry_after: int) -> web.Response:
        response = fake.fault_answer(request, 429)
        response.headers["Retry-After"] = str(retry_after)
        return response

    def _take_token(self, vendor: str, rate: float) -> float:
        """Token bucket (capacity = one second's worth); seconds to wait, 0 if allowed."""
        now = time.monotonic()
        capacity = max(1.0, rate)
        bucket = self._buckets.setdefault(vendor, [capacity, now])
        bucket[0] = min(capacity, bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return 0.0
        return (1.0 - bucket[0]) / rate

    def _garble(self, vendor: str, response: web.StreamResponse) -> tuple[web.Response, str]:
        """The answer garbled, and how: truncated, html, empty or nul."""
        body = response.body if isinstance(response, web.Response) else b""
        raw = bytes(body) if isinstance(body, (bytes, bytearray)) else b""
        kind = self.sandbox.vendors[vendor].rng.choice(self.sandbox.get_knobs(vendor).malformed_kinds)
        if kind == "nul":
            try:
                doc = orjson.loads(raw)
            except orjson.JSONDecodeError:
                doc = None
            if isinstance(doc, dict):
                return web.Response(body=orjson.dumps({**doc, "note": "\x00"}),
                                    status=response.status, content_type="application/json"), kind
            kind = "truncated"
        if kind == "truncated" and len(raw) > 1:
            return web.Response(body=raw[: len(raw) // 2], status=response.status,
                                content_type="application/json"), kind
        if kind == "html":
            return web.Response(text="<html><body>Service temporarily unavailable</body></html>",
                                status=200, content_type="text/html"), kind
        return web.Response(body=b"", status=200, content_type="application/json"), "empty"


def _malformable(handler: Any) -> Any:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        request[MALFORMABLE] = True
        return await handler(request)
    return wrapped
