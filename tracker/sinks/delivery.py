"""One webhook delivery attempt: sign, POST (redirects not followed), read a little of the
answer, classify. The I/O edge of the webhook sink; the verdict is tracker.sinks.policy's."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

import aiohttp

from tracker.logging import scrub
from tracker.sinks import signing
from tracker.sinks.policy import Outcome, retry_after, verdict
from tracker.sinks.store import Claimed, Result

MAX_ANSWER_BYTES = 64 * 1024  # of a receiver's answer body, read (to reuse the connection) and dropped
USER_AGENT = "sms-delivery-tracker (Standard Webhooks)"


@dataclass(frozen=True)
class Done:
    """One attempt, as it came back (or a claim handed back unsent)."""

    result: Result
    age_s: float = 0.0  # since the event was recorded
    retry_after_s: float | None = None  # what a throttling receiver asked for


def released(c: Claimed) -> Done:
    return Done(Result(c.event_id, Outcome.released))


def describe(e: BaseException, timeout_s: float) -> str:
    """A failed request in words, without its URL (it may hold a token)."""
    if isinstance(e, asyncio.TimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(e, aiohttp.ClientConnectorError):
        return f"cannot connect: {e.os_error.strerror or type(e.os_error).__name__}"
    if isinstance(e, aiohttp.ServerDisconnectedError):
        return "the receiver closed the connection without answering"
    return f"request failed: {type(e).__name__}"


def session(concurrency: int, timeout_s: float) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency, ttl_dns_cache=60),
        timeout=aiohttp.ClientTimeout(total=timeout_s), cookie_jar=aiohttp.DummyCookieJar(),
        headers={"user-agent": USER_AGENT})


async def post(http: aiohttp.ClientSession, url: str, keys: list[bytes], c: Claimed,
               timeout_s: float) -> tuple[int | None, str | None, float | None]:
    """(HTTP status or None, what went wrong, Retry-After seconds)."""
    headers = signing.headers(keys, str(c.event_id), int(time.time()), c.body)
    try:
        async with http.post(url, data=c.body, headers=headers, allow_redirects=False) as resp:
            read = 0
            async for chunk in resp.content.iter_chunked(16384):
                read += len(chunk)
                if read > MAX_ANSWER_BYTES:
                    resp.close()
                    break
            return resp.status, None, retry_after(resp.headers.get("Retry-After"))
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        return None, describe(e, timeout_s), None


async def attempt(http: aiohttp.ClientSession, url: str, keys: list[bytes], c: Claimed,
                  timeout_s: float, schedule: tuple[float, ...], rand: Callable[[], float]) -> Done:
    status, error, wait = await post(http, url, keys, c, timeout_s)
    outcome, retry_in_s = verdict(status, c.attempts, schedule, rand(), wait)
    if outcome is Outcome.delivered:
        error = None
    elif status is not None:
        error = f"HTTP {status}" + (f" (Retry-After {wait:g} s)" if wait is not None else "")
    age = (datetime.now(timezone.utc) - c.recorded_at).total_seconds()
    return Done(Result(c.event_id, outcome, retry_in_s, status, error and scrub(error)[:300]), age, wait)
