"""A vendor's requests within its limits, over a transport (tracker.poller.transport):

- concurrency: the transport holds at most `concurrency` connections, and the worker runs at
  most `concurrency` polls at once (each poll's outcome reaches the circuit breaker before the
  next may start);
- rate: at most `rate_limit_per_s` requests per second, with bursts of a tenth of a second's
  worth at most (aiolimiter's leaky bucket), for this replica, and for the whole deployment
  through the database's token bucket (`shared`, tracker.poller.shared_limits);
- Retry-After: a 429/503 with Retry-After pauses every request to that vendor until then (a 429
  without it, one second); a caller who would wait longer than a request timeout is told to
  come back later (Deferred);
- the gate: the circuit breaker's say, asked again after the rate limiter's wait.

Times are the injected clock's (tracker.poller.clock), so pauses are tested without waiting.
"""
from __future__ import annotations

import asyncio
import math
from datetime import timedelta
from typing import Callable

from aiolimiter import AsyncLimiter

from tracker.adapters.base import AccountError, HttpRequest, HttpResponse, ParseError, retry_after
from tracker.adapters.contract import LogsIn
from tracker.config_types import VendorConfig
from tracker.logging import get_logger
from tracker.masking import rotate_secret
from tracker.poller.clock import SYSTEM_CLOCK, Clock
from tracker.poller.transport import Transport, TransportError

log = get_logger("tracker.poller")
# A login token whose expires_on is already past by our clock is kept this long (or until the
# vendor refuses it: a 401 logs in again): taken at its word, every call logged in first.
FALLBACK_LIFETIME = timedelta(hours=1)

BURST_WINDOW_S = 0.1
THROTTLED_WAIT_S = 1.0  # a 429 that does not say for how long
LONG_PAUSE_S = 60.0  # a vendor-wide pause this long is logged


class Deferred(Exception):
    """The vendor asked us (Retry-After) to wait longer than a claim should: try again later."""

    def __init__(self, wait_s: float):
        super().__init__(f"vendor asked to wait {wait_s:.1f}s")
        self.wait_s = wait_s


class LeaseEnding(Deferred):
    """The request would go out too late for its answer to be written within its claim's lease
    (a slow vendor, a long wait for a slot or the rate): not sent; its messages are handed back,
    due at once, and the claim's other answers are written."""

    def __init__(self) -> None:
        Exception.__init__(self, "claim's lease ending")
        self.wait_s = 0.0


class AccountProblem(Exception):
    """An account-level error met outside a status answer (the login)."""

    def __init__(self, error: AccountError):
        super().__init__(f"{error.code}: {error.reason}")
        self.error = error


def rate_limiter(cfg: VendorConfig) -> AsyncLimiter:
    """`rate_limit_per_s`, in bursts of a tenth of a second's worth (at least one request)."""
    capacity = max(1.0, cfg.rate_limit_per_s * BURST_WINDOW_S)
    return AsyncLimiter(capacity, capacity / cfg.rate_limit_per_s)


