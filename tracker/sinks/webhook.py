"""A webhook sink's loop: outbox -> pending deliveries -> signed POSTs -> recorded results.

One loop per sink (supervised as component `sink:<name>`). Each turn it records the results
that came back, moves new events from the outbox when woken (NOTIFY tracker_events) or every
`sinks.poll_interval_s`, and claims due deliveries for the free slots of its window. Each
claimed delivery is one task: sign, POST, classify; the loop never waits for a request, so a
slow or failing message holds one slot, not the sink.

Failure paths:
- receiver down, timing out, 3xx/4xx/5xx: the event is tried again on the retry schedule,
  then dead-lettered (tracker.sink_failures); other messages go on meanwhile.
- 429/502/503/504: the same, never sooner than Retry-After; the sink pauses and halves its window.
- 410: the sink is disabled (logged, tracker.sink_status.disabled) until `tracker sinks enable`.
- database unavailable: results are kept in memory and recorded once it answers; a claim that
  is never recorded (crash, kill -9) comes due again when its lease ends, and is sent again
  with the same webhook-id (at least once).
"""
from __future__ import annotations

import asyncio
import contextlib
import math
import random
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

import aiohttp
import asyncpg

from tracker import metrics
from tracker.config_types import SinksConfig, WebhookSinkConfig
from tracker.db import DB_ERRORS
from tracker.logging import get_logger, scrub
from tracker.sinks import signing, store
from tracker.sinks.policy import EventFilter, Outcome, Window, pause_s, retry_after, verdict
from tracker.sinks.settings import public_url
from tracker.supervisor import beat

log = get_logger("tracker.sinks.webhook")

LEASE_MARGIN_S = 10.0  # a claim's lease: the request's timeout and this
MAX_ANSWER_BYTES = 64 * 1024  # of a receiver's answer body, read and thrown away
USER_AGENT = "sms-delivery-tracker (Standard Webhooks)"


