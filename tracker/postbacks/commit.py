"""Group commit: many concurrent postbacks stored by one COPY, one transaction, one WAL flush.

`await store(raw, found)` returns the row's id once it is committed, or raises Unavailable (the
database failed, timed out, or we are stopping) and the caller answers 503 so that the vendor
retries. Each batch is stored by one COPY. A small batch written while no other write is in
flight is also applied through the reducer (`found`: what the handlers parsed) in the same
transaction, its rows marked processed as they are written: one commit and its WAL flush
instead of two, and no second write of every row. Any other batch, and one whose reports the
database refuses (not an outage), is stored alone and handed to the apply worker (worker.py),
which applies it, and finds the row at fault if there is one. A batch is
written when it holds `max_items` postbacks, when its oldest has waited `max_wait_s`, or at
once when no write is in progress (an idle database gains nothing from waiting). Up to
`writers` batches are written at a time; while they are, the next batch grows. A postback that
has waited past the timeout is answered 503 whatever its write is doing (_expire).
"""
from __future__ import annotations

import asyncio
import itertools
import time
from typing import Callable, NamedTuple, Protocol

import asyncpg

from tracker.adapters.base import Observation
from tracker.db import row_refused
from tracker.db import queries as q
from tracker.logging import get_logger
from tracker.supervisor import beat
from tracker.postbacks.core import RawPostback
from tracker.postbacks.rows import copy_rows, copy_unapplied
from tracker.postbacks.process import Outcome, Parsed
from tracker.db import clock as db_clock

log = get_logger("tracker.postbacks")


ID_BLOCK = 1024
# A batch of at most this many, written while no other write is in flight, is applied in the
# transaction that stores it (one commit, each row written once). A larger batch, or one
# written beside another, is stored alone and applied by the apply worker: under load the 200
# waits for one round trip, not five, and the writes overlap (docs/performance.md, session 12).
INLINE_MAX = 16
EXPIRY_CHECK_S = 1.0  # while postbacks wait, those waiting past the timeout are looked for this often


class Unavailable(Exception):
    """The postback was not stored; the vendor should retry."""


class Refused(Exception):
    """The database refuses to store this postback itself (not an outage): sent again, it would
    be refused again (answered 400)."""


class Applier(Protocol):
    """What applies a batch (worker.ApplyWorker)."""

    async def apply_stored(self, conn: asyncpg.Connection, items: list[Parsed]) -> Outcome: ...
    async def applied(self, conn: asyncpg.Connection, out: Outcome) -> None: ...
    def busy(self) -> bool: ...
    def take(self, items: list[Parsed]) -> None: ...


class Entry(NamedTuple):
    """A postback waiting for its batch's commit."""
    raw: RawPostback
    found: list[Observation]  # what its handler parsed
    answer: asyncio.Future  # its row id once committed, or Unavailable
    since: float  # loop time


