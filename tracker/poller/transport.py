"""The poller's transport seam, in the manner of httpx's transports: one awaitable callable
`HttpRequest -> HttpResponse` that sends a request and returns the answer, or raises
TransportError when there is none (timeout, refused, reset, oversized).

- tracker.http.client.HttpClient: the real one, keep-alive connections per vendor
  (connection limit, `request_timeout_s`, no redirects, no proxies);
- MockTransport: answers from a function in the same process, for tests of the poller's
  logic (circuit, leases, backoff, Retry-After) without a network or a sandbox.

Requests carry credentials (query parameters, headers, bodies): nothing here logs a request,
and errors name only the kind of failure, never the URL.
"""
from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Awaitable, Callable, Protocol

from tracker import adapters
from tracker.adapters.base import HttpRequest, HttpResponse
from tracker.http.client import HttpClient
from tracker.http.errors import TransportError  # noqa: F401 - the seam's error: callers import it from here

if TYPE_CHECKING:
    from tracker.config_types import VendorConfig


class Transport(Protocol):
    async def __call__(self, request: HttpRequest) -> HttpResponse: ...

    async def close(self) -> None: ...


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


def vendor_transport(cfg: VendorConfig) -> Transport:
    """The daemon's transport for one vendor: answers up to its adapter's MAX_ANSWER_BYTES (32
    MiB for every vendor let one hostile answer of empty objects take a gigabyte to parse)."""
    return HttpClient(cfg.concurrency, cfg.request_timeout_s,
                      max_body=adapters.get(cfg.name).MAX_ANSWER_BYTES)
