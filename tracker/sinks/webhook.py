"""A webhook sink's loop: outbox -> signed POSTs -> a cursor moved only past settled events.

One loop per sink (supervised as component `sink:<name>`). The loop holding the sink's reader
lease (one replica at a time) reads a batch of events after the sink's cursor when woken
(NOTIFY tracker_events), every `sinks.poll_interval_s`, or at once after a full batch, and sends
them straight away (tracker.sinks.batch says which). The batch is settled when every answer is
in, or BATCH_BUDGET_S after it was read: in one transaction, whatever was not delivered goes
into tracker.sink_deliveries (failed, with its retry time; still in flight, leased to us; not
sent) and the cursor moves past the batch. Every replica also claims due rows of that table
(retries, and events queued behind an earlier event of their message) and sends them the same
way. Requests run as tasks from one local queue, within the sink's window: the loop never waits
for a request, so a slow or failing message holds one slot, not the sink.

Failure paths:
- receiver down, timing out, 3xx/4xx/5xx: the event is tried again on the retry schedule,
  then dead-lettered (tracker.sink_failures); other messages go on meanwhile.
- 429/502/503/504: the same, never sooner than Retry-After; the sink pauses and halves its
  window; its queued claims are handed back.
- 410: the sink is disabled (logged, tracker.sink_status.disabled) until `tracker sinks enable`.
- database unavailable (tracker.db.is_outage): answers are kept in memory and recorded once it
  answers; a batch not settled (crash, kill -9) is read again from the cursor and a claimed row
  not recorded comes due again when its lease ends: both are sent again with the same
  webhook-id (at least once). A queued claim older than answers.STALE_CLAIM_S is handed back
  unsent, so that no request can outlive its lease.
- a statement the database refuses (no outage: a data error, a constraint): raised to the
  supervisor, which logs, counts and restarts the loop, and /readyz names it while it lasts;
  the batch not settled stays in hand and is settled again after the restart.
- the sink's row gone from the database (forgotten under the daemon): store.SinkGone, the
  supervisor's as above, at the next read or settle or within store.SEEN_EVERY_S (Sinks.see);
  nothing is sent and no cursor is made again until the row is back.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import random
import secrets
import time
from typing import Callable

import asyncpg

from tracker import metrics
from tracker.config_types import SinksConfig, WebhookSinkConfig
from tracker.db import DB_ERRORS, is_outage
from tracker.logging import get_logger
from tracker.sinks import delivery, signing, store
from tracker.sinks.answers import Answers
from tracker.sinks.batch import ReadBatch
from tracker.sinks.delivery import Done
from tracker.sinks.policy import EventFilter, Outcome, Window
from tracker.throttle import Throttle
from tracker.sinks.settings import public_url
from tracker.supervisor import beat

log = get_logger("tracker.sinks.webhook")

LEASE_MARGIN_S = 10.0  # a claim's lease: the request's timeout and this
RECORD_WAIT_S = 0.01  # claimed rows' answers are written in batches: at most this late
BATCH_BUDGET_S = 0.5  # a read batch is settled by then, answers in or not
MAX_OPEN_BATCHES = 16  # read batches sent and not settled yet (settled in order)


class WebhookSink(Answers):
    kind = "webhook"

    def __init__(self, cfg: WebhookSinkConfig, pool: asyncpg.Pool, sinks: SinksConfig, *,
                 rand: Callable[[], float] = random.random):
        self.cfg, self.pool, self.name = cfg, pool, cfg.name
        self.poll_interval_s, self.batch_size = sinks.poll_interval_s, sinks.batch_size
        self.keys = [signing.parse_secret(s) for s in cfg.secrets]
        self.filter = EventFilter.of(cfg.vendors, cfg.states)
        self.rand = rand
        self.lease_s = cfg.timeout_s + LEASE_MARGIN_S
        self.reader_lease_s = BATCH_BUDGET_S + self.lease_s
        self.notified = asyncio.Event()  # new events in the outbox (or a redrive, an enable)
        self.changed = asyncio.Event()  # anything the loop should look at
        self.stopping = False
        self.finish_by = math.inf  # time.monotonic(): requests in flight at a stop get until then
        self.window = Window(cfg.concurrency)
        self.batches: collections.deque[ReadBatch] = collections.deque()  # read, not settled
        self.batch_of: dict[int, ReadBatch] = {}  # event id -> its open batch, until answered
        self.more = False  # the last read was a full batch: more may wait
        self.queue: collections.deque[tuple[store.Claimed, float]] = collections.deque()
        self.in_flight: dict[asyncio.Task, int] = {}  # task -> event id
        self.results: list[store.Result] = []  # claimed rows' answers, not written yet
        self.alarms: list[Done] = []  # 410 and throttling answers, not acted on yet
        self.first_result_at = math.inf
        self.due = True  # claimed rows may be due
        self.disabled = False
        self.gone = False  # its row is gone from the database (Sinks.see): the loop fails
        self.hold = False  # an alarm came back: nothing starts until the loop has acted on it
        self.paused_until = 0.0  # loop time
        self.retry_at = math.inf  # loop time: our soonest retry, or a lease ending
        self.throttled_in_a_row = 0
        self._counts = {o: metrics.sink_deliveries.labels(self.name, o.value)
                        for o in Outcome if o is not Outcome.released}
        self._latency = metrics.sink_delivery_seconds.labels(self.name)
        # a receiver gone for days dead-letters every event: a line a minute, not one each
        self._dead_lines = Throttle()
        self._bug_lines = Throttle()  # a delivery's own error, with its traceback: a line a minute

    def wake(self) -> None:
        self.notified.set()
        self.changed.set()

    def stop(self, grace_s: float = math.inf) -> None:
        """Stop; requests in flight get at most `grace_s` (the supervisor cancels the loop a
        little later, and what they answered must be recorded before that)."""
        self.stopping = True
        self.finish_by = time.monotonic() + grace_s
        self.changed.set()

    # --- the loop ---------------------------------------------------------------------------------

    async def run(self) -> None:
        self.token = secrets.token_hex(8)  # this run's claims; a restart's are new
        self.loop = asyncio.get_running_loop()
        async with delivery.client(self.cfg.concurrency, self.cfg.timeout_s) as http:
            self.http = http
            log.info("webhook sink started", sink=self.name, receiver=public_url(self.cfg.url),
                     secrets=len(self.keys), concurrency=self.cfg.concurrency)
            try:
                await self._loop()
            except BaseException:
                await self._finish(failing=True)  # the loop's own error is the one reported
                raise
            await self._finish()

    async def _loop(self) -> None:
        last_read, more, backoff = -math.inf, False, 0.5
        while not self.stopping:
            if self.gone:
                raise store.SinkGone(self.name)
            self.changed.clear()
            now = self.loop.time()
            if now >= self.retry_at:
                self.retry_at, self.due = math.inf, True
            if self.queue and len(self.in_flight) < self.window.size and self._sending(now):
                self._start_queued()  # a pause has ended: what waited in the queue goes out
            backstop = now - last_read >= self.poll_interval_s
            want_read = self.notified.is_set() or more or backstop  # once no batch is open
            record = bool(self.results) and (len(self.results) >= max(1, self.window.size // 2)
                                             or now >= self.first_result_at + RECORD_WAIT_S)
            settle = bool(self.batches) and self._settling(self.batches[0], now)
            reading = want_read and (self._may_read() or settle)  # read right after settling
            room = 2 * self.window.size - len(self.queue) - len(self.in_flight)
            claim = self.due and self._sending(now) and room >= max(1, self.window.size // 2)
            try:
                if record or settle or reading or claim or self.alarms:
                    with beat().working():  # progress: a turn done (requests run outside it)
                        async with self.pool.acquire() as conn:
                            if await self._turn(conn, record, settle, reading, backstop):
                                last_read, more = now, self.more
                else:
                    beat().progress()
                backoff = 0.5
            except DB_ERRORS as e:
                if not is_outage(e):
                    raise  # a statement refused: the supervisor's (logged, counted, restarted, /readyz)
                log.warning("webhook sink: database unavailable; will retry", sink=self.name,
                            error=type(e).__name__)
                await asyncio.sleep(backoff)
                backoff, last_read = min(backoff * 2, 5.0), -math.inf
                continue
            if more and self._may_read() and not self.disabled:
                continue
            now = self.loop.time()
            wake_at = min(last_read + self.poll_interval_s, self.retry_at,
                          self.first_result_at + RECORD_WAIT_S,
                          self.batches[0].started + BATCH_BUDGET_S if self.batches else math.inf,
                          self.paused_until if (self.due or self.queue) and self.paused_until > now
                          else math.inf)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), max(0.0, wake_at - now))

    async def _turn(self, conn: asyncpg.Connection, record: bool, settle: bool, reading: bool,
                    backstop: bool) -> bool:
        """One turn's database work; True when it read the outbox."""
        if self.alarms:
            await self._act_on_alarms(conn)
        if record or settle:  # a batch's settling may need its handed-over rows' earlier answers
            await self._record(conn)
        while settle and self.batches and self._settling(self.batches[0], self.loop.time()):
            await self._settle(conn)
        read = reading and self._may_read()
        if read:
            self.notified.clear()
            self.more = await self._read(conn)
            if backstop:
                await self._next_due(conn)
        now = self.loop.time()
        room = 2 * self.window.size - len(self.queue) - len(self.in_flight)
        if self.due and self._sending(now) and room >= max(1, self.window.size // 2):
            claimed = await store.claim(conn, self.name, room, self.lease_s, self.token)
            self.due = len(claimed) == room
            at = self.loop.time()
            self.queue.extend((c, at) for c in claimed)
            self._start_queued()
        return read

    def _may_read(self) -> bool:
        """Room for another batch: not too many open, not too much unsent."""
        return len(self.batches) < MAX_OPEN_BATCHES and len(self.queue) < 2 * self.window.size

    def _sending(self, now: float) -> bool:
        return not (self.disabled or self.stopping or self.hold) and now >= self.paused_until

    async def _next_due(self, conn: asyncpg.Connection) -> None:
        """On the timer: when the sink's next pending row comes due (another replica's, or one
        whose lease ended)."""
        due_s = await store.next_due_s(conn, self.name)
        if due_s is not None:
            if due_s <= 0:
                self.due = True
            else:
                self.retry_at = min(self.retry_at, self.loop.time() + due_s)

    # --- reading the outbox ------------------------------------------------------------------------

    async def _read(self, conn: asyncpg.Connection) -> bool:
        """Learn the sink's shared state (another replica's 410 or pause, an operator's enable)
        and, holding the reader lease, read a batch and start sending it; True when the batch
        was full (more may wait)."""
        st = await store.take_reader(conn, self.name, self.token, self.reader_lease_s)
        if self.disabled and not st.disabled:
            log.info("webhook sink enabled again", sink=self.name)
            self.due = True
        self.disabled = st.disabled
        # The shared pause is the one that holds (this replica's own is written there first):
        # another replica's lengthens it, an operator's `tracker sinks enable` ends it.
        self.paused_until = self.loop.time() + st.paused_s
        if not st.ours:
            return False
        # After the open batches' events; with none open, after the cursor (which may have been
        # moved meanwhile by another replica that held the lease).
        after = self.batches[-1].last_pos if self.batches else 0
        rows = await store.read(conn, self.name, after, self.batch_size)
        if not rows:
            return False
        busy = set().union(*(b.messages for b in self.batches))
        batch = ReadBatch.of(rows, self.filter, self.loop.time(), busy)
        self.batches.append(batch)
        self.batch_of.update((event_id, batch) for event_id in batch.open)
        at = self.loop.time()
        self.queue.extend((c, at) for c in batch.open.values())
        self._start_queued()
        return len(rows) >= self.batch_size

    def _settling(self, b: ReadBatch, now: float) -> bool:
        """Settle the oldest batch now: every answer is in, its budget is spent, or nothing of
        it is being sent any more (paused, disabled, stopping)."""
        return (b.done or now - b.started >= BATCH_BUDGET_S
                or (not self._sending(now) and not set(self.in_flight.values()) & set(b.open)))

    async def _settle(self, conn: asyncpg.Connection) -> None:
        """Settle the oldest open batch. Detached first: an answer that comes back while this is
        written is a table row's."""
        b = self.batches.popleft()
        for event_id in b.open:
            self.batch_of.pop(event_id, None)
        self.queue = collections.deque((c, at) for c, at in self.queue if c.event_id not in b.open)
        rows, handed_over = b.settlement(self.in_flight.values())
        try:
            await store.settle(conn, self.name, self.token, self.lease_s, rows, b.last_event_id,
                               b.delivered > 0)
        except BaseException:
            self.batches.appendleft(b)  # settled again later; what it lost track of is sent again
            raise
        self.due = self.due or bool(rows)
        if rows:
            log.debug("read batch settled", sink=self.name, into_table=len(rows),
                      handed_over=len(handed_over))

    async def _finish(self, failing: bool = False) -> None:
        """On the way out: hand back what is queued, give requests in flight their time (their
        timeout, but not past a stop's grace), record what came back, settle the batches and
        drop the reader lease; what is left is sent again (its lease ends, or the cursor is
        still before it). A refused statement is raised (the supervisor's) unless the loop is
        failing already."""
        self._hand_back_queue()
        if self.in_flight:
            wait_s = max(0.0, min(self.cfg.timeout_s, self.finish_by - time.monotonic()))
            await asyncio.wait(list(self.in_flight), timeout=wait_s)
            for t in list(self.in_flight):
                t.cancel()
            await asyncio.gather(*self.in_flight, return_exceptions=True)
        try:
            async with self.pool.acquire() as conn:
                await self._record(conn)
                while self.batches:
                    await self._settle(conn)
                await store.drop_reader(conn, self.name, self.token)
        except DB_ERRORS as e:
            if not (failing or is_outage(e)):
                raise
            log.warning("webhook sink: answers not recorded; those events will be sent again",
                        sink=self.name, error=type(e).__name__)