class GroupCommit:
    def __init__(self, pool: asyncpg.Pool, applier: Applier, *, max_items: int,
                 max_wait_s: float, writers: int = 2, timeout_s: float = 5.0,
                 max_pending: int | None = None) -> None:
        self.pool = pool
        self.applier = applier
        self.max_items = max(1, max_items)
        self.max_wait_s = max(0.0, max_wait_s)
        self.timeout_s = timeout_s
        self.max_pending = max_pending or 8 * self.max_items
        self._writers = asyncio.Semaphore(writers)
        self._pending: list[Entry] = []
        self._wake = asyncio.Event()  # set: the batch may be ready (never once per arrival)
        self._timer: asyncio.TimerHandle | None = None
        self._writes: dict[asyncio.Task, list[Entry]] = {}  # each write in progress: its batch
        self._expiry: asyncio.TimerHandle | None = None  # the next look for answers overdue
        self._task: asyncio.Task | None = None
        self._closing = False
        self._running = False  # the writer loop runs (not between a failure and its restart)
        self._failed, self._failure_logged = 0, 0.0
        self._ids: list[int] = []  # drawn from the sequence ahead, a block at a time
        self.batches = 0  # committed batches and rows (tests, logs)
        self.rows = 0
        self.inline = 0  # of which applied in the transaction that stored them
        self.refused = 0  # of which stored unapplied: the database refused what they hold

    def start(self, spawn: Callable[..., asyncio.Task] | None = None) -> None:
        """The writer loop, as component `postbacks-commit` under the supervisor's `spawn`
        (logged with its traceback, counted, started again, named by /readyz), else a task."""
        self._running = True  # from now: the loop takes what is stored before its first turn
        if spawn is None:
            self._task = asyncio.create_task(self._run(), name="postbacks-group-commit")
        else:
            self._task = spawn("postbacks-commit", self._run, stopping=lambda: self._closing)
        self._task.add_done_callback(self._fail_pending)

    async def store(self, raw: RawPostback, found: list[Observation]) -> int:
        if (self._closing or not self._running or self._task is None or self._task.done()
                or len(self._pending) >= self.max_pending):
            raise Unavailable("not accepting postbacks now")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._pending.append(Entry(raw, found, fut, loop.time()))
        if len(self._pending) == 1 or len(self._pending) >= self.max_items:
            self._wake.set()
        if self._expiry is None:
            self._expiry = loop.call_later(EXPIRY_CHECK_S, self._expire)
        return await fut  # bounded: every write has a timeout, and a dead writer loop fails all

    async def stop(self) -> None:
        """Write what is pending, wait for the writes in progress, then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    async def _run(self) -> None:
        self._running = True
        try:
            await self._batches()
        except Exception:
            self._running = False  # until the supervisor starts it again: 503, retried
            self._answer_pending()  # a bug: nobody waits for the loop's restart
            raise

    async def _batches(self) -> None:
        loop = asyncio.get_running_loop()
        progress = beat().progress  # idle or a batch handed to a writer: the loop works
        while True:
            self._wake.clear()
            if not self._pending:
                if self._closing:
                    return
                progress()
                await self._wake.wait()
                continue
            due = self._pending[0].since + self.max_wait_s
            if (self._writes and loop.time() < due and len(self._pending) < self.max_items
                    and not self._closing):
                if self._timer is None:  # one timer per batch: wake when its oldest is due
                    self._timer = loop.call_at(due, self._wake.set)
                await self._wake.wait()
                continue
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            await self._writers.acquire()  # the batch keeps growing while all writers are busy
            if not self._pending:  # all answered 503 meanwhile (_expire): nothing to write
                self._writers.release()
                continue
            batch, self._pending = self._pending[:self.max_items], self._pending[self.max_items:]
            progress()
            task = asyncio.create_task(self._write(batch), name="postbacks-write")
            self._writes[task] = batch
            task.add_done_callback(self._written)

    async def _take_ids(self, conn: asyncpg.Connection, n: int) -> list[int]:
        """Row ids known before the insert (each caller learns its own for sure), drawn from
        the table's sequence a block at a time; a failed write leaves a harmless gap."""
        while len(self._ids) < n:
            block = await conn.fetchval(q.NEXT_POSTBACK_IDS, max(n, ID_BLOCK))
            self._ids.extend(block)  # after the await: another writer may have refilled meanwhile
        ids, self._ids = self._ids[:n], self._ids[n:]
        return ids

    def _log_failure(self, e: Exception, count: int) -> None:
        """One line per second at most while the database is down."""
        self._failed += count
        now = time.monotonic()
        if now - self._failure_logged >= 1.0:
            log.warning("postbacks not stored; answered 503", count=self._failed,
                        error=type(e).__name__, detail=str(e)[:200])
            self._failed, self._failure_logged = 0, now

    def _written(self, task: asyncio.Task) -> None:
        self._writes.pop(task, None)
        self._writers.release()
        self._wake.set()  # a writer is free: what waits may go now

    def _expire(self) -> None:
        """Answer 503 every postback that has waited past the timeout. A write's own timeout
        ends it only once the database answers (asyncpg's cancel of the statement, and the hand-
        back of its connection, wait for the server): while it does not (a network partition, a
        storage stall), its batch and the batches waiting for a writer got no answer at all.
        The vendor retries; a write that commits later has stored the row anyway, and the same
        report stored twice changes nothing."""
        self._expiry = None
        loop = asyncio.get_running_loop()
        overdue = loop.time() - self.timeout_s
        late = [e for e in itertools.chain(self._pending, *self._writes.values())
                if e.since < overdue and not e.answer.done()]
        for e in late:
            e.answer.set_exception(Unavailable("the database did not answer in time"))
        if late:
            self._pending = [e for e in self._pending if not e.answer.done()]
            self._log_failure(TimeoutError(f"the database did not answer within {self.timeout_s:g} s"),
                              len(late))
        if self._pending or self._writes:
            self._expiry = loop.call_later(EXPIRY_CHECK_S, self._expire)

    def _fail_pending(self, task: asyncio.Task) -> None:
        """The writer loop ended (stopped, or a bug): nobody may wait forever."""
        if not task.cancelled() and task.exception() is not None:
            log.error("postback group commit failed", error=repr(task.exception()))
        self._answer_pending()

    def _answer_pending(self) -> None:
        for e in self._pending:
            if not e.answer.done():
                e.answer.set_exception(Unavailable("not accepting postbacks now"))
        self._pending.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _write(self, batch: list[Entry]) -> None:
        raws = [e.raw for e in batch]
        answered = False
        # (self._writes holds this write too)
        inline = len(batch) <= INLINE_MAX and len(self._writes) <= 1 and not self.applier.busy()
        try:
            # the acquire's timeout bounds the hand-back too (a cancel waits for the server to
            # confirm it: for ever where it went silent, and the writer with it)
            async with asyncio.timeout(self.timeout_s), self.pool.acquire(timeout=self.timeout_s) as conn:
                ids = await self._take_ids(conn, len(raws))
                items = [Parsed(i, e.raw.received_at, e.found) for i, e in zip(ids, batch)]
                if inline:
                    try:
                        async with conn.transaction():
                            await copy_rows(conn, ids, raws, db_clock.now())
                            out = await self.applier.apply_stored(conn, items)
                    except Exception as e:
                        if conn.is_closed():
                            raise
                        # What the apply needs may be refused (a row's contents) or not had in
                        # time (a message's lock, past lock_timeout): the batch is stored alone
                        # and the worker applies it (or sets a refused row aside, logged). The
                        # database itself away: the COPY below fails too, answered 503.
                        if row_refused(e):
                            log.warning("postback batch refused; stored unapplied for the worker",
                                        rows=len(raws), error=type(e).__name__)
                            self.refused += 1
                    else:
                        self._answer(batch, ids, None)
                        answered = True
                        self.inline += 1
                        await self.applier.applied(conn, out)
                        return
                await copy_unapplied(conn, ids, raws)  # one COPY: its own commit
                self._answer(batch, ids, None)
                answered = True
                self.applier.take(items)
        except Exception as e:
            if answered:  # stored and applied; what failed was only the look for late orphans
                log.warning("postbacks applied; orphans left to the sweep", error=type(e).__name__)
                return
            if row_refused(e) and len(batch) > 1:  # one row refused: the rest stored apart
                half = len(batch) // 2
                await self._write(batch[:half])
                await self._write(batch[half:])
                return
            # any failure before the commit: nobody is told 200, everybody retries (but a
            # postback the database refuses alone: answered 400, it would be refused again,
            # and the handler logs it with its vendor and source)
            if not row_refused(e):
                self._log_failure(e, len(raws))
            self._answer(batch, None, e)

    def _answer(self, batch: list[Entry], ids: list[int] | None,
                error: BaseException | None) -> None:
        """Each waiting handler: its row's id (committed), or Unavailable (answer 503)."""
        refused = error is not None and len(batch) == 1 and row_refused(error)
        for i, e in enumerate(batch):
            if not e.answer.done():
                if error is None:
                    e.answer.set_result(ids[i])
                else:
                    e.answer.set_exception((Refused if refused else Unavailable)(type(error).__name__))
        if error is None:
            self.batches += 1
            self.rows += len(batch)
