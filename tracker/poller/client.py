"""The poller's HTTP client: one aiohttp session per vendor, within the vendor's limits.

- concurrency: at most `concurrency` connections (the connector limit; the poller also runs at
  most `concurrency` polls at once, so that each poll's outcome reaches the circuit breaker
  before the next poll may start);
- rate: at most `rate_limit_per_s` requests per second, with bursts of a tenth of a second's
  worth at most (aiolimiter's leaky bucket);
- Retry-After: a 429/503 with Retry-After pauses every request to that vendor until then;
- timeouts: `request_timeout_s` for the whole request.

Requests carry credentials (query parameters, headers, bodies): nothing here logs a request,
and errors name only the kind of failure, never the URL.
"""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import aiohttp
import orjson
from aiolimiter import AsyncLimiter

from tracker.adapters.base import AccountError, HttpRequest, HttpResponse, ParseError, retry_after
from tracker.config_types import VendorConfig

MAX_BODY = 32 * 1024 * 1024
BURST_WINDOW_S = 0.1
USER_AGENT = "sms-delivery-tracker/0.1"


class TransportError(Exception):
    """No usable answer (timeout, refused, reset, oversized). The text is the kind of failure."""


class Deferred(Exception):
    """The vendor asked us (Retry-After) to wait longer than a claim should: try again later."""

    def __init__(self, wait_s: float):
        super().__init__(f"vendor asked to wait {wait_s:.1f}s")
        self.wait_s = wait_s


class AccountProblem(Exception):
    """An account-level error met outside a status answer (the login)."""

    def __init__(self, error: AccountError):
        super().__init__(f"{error.code}: {error.reason}")
        self.error = error


class VendorClient:
    def __init__(self, cfg: VendorConfig):
        self.cfg = cfg
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=cfg.concurrency, limit_per_host=cfg.concurrency,
                                           ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=cfg.request_timeout_s),
            headers={"User-Agent": USER_AGENT},
            trust_env=False,
        )
        capacity = max(1.0, cfg.rate_limit_per_s * BURST_WINDOW_S)
        self.limiter = AsyncLimiter(capacity, capacity / cfg.rate_limit_per_s)
        self.paused_until = 0.0  # monotonic; set by Retry-After
        # Seconds until requests may go again, as the caller's circuit breaker says (0: now).
        self.gate: Callable[[], float] = lambda: 0.0

    async def close(self) -> None:
        await self.session.close()

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)

    def pause_left(self) -> float:
        return max(0.0, self.paused_until - time.monotonic())

    async def fetch(self, req: HttpRequest, max_wait_s: float | None = None) -> HttpResponse:
        """Send one request within the limits. Raises TransportError, or Deferred when a pause
        is longer than `max_wait_s` (default: one request timeout) or the gate is closed."""
        max_wait = self.cfg.request_timeout_s if max_wait_s is None else max_wait_s
        while (left := self.pause_left()) > 0:
            if left > max_wait:
                raise Deferred(left)
            await asyncio.sleep(left)
        await self.limiter.acquire()
        if (closed := self.gate()) > 0:  # the circuit opened while this one waited
            raise Deferred(closed)
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
                answer = HttpResponse(resp.status, resp.headers, body)  # case-insensitive
        except asyncio.TimeoutError:
            raise TransportError("timeout") from None
        except (aiohttp.ClientError, OSError) as e:
            raise TransportError(type(e).__name__) from None
        if answer.status in (429, 503):
            wait = retry_after(answer.headers, datetime.now(timezone.utc))
            if wait is None and answer.status == 429:
                wait = 1.0  # throttled without saying for how long
            if wait:
                self.pause(wait)
        return answer


class TokenCache:
    """Sparrow's login token: fetched on first use, refreshed before `expires_on` and when a
    call is refused with 401 (only once for all callers that saw the same refused token)."""

    def __init__(self, adapter: Any, client: VendorClient):
        self.adapter = adapter
        self.client = client
        self.token: str | None = None
        self.refresh_at: datetime | None = None
        self.lock = asyncio.Lock()

    def forget(self, token: str | None) -> None:
        if token is not None and token == self.token:
            self.token = None

    async def get(self) -> str:
        async with self.lock:
            now = datetime.now(timezone.utc)
            if self.token is not None and self.refresh_at is not None and now < self.refresh_at:
                return self.token
            self.token = None
            resp = await self.client.fetch(self.adapter.login_request(self.client.cfg))
            try:
                out = self.adapter.parse_login(resp, now)
            except ParseError:
                raise TransportError("malformed login answer") from None
            if isinstance(out, AccountError):
                if out.code.startswith("http_") and (out.code[5:] in ("408", "425", "429")
                                                     or out.code[5:].startswith("5")):
                    if out.retry_after_s:
                        self.client.pause(out.retry_after_s)
                    raise TransportError(f"login {out.code}")  # the vendor is down, not our account
                raise AccountProblem(out)
            token, expires_on = out
            lifetime = (expires_on - now).total_seconds()
            # Refresh before expiry: a tenth of the lifetime early, at most five minutes early.
            margin = min(300.0, max(0.0, lifetime) * 0.1)
            self.token, self.refresh_at = token, expires_on - timedelta(seconds=margin)
            return token