def describe(e: BaseException, timeout_s: float) -> str:
    """A failed request in words, without its URL (it may hold a token)."""
    if isinstance(e, asyncio.TimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(e, aiohttp.ClientConnectorError):
        return f"cannot connect: {e.os_error.strerror or type(e.os_error).__name__}"
    if isinstance(e, aiohttp.ServerDisconnectedError):
        return "the receiver closed the connection without answering"
    return f"request failed: {type(e).__name__}"


@dataclass(frozen=True)
class Done:
    """One attempt, as it came back."""

    result: store.Result
    age_s: float  # since the event was recorded
    retry_after_s: float | None  # what a throttling receiver asked for


class WebhookSink:
    kind = "webhook"

    def __init__(self, cfg: WebhookSinkConfig, pool: asyncpg.Pool, sinks: SinksConfig, *,
                 rand: Callable[[], float] = random.random):
        self.cfg, self.pool, self.name = cfg, pool, cfg.name
        self.poll_interval_s, self.batch = sinks.poll_interval_s, sinks.batch_size
        self.keys = [signing.parse_secret(s) for s in cfg.secrets]
        self.filter = EventFilter.of(cfg.vendors, cfg.states)
        self.rand = rand
        self.lease_s = cfg.timeout_s + LEASE_MARGIN_S
        self.notified = asyncio.Event()  # new events in the outbox (or a redrive, an enable)
        self.changed = asyncio.Event()  # anything the loop should look at
        self.stopping = False
        self.window = Window(cfg.concurrency)
        self.inflight: set[asyncio.Task] = set()
        self.results: list[Done] = []  # came back, not recorded yet
        self.disabled = False
        self.paused_until = 0.0  # monotonic
        self.retry_at = math.inf  # monotonic: our soonest retry, or a lease ending
        self.throttled_in_a_row = 0
        self._counts = {o: metrics.sink_deliveries.labels(self.name, o.value) for o in Outcome}
        self._latency = metrics.sink_delivery_seconds.labels(self.name)

    def wake(self) -> None:
        self.notified.set()
        self.changed.set()

    def stop(self) -> None:
        self.stopping = True
        self.changed.set()

    # --- the loop ---------------------------------------------------------------------------------

    async def run(self) -> None:
        self.token = secrets.token_hex(8)  # this run's claims; a restart's are new
        connector = aiohttp.TCPConnector(limit=self.cfg.concurrency, ttl_dns_cache=60)
        async with aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=self.cfg.timeout_s),
                cookie_jar=aiohttp.DummyCookieJar(), headers={"user-agent": USER_AGENT}) as session:
            self.session = session
            log.info("webhook sink started", sink=self.name, receiver=public_url(self.cfg.url),
                     secrets=len(self.keys), concurrency=self.cfg.concurrency)
            try:
                await self._loop()
            finally:
                await self._finish()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_fill, more, due, backoff = -math.inf, False, True, 0.5
        while not self.stopping:
            self.changed.clear()
            now = loop.time()
            try:
                with beat().working():  # progress: a turn done (requests run outside it)
                    async with self.pool.acquire() as conn:
                        if self.results:
                            due |= await self._record(conn)
                        if self.notified.is_set() or more or now - last_fill >= self.poll_interval_s:
                            self.notified.clear()
                            due |= await self._refresh(conn, backstop=now - last_fill >= self.poll_interval_s)
                            last_fill = now
                            filled = store.Filled() if self.disabled else await store.fill(
                                conn, self.name, self.batch, self.filter)
                            more, due = filled.full(self.batch), due or filled.kept > 0
                        if now >= self.retry_at:
                            self.retry_at, due = math.inf, True
                        free = self.window.size - len(self.inflight)
                        if (due and not self.disabled and now >= self.paused_until
                                and free >= max(1, self.window.size // 4)):
                            claimed = await store.claim(conn, self.name, free, self.lease_s, self.token)
                            due = len(claimed) == free
                            for c in claimed:
                                self._start(c)
                backoff = 0.5
            except DB_ERRORS as e:
                log.warning("webhook sink: database unavailable; will retry", sink=self.name,
                            error=type(e).__name__)
                await asyncio.sleep(backoff)
                backoff, last_fill = min(backoff * 2, 5.0), -math.inf
                continue
            if more and not self.disabled:
                continue
            now = loop.time()
            wake_at = min(last_fill + self.poll_interval_s, self.retry_at,
                          self.paused_until if due and self.paused_until > now else math.inf)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), max(0.0, wake_at - loop.time()))

    async def _refresh(self, conn: asyncpg.Connection, backstop: bool) -> bool:
        """The sink's shared state (another replica's 410 or pause, an operator's enable);
        on the timer, also when our next pending delivery comes due. True: some may be due."""
        st = await store.state(conn, self.name)
        if self.disabled and not st.disabled:
            log.info("webhook sink enabled again", sink=self.name)
        self.disabled = st.disabled
        loop_now = asyncio.get_running_loop().time()
        self.paused_until = max(self.paused_until, loop_now + st.paused_s) if st.paused_s else self.paused_until
        if not backstop:
            return False
        due_s = await store.next_due_s(conn, self.name)
        if due_s is None:
            return False
        if due_s <= 0:
            return True
        self.retry_at = min(self.retry_at, loop_now + due_s)
        return False

    # --- one delivery -------------------------------------------------------------------------------

    def _start(self, c: store.Claimed) -> None:
        task = asyncio.create_task(self._deliver(c), name=f"sink:{self.name}:{c.event_id}")
        self.inflight.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self.inflight.discard(task)
        if task.cancelled():
            return  # stopping: its lease ends and it is sent again
        if task.exception() is not None:  # a bug: the lease ends and it is sent again
            log.error("webhook delivery failed unexpectedly", sink=self.name,
                      exc_info=task.exception())
        else:
            self.results.append(task.result())
        self.changed.set()

    async def _deliver(self, c: store.Claimed) -> Done:
        status, error, wait = await self._post(c)
        outcome, retry_in_s = verdict(status, c.attempts, self.cfg.retry_schedule_s, self.rand(), wait)
        if outcome is Outcome.delivered:
            error = None
        elif status is not None:
            error = f"HTTP {status}" + (f" (Retry-After {wait:g} s)" if wait is not None else "")
        age = (datetime.now(timezone.utc) - c.recorded_at).total_seconds()
        result = store.Result(c.event_id, outcome, retry_in_s, status, error and scrub(error)[:300])
        return Done(result, age, wait)

    async def _post(self, c: store.Claimed) -> tuple[int | None, str | None, float | None]:
        """(HTTP status or None, what went wrong, Retry-After seconds)."""
        headers = signing.headers(self.keys, str(c.event_id), int(time.time()), c.body)
        try:
            async with self.session.post(self.cfg.url, data=c.body, headers=headers,
                                         allow_redirects=False) as resp:
                read = 0
                async for chunk in resp.content.iter_chunked(16384):  # reuse the connection
                    read += len(chunk)
                    if read > MAX_ANSWER_BYTES:
                        resp.close()
                        break
                return resp.status, None, retry_after(resp.headers.get("Retry-After"))
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            return None, describe(e, self.cfg.timeout_s), None

    # --- results ------------------------------------------------------------------------------------

    async def _record(self, conn: asyncpg.Connection) -> bool:
        """Write the results that came back; True when a retry is due at once."""
        taken = self.results
        self.results = []
        try:
            await store.record(conn, self.name, self.token, [d.result for d in taken])
        except BaseException:
            self.results = taken + self.results  # kept for the next turn
            raise
        now, due = asyncio.get_running_loop().time(), False
        for done in taken:
            r = done.result
            self._counts[r.outcome].inc()
            if r.outcome is Outcome.delivered:
                self._latency.observe(max(0.0, done.age_s))
                self.window.delivered()
                self.throttled_in_a_row = 0
                continue
            if r.outcome is Outcome.gone:
                await self._gone(conn)
                continue
            if r.outcome is Outcome.dead:
                log.warning("event dead-lettered", sink=self.name, event_id=r.event_id,
                            status=r.status, error=r.error)
                continue
            self.retry_at = min(self.retry_at, now + r.retry_in_s)
            due = due or r.retry_in_s <= 0
        throttled = [d for d in taken if d.result.outcome is Outcome.throttled]
        if throttled:
            await self._slow_down(conn, throttled, now)
        return due

    async def _slow_down(self, conn: asyncpg.Connection, throttled: list[Done], now: float) -> None:
        """Pause the sink and halve its window: once per episode, not once per answer (the
        answers to requests sent together come back together)."""
        if now >= self.paused_until:
            self.throttled_in_a_row += 1
            self.window.throttled()
        wait = max(pause_s(d.retry_after_s, self.throttled_in_a_row) for d in throttled)
        self.paused_until = max(self.paused_until, now + wait)
        await store.pause(conn, self.name, wait)
        log.info("receiver asks to slow down", sink=self.name, status=throttled[-1].result.status,
                 pause_s=round(wait, 3), window=self.window.size)

    async def _gone(self, conn: asyncpg.Connection) -> None:
        if self.disabled:
            return
        self.disabled = True
        reason = (f"the receiver answered 410 Gone at {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC;"
                  f" `tracker sinks enable {self.name}` sends again")
        await store.disable(conn, self.name, reason)
        log.error("webhook sink disabled: the receiver answered 410 Gone", sink=self.name,
                  receiver=public_url(self.cfg.url))

    async def _finish(self) -> None:
        """On the way out: give requests in flight their time, record what came back; the
        rest come due again when their leases end."""
        if self.inflight:
            await asyncio.wait(self.inflight, timeout=self.cfg.timeout_s)
            for t in list(self.inflight):
                t.cancel()
            await asyncio.gather(*self.inflight, return_exceptions=True)
        if self.results:
            try:
                async with self.pool.acquire() as conn:
                    await self._record(conn)
            except DB_ERRORS as e:
                log.warning("webhook sink: results not recorded; those events will be sent again",
                            sink=self.name, events=len(self.results), error=type(e).__name__)
