"""The poller's transport seam, in the manner of httpx's transports: one awaitable callable
`HttpRequest -> HttpResponse` that sends a request and returns the answer, or raises
TransportError when there is none (timeout, refused, reset, oversized).

- AiohttpTransport: the real one, one aiohttp session per vendor (connection limit,
  `request_timeout_s`, no redirects, no proxies from the environment);
- MockTransport: answers from a function in the same process, for tests of the poller's
  logic (circuit, leases, backoff, Retry-After) without a network or a sandbox.

Requests carry credentials (query parameters, headers, bodies): nothing here logs a request,
and errors name only the kind of failure, never the URL.
"""
from __future__ import annotations

import asyncio
import inspect
from typing import TYPE_CHECKING, Awaitable, Callable, Protocol

import aiohttp
import orjson

from tracker.adapters.base import HttpRequest, HttpResponse

if TYPE_CHECKING:
    from tracker.config_types import VendorConfig

MAX_BODY = 32 * 1024 * 1024
USER_AGENT = "sms-delivery-tracker/0.1"


class TransportError(Exception):
    """No usable answer (timeout, refused, reset, oversized). The text is the kind of failure."""


class Transport(Protocol):
    async def __call__(self, request: HttpRequest) -> HttpResponse: ...

    async def close(self) -> None: ...


class AiohttpTransport:
    def __init__(self, connections: int, timeout_s: float) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections, limit_per_host=connections,
                                           ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            headers={"User-Agent": USER_AGENT},
            trust_env=False,
        )

    async def __call__(self, req: HttpRequest) -> HttpResponse:
        headers, data = req.headers, (dict(req.data) if req.data is not None else None)
        if req.json is not None:
            headers = {"Content-Type": "application/json", **(headers or {})}
            data = orjson.dumps(req.json)
        try:
            async with self.session.request(req.method, req.url, params=req.params, headers=headers,
                                            data=data, allow_redirects=False) as resp:
                if (resp.content_length or 0) > MAX_BODY:
                    raise TransportError("answer too large")
                body = await resp.read()
                return HttpResponse(resp.status, resp.headers, body)  # case-insensitive headers
        except asyncio.TimeoutError:
            raise TransportError("timeout") from None
        except (aiohttp.ClientError, OSError) as e:
            raise TransportError(type(e).__name__) from None

    async def close(self) -> None:
        await self.session.close()


Handler = Callable[[HttpRequest], "HttpResponse | Awaitable[HttpResponse]"]


class MockTransport:
    """Answers every request with `handler(request)` (a function or a coroutine function; it
    may raise TransportError to play a timeout or a refused connection). Keeps the requests
    it was given, in order."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[HttpRequest] = []

    async def __call__(self, req: HttpRequest) -> HttpResponse:
        self.requests.append(req)
        answer = self.handler(req)
        if inspect.isawaitable(answer):
            answer = await answer
        return answer

    async def close(self) -> None:
        pass


TransportFactory = Callable[["VendorConfig"], Transport]  # one transport per vendor


def aiohttp_transport(cfg: VendorConfig) -> Transport:
    """The daemon's transport for one vendor."""
    return AiohttpTransport(cfg.concurrency, cfg.request_timeout_s)
