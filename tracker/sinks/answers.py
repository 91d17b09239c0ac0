"""The webhook sink's requests in flight and what their answers do (a part of WebhookSink,
tracker.sinks.webhook): start queued deliveries within the window, account each answer as it
comes back (metrics, window, retry time), keep claimed rows' answers for one batched write, and
act on 410 (disable) and 429/502/503/504 (pause, halve the window) before anything else starts."""
from __future__ import annotations

import asyncio
import collections
import math

import asyncpg

from tracker.db import clock as db_clock
from tracker.logging import get_logger
from tracker.sinks import delivery, store
from tracker.sinks.delivery import Done
from tracker.sinks.policy import Outcome, pause_s
from tracker.sinks.settings import public_url

log = get_logger("tracker.sinks.webhook")

STALE_CLAIM_S = 5.0  # a queued claim not started by then is handed back (< the lease's margin)
LONG_PAUSE_S = 60.0  # a receiver's pause longer than this is logged as a warning


class Answers:
    """Mixed into WebhookSink, whose state it uses (queue, in_flight, results, alarms, batch,
    window, ...)."""

    def _start_queued(self) -> None:
        now = self.loop.time()
        while self.queue and len(self.in_flight) < self.window.size and self._sending(now):
            c, claimed_at = self.queue.popleft()
            if not c.virtual and now - claimed_at > STALE_CLAIM_S:  # could outlive its lease
                self._came_back(delivery.released(c))
                continue
            task = asyncio.create_task(delivery.attempt(
                self.http, self.cfg.url, self.keys, c, self.cfg.timeout_s, self.cfg.retry_schedule_s,
                self.rand), name=f"sink:{self.name}:{c.event_id}")
            self.in_flight[task] = c.event_id
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self.in_flight.pop(task, None)
        if task.cancelled():
            return  # stopping: sent again after its lease, or read again from the cursor
        if task.exception() is not None:  # a bug: the same
            log.error("webhook delivery failed unexpectedly", sink=self.name, exc_info=task.exception())
        else:
            self._came_back(task.result())
        self._start_queued()
        if (self.due or self.more) and len(self.queue) < self.window.size // 2:
            self.changed.set()  # room for more claims, or another read

    def _came_back(self, done: Done) -> None:
        r = done.result
        batch = self.batch_of.pop(r.event_id, None)
        if batch is None or not batch.came_back(r):
            if not self.results:
                self.first_result_at = self.loop.time()
            self.results.append(r)  # a claimed row's answer: written with others
            if len(self.results) >= max(1, self.window.size // 2):
                self.changed.set()
        elif batch.done and batch is self.batches[0]:
            self.changed.set()  # settle it (and those done behind it)
        self._account(done)
        if r.outcome in (Outcome.throttled, Outcome.gone):
            self.hold = True  # nothing starts until the loop has acted on it
            self.alarms.append(done)
            self.changed.set()

    def _account(self, done: Done) -> None:
        r = done.result
        if r.outcome is Outcome.released:
            self.due = True
            return
        self._counts[r.outcome].inc()
        if done.bug is not None and (left_out := self._bug_lines.allow(None)) is not None:
            log.error("webhook delivery failed by an error of ours: counted as a failed attempt",
                      sink=self.name, event_id=r.event_id, left_out=left_out, exc_info=done.bug)
        if r.outcome is Outcome.delivered:
            self._latency.observe(max(0.0, done.age_s))
            self.window.delivered()
            self.throttled_in_a_row = 0
        elif r.outcome is Outcome.dead:
            if (left_out := self._dead_lines.allow(None)) is not None:
                log.warning("event dead-lettered", sink=self.name, event_id=r.event_id,
                            status=r.status, error=r.error, left_out=left_out)
        elif r.outcome is not Outcome.gone:
            self.retry_at = min(self.retry_at, self.loop.time() + r.retry_in_s)

    def _hand_back_queue(self) -> None:
        """Claimed rows go back to the table at once; a batch's unsent events stay its own
        (they go into the table when it is settled)."""
        keep = collections.deque()
        while self.queue:
            c, at = self.queue.popleft()
            if c.virtual:
                keep.append((c, at))
            else:
                self._came_back(delivery.released(c))
        self.queue = keep

    async def _record(self, conn: asyncpg.Connection) -> None:
        """Write the claimed rows' answers in one statement (kept on failure, for the next turn)."""
        if not self.results:
            return
        rows, self.results, self.first_result_at = self.results, [], math.inf
        try:
            await store.record(conn, self.name, self.token, rows)
        except BaseException:
            self.results = rows + self.results
            self.first_result_at = self.loop.time()
            raise

    async def _act_on_alarms(self, conn: asyncpg.Connection) -> None:
        """A 410 disables the sink, a throttling answer pauses it; until done (a failure here
        leaves them for the next turn), `hold` keeps anything new from starting."""
        if any(d.result.outcome is Outcome.gone for d in self.alarms):
            await self._gone(conn)
        throttled = [d for d in self.alarms if d.result.outcome is Outcome.throttled]
        if throttled:
            await self._slow_down(conn, throttled)
        self.alarms, self.hold = [], False

    async def _slow_down(self, conn: asyncpg.Connection, throttled: list[Done]) -> None:
        """Pause the sink and halve its window: once per episode, not once per answer (the
        answers to requests sent together come back together)."""
        now = self.loop.time()
        if now >= self.paused_until:
            self.throttled_in_a_row += 1
            self.window.throttled()
        wait = max(pause_s(d.retry_after_s, self.throttled_in_a_row) for d in throttled)
        self.paused_until = max(self.paused_until, now + wait)
        self._hand_back_queue()
        await store.pause(conn, self.name, wait)
        # a long pause is one an operator should hear of (`tracker sinks enable` ends it)
        (log.warning if wait > LONG_PAUSE_S else log.info)(
            "receiver asks to slow down", sink=self.name, status=throttled[-1].result.status,
            pause_s=round(wait, 3), window=self.window.size)

    async def _gone(self, conn: asyncpg.Connection) -> None:
        if self.disabled:
            return
        self.disabled = True
        self._hand_back_queue()
        reason = (f"the receiver answered 410 Gone at {db_clock.now():%Y-%m-%d %H:%M:%S} UTC;"
                  f" `tracker sinks enable {self.name}` sends again")
        await store.disable(conn, self.name, reason)
        log.error("webhook sink disabled: the receiver answered 410 Gone", sink=self.name,
                  receiver=public_url(self.cfg.url))
