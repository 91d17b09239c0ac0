"""Group commit: many concurrent postbacks stored by one INSERT, one transaction, one WAL flush.

`await store(raw)` returns the row's id once it is committed, or raises Unavailable (the
database failed, timed out, or we are stopping) and the caller answers 503 so that the vendor
retries. A batch is
written when it holds `max_items` postbacks, when its oldest has waited `max_wait_s`, or at
once when no write is in progress (an idle database gains nothing from waiting). Up to
`writers` batches are written at a time; while they are, the next batch grows.
"""
from __future__ import annotations

import asyncio
import time

import asyncpg

from tracker.db import queries as q
from tracker.logging import get_logger
from tracker.postbacks.core import RawPostback

log = get_logger("tracker.postbacks")


ID_BLOCK = 1024


class Unavailable(Exception):
    """The postback was not stored; the vendor should retry."""


class GroupCommit:
    def __init__(self, pool: asyncpg.Pool, *, max_items: int, max_wait_s: float,
                 writers: int = 2, timeout_s: float = 5.0, max_pending: int | None = None) -> None:
        self.pool = pool
        self.max_items = max(1, max_items)
        self.max_wait_s = max(0.0, max_wait_s)
        self.timeout_s = timeout_s
        self.max_pending = max_pending or 8 * self.max_items
        self._writers = asyncio.Semaphore(writers)
        self._pending: list[tuple[RawPostback, asyncio.Future, float]] = []
        self._wake = asyncio.Event()  # set: the batch may be ready (never once per arrival)
        self._timer: asyncio.TimerHandle | None = None
        self._writes: set[asyncio.Task] = set()
        self._task: asyncio.Task | None = None
        self._closing = False
        self._failed, self._failure_logged = 0, 0.0
        self._ids: list[int] = []  # drawn from the sequence ahead, a block at a time
        self.batches = 0  # committed batches and rows (tests, logs)
        self.rows = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="postbacks-group-commit")
        self._task.add_done_callback(self._fail_pending)

    async def store(self, raw: RawPostback) -> int:
        if (self._closing or self._task is None or self._task.done()
                or len(self._pending) >= self.max_pending):
            raise Unavailable("not accepting postbacks now")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._pending.append((raw, fut, loop.time()))
        if len(self._pending) == 1 or len(self._pending) >= self.max_items:
            self._wake.set()
        return await fut  # bounded: every write has a timeout, and a dead writer loop fails all

    async def stop(self) -> None:
        """Write what is pending, wait for the writes in progress, then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            if not self._pending:
                if self._closing:
                    return
                await self._wake.wait()
                continue
            due = self._pending[0][2] + self.max_wait_s
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
            batch, self._pending = self._pending[:self.max_items], self._pending[self.max_items:]
            task = asyncio.create_task(self._write(batch), name="postbacks-write")
            self._writes.add(task)
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
        self._writes.discard(task)
        self._writers.release()
        self._wake.set()  # a writer is free: what waits may go now

    def _fail_pending(self, task: asyncio.Task) -> None:
        """The writer loop ended (stopped, or a bug): nobody may wait forever."""
        if not task.cancelled() and task.exception() is not None:
            log.error("postback group commit failed", error=repr(task.exception()))
        for _, fut, _ in self._pending:
            if not fut.done():
                fut.set_exception(Unavailable("not accepting postbacks now"))
        self._pending.clear()

    async def _write(self, batch: list[tuple[RawPostback, asyncio.Future, float]]) -> None:
        rows = [b[0] for b in batch]
        error: BaseException | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self.pool.acquire() as conn:
                    ids = await self._take_ids(conn, len(rows))
                    # One COPY outside a transaction block: committed (WAL flushed, with
                    # synchronous_commit on) when it returns. Binary COPY costs PostgreSQL
                    # less per row than INSERT ... SELECT FROM unnest(arrays).
                    await conn.copy_records_to_table(
                        "postbacks", schema_name="tracker", columns=q.POSTBACK_COLUMNS,
                        records=[(i, r.vendor, r.method, r.content_type, r.query, r.body,
                                  r.source, r.received_at) for i, r in zip(ids, rows)])
        except Exception as e:  # any failure: nobody is told 200, everybody retries
            error = e
            self._log_failure(e, len(rows))
        for i, (_, fut, _) in enumerate(batch):
            if not fut.done():
                if error is None:
                    fut.set_result(ids[i])
                else:
                    fut.set_exception(Unavailable(type(error).__name__))
        if error is None:
            self.batches += 1
            self.rows += len(rows)
