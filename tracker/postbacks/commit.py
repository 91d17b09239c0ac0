"""Group commit: many concurrent postbacks stored by one INSERT, one transaction, one WAL flush.

`await store(raw)` returns once the row is committed, or raises Unavailable (the database failed,
timed out, or we are stopping) and the caller answers 503 so that the vendor retries. A batch is
written when it holds `max_items` postbacks, when its oldest has waited `max_wait_s`, or at
once when no write is in progress (an idle database gains nothing from waiting). Up to
`writers` batches are written at a time; while they are, the next batch grows.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Callable

import asyncpg

from tracker.db import queries as q
from tracker.logging import get_logger
from tracker.postbacks.core import RawPostback

log = get_logger("tracker.postbacks")


class Unavailable(Exception):
    """The postback was not stored; the vendor should retry."""


class GroupCommit:
    def __init__(self, pool: asyncpg.Pool, *, max_items: int, max_wait_s: float,
                 writers: int = 2, timeout_s: float = 5.0, max_pending: int | None = None,
                 on_commit: Callable[[], None] = lambda: None) -> None:
        self.pool = pool
        self.max_items = max(1, max_items)
        self.max_wait_s = max(0.0, max_wait_s)
        self.timeout_s = timeout_s
        self.max_pending = max_pending or 8 * self.max_items
        self.on_commit = on_commit
        self._writers = asyncio.Semaphore(writers)
        self._pending: list[tuple[RawPostback, asyncio.Future, float]] = []
        self._arrived = asyncio.Event()
        self._writes: set[asyncio.Task] = set()
        self._task: asyncio.Task | None = None
        self._closing = False
        self._failed, self._failure_logged = 0, 0.0
        self.batches = 0  # committed batches and rows (tests, logs)
        self.rows = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="postbacks-group-commit")

    async def store(self, raw: RawPostback) -> None:
        if (self._closing or self._task is None or self._task.done()
                or len(self._pending) >= self.max_pending):
            raise Unavailable("not accepting postbacks now")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._pending.append((raw, fut, loop.time()))
        self._arrived.set()
        try:  # a bound even if something below is stuck; a late commit is a harmless duplicate
            await asyncio.wait_for(asyncio.shield(fut), 2 * self.timeout_s)
        except TimeoutError:
            raise Unavailable("timed out") from None

    async def stop(self) -> None:
        """Write what is pending, wait for the writes in progress, then stop."""
        self._closing = True
        self._arrived.set()
        if self._task is not None:
            await self._task
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            busy = self._writers.locked() or bool(self._writes)
            wait = self._pending[0][2] + self.max_wait_s - loop.time()
            if busy and wait > 0 and len(self._pending) < self.max_items and not self._closing:
                self._arrived.clear()  # let the batch grow: wake on the next arrival to recheck
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), wait)
                continue
            await self._writers.acquire()  # the batch keeps growing while all writers are busy
            batch, self._pending = self._pending[:self.max_items], self._pending[self.max_items:]
            task = asyncio.create_task(self._write(batch), name="postbacks-write")
            self._writes.add(task)
            task.add_done_callback(self._written)

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
        self._arrived.set()  # a writer is free: what waits may go now

    async def _write(self, batch: list[tuple[RawPostback, asyncio.Future, float]]) -> None:
        rows = [b[0] for b in batch]
        error: BaseException | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self.pool.acquire() as conn:
                    # One statement outside a transaction block: committed (WAL flushed, with
                    # the default synchronous_commit) when it returns.
                    await conn.execute(
                        q.INSERT_POSTBACKS,
                        [r.vendor for r in rows], [r.method for r in rows],
                        [r.content_type for r in rows], [r.query for r in rows],
                        [r.body for r in rows], [r.source for r in rows],
                        [r.received_at for r in rows])
        except Exception as e:  # any failure: nobody is told 200, everybody retries
            error = e
            self._log_failure(e, len(rows))
        for _, fut, _ in batch:
            if not fut.done():
                if error is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(Unavailable(type(error).__name__))
        if error is None:
            self.batches += 1
            self.rows += len(rows)
            self.on_commit()