class VendorClient:
    def __init__(self, cfg: VendorConfig, transport: Transport, clock: Clock = SYSTEM_CLOCK):
        self.cfg = cfg
        self.transport = transport
        self.clock = clock
        self.limiter = rate_limiter(cfg)
        # The deployment's rate (tracker.poller.shared_limits), when several replicas may poll.
        self.shared = None
        self.paused_until = 0.0  # clock.monotonic(); set by Retry-After
        # Seconds until requests may go again, as the caller's circuit breaker says (0: now).
        self.gate: Callable[[], float] = lambda: 0.0

    async def close(self) -> None:
        await self.transport.close()

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, self.clock.monotonic() + seconds)

    def pause_left(self) -> float:
        return max(0.0, self.paused_until - self.clock.monotonic())

    async def fetch(self, req: HttpRequest, max_wait_s: float | None = None,
                    send_by: float = math.inf) -> HttpResponse:
        """Send one request within the limits. Raises TransportError, or Deferred when a pause
        is longer than `max_wait_s` (default: one request timeout) or the gate is closed, or
        LeaseEnding when it could go only after `send_by` (the clock's monotonic time)."""
        max_wait = self.cfg.request_timeout_s if max_wait_s is None else max_wait_s
        while True:
            while (left := self.pause_left()) > 0:
                if left > max_wait:
                    raise Deferred(left)
                await self.clock.sleep(left)
            if self.shared is not None:
                await self.shared.acquire()
            await self.limiter.acquire()
            if self.pause_left() <= 0:
                break
            # A Retry-After came while this one waited for its turn: its token is spent, and
            # it waits out the pause like the rest (never a request inside one).
        if (closed := self.gate()) > 0:  # the circuit opened while this one waited
            raise Deferred(closed)
        if self.clock.monotonic() > send_by:  # after all its waits: checked last
            raise LeaseEnding()
        answer = await self.transport(req)
        if answer.status in (429, 503):
            # capped at the longest a message waits between polls anyway; a 429 that names no
            # wait, or none left (0, a negative number, a time gone by), is still a throttle
            wait = retry_after(answer.headers, self.clock.now(), cap_s=self.cfg.max_poll_interval_s)
            if not wait and answer.status == 429:
                wait = THROTTLED_WAIT_S
            if wait:
                if wait >= LONG_PAUSE_S:
                    log.warning("vendor asked for a long pause", vendor=self.cfg.name,
                                status=answer.status, pause_s=round(wait, 1))
                self.pause(wait)
        return answer


class TokenCache:
    """A login token (Sparrow's): fetched on first use, refreshed before it expires and when a
    call is refused with 401 (only once for all callers that saw the same refused token)."""

    def __init__(self, adapter: LogsIn, client: VendorClient):
        self.adapter = adapter
        self.client = client
        self.token: str | None = None
        self.refresh_at = None
        self.lock = asyncio.Lock()
        self.expiry_off = 0  # logins whose expires_on was already past by our clock

    def forget(self, token: str | None) -> None:
        if token is not None and token == self.token:
            self.token = None

    async def get(self) -> str:
        async with self.lock:
            now = self.client.clock.now()
            if self.token is not None and self.refresh_at is not None and now < self.refresh_at:
                return self.token
            self.token = None
            resp = await self.client.fetch(self.adapter.login_request(self.client.cfg))
            try:
                login = self.adapter.parse_login(resp, now)
            except ParseError:
                raise TransportError("malformed login answer") from None
            if login.account_error is not None:
                raise AccountProblem(login.account_error)
            if login.token is None or login.expires_on is None:  # the vendor is down, not our account
                if login.retry_after_s:  # capped as fetch caps it (a login's 503 with a day's
                    # Retry-After stopped the vendor's polling for that day, unseen)
                    self.client.pause(min(login.retry_after_s, self.client.cfg.max_poll_interval_s))
                raise TransportError(f"login: {login.transient_error or 'no token'}")
            token, expires_on = login.token, login.expires_on
            # Sent with every call, so echoed in errors ("expired session <token>"): masked in
            # logs and rows as a configured secret is; the ones before it forgotten in time.
            rotate_secret(f"{self.client.cfg.name} login token", token, sent=True)
            lifetime = (expires_on - now).total_seconds()
            if lifetime <= 0:  # already past by our clock: the vendor's (or its time zone) is off
                self.expiry_off += 1
                if self.expiry_off == 1 or self.expiry_off % 1000 == 0:
                    log.warning("login token's expires_on is past by our clock (the vendor's clock "
                                "or naive_time_zone is off): kept until the vendor refuses it",
                                vendor=self.client.cfg.name, expires_on=expires_on.isoformat(),
                                times=self.expiry_off)
                expires_on, lifetime = now + FALLBACK_LIFETIME, FALLBACK_LIFETIME.total_seconds()
            # Refresh before expiry: a tenth of the lifetime early, at most five minutes early.
            margin = min(300.0, max(0.0, lifetime) * 0.1)
            self.token, self.refresh_at = token, expires_on - timedelta(seconds=margin)
            return token
