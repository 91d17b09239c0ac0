"""One webhook delivery attempt: sign, POST (redirects not followed), read a little of the
answer, classify. The I/O edge of the webhook sink; the verdict is tracker.sinks.policy's."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from tracker.adapters.base import HttpRequest
from tracker.http.client import HttpClient
from tracker.http.errors import CLOSED, TIMEOUT, TooLarge, TransportError
from tracker.logging import scrub
from tracker.sinks import signing
from tracker.sinks.policy import Outcome, retry_after, verdict
from tracker.sinks.store import Claimed, Result
from tracker.db import clock as db_clock

MAX_ANSWER_BYTES = 64 * 1024  # of a receiver's answer body, read (to reuse the connection) and dropped;
# past it the connection is dropped instead, and the status still counts
USER_AGENT = "sms-delivery-tracker (Standard Webhooks)"


@dataclass(frozen=True)
class Done:
    """One attempt, as it came back (or a claim handed back unsent)."""

    result: Result
    age_s: float = 0.0  # since the event was recorded
    retry_after_s: float | None = None  # what a throttling receiver asked for
    bug: Exception | None = None  # an error of our own that failed the attempt (logged)


def released(c: Claimed) -> Done:
    return Done(Result(c.event_id, Outcome.released))


def describe(e: TransportError, timeout_s: float) -> str:
    """A failed request in words, without its URL (it may hold a token)."""
    kind = str(e)
    if kind == TIMEOUT:
        return f"no answer within {timeout_s:g} s"
    if kind == CLOSED:
        return f"the receiver {CLOSED}"
    return kind  # "cannot connect: Connection refused", "malformed answer", ...


def client(concurrency: int, timeout_s: float) -> HttpClient:
    return HttpClient(concurrency, timeout_s, user_agent=USER_AGENT, max_body=MAX_ANSWER_BYTES)


async def post(http: HttpClient, url: str, keys: list[bytes], c: Claimed,
               timeout_s: float) -> tuple[int | None, str | None, float | None]:
    """(HTTP status or None, what went wrong, Retry-After seconds)."""
    headers = signing.headers(keys, str(c.event_id), int(db_clock.time_s()), c.body)
    try:
        resp = await http(HttpRequest("POST", url, headers=headers, content=c.body))
    except TooLarge as answered:  # the rest of a long answer is not read: its status counts
        wait = retry_after(answered.headers.get("Retry-After"), db_clock.now())
        return answered.status, None, wait
    except TransportError as e:
        return None, describe(e, timeout_s), None
    return resp.status, None, retry_after(resp.headers.get("Retry-After"), db_clock.now())


async def attempt(http: HttpClient, url: str, keys: list[bytes], c: Claimed,
                  timeout_s: float, schedule: tuple[float, ...], rand: Callable[[], float]) -> Done:
    """One attempt. An error of our own (a bug, not the receiver's nor the network's) is a
    failed attempt too, in its words: retried on the schedule, then dead-lettered, and shown in
    the sink's last_error; before, the claim was left to its lease and sent again for ever,
    with nothing counted. The caller logs it (`bug`)."""
    bug = None
    try:
        status, error, wait = await post(http, url, keys, c, timeout_s)
    except Exception as e:
        status, error, wait, bug = None, f"the delivery failed: {type(e).__name__}: {e}", None, e
    outcome, retry_in_s = verdict(status, c.attempts, schedule, rand(), wait)
    if outcome is Outcome.delivered:
        error = None
    elif status is not None:
        error = f"HTTP {status}" + (f" (Retry-After {wait:g} s)" if wait is not None else "")
    age = (db_clock.now() - c.recorded_at).total_seconds()
    return Done(Result(c.event_id, outcome, retry_in_s, status, error and scrub(error)[:300]), age,
                wait, bug)
