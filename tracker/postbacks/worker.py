"""The apply worker: postbacks stored by the group commit, applied through the reducer.

The group commit applies a small batch, written while no other write is in flight, in the
transaction that stores it (through apply_stored, then applied() after the commit). Any other
batch, and one the database refused to apply as it stored it, is handed over stored and
unapplied with what the handlers parsed (`take`); an applier applies a batch of them in one
transaction and marks their rows processed. The worker (component
`postbacks` under the supervisor) also sweeps: rows left unprocessed by a crash, a lost database
or another replica are parsed again from the stored request and applied (at start, every few
seconds, after a failure). A second applier (`postbacks:apply:1`) takes what was stored while
the worker applies. A batch the database refuses for what it holds, or one a message's lock holds
past lock_timeout, is applied row by row: a row refused alone is set aside with its error
(tracker.postback_problems); a row still held stays unprocessed and, once the others are applied,
the lock's error is raised for the supervisor (counted, /readyz names the component while it
lasts), and the sweep tries the row again. Progress for the supervisor: a batch applied, a
sweep done, or (the other applier) nothing left to apply: one that failed and then found
nothing to do is no longer failing, with no new postback needed to say so.
"""
from __future__ import annotations

import asyncio
import contextlib

import asyncpg

from tracker.config_types import Config
from tracker.db import is_outage, lock_not_had, row_refused
from tracker.db import queries as q
from tracker.logging import get_logger
from tracker.postbacks.process import (BatchFailed, Outcome, Parsed, adopt_late, apply_stored,
                                       process_pending, process_received)
from tracker.supervisor import beat
from tracker.throttle import Throttle

log = get_logger("tracker.postbacks")

WORKER_BATCH = 500  # rows parsed again per sweep transaction
RECEIVED_BATCH = 1000  # rows applied per transaction with what their handlers parsed
APPLIERS = 2  # stored batches applied at a time: the worker, and one more while it is busy
SWEEP_S = 5.0  # the worker looks for rows left by others (a crash, another replica) this often
STOP_GRACE_S = 10.0  # stop(): time the worker gets to apply what was stored
# Parsed postbacks kept in memory for the appliers at most; beyond, a stored batch is left to the
# sweep, which parses it again from its rows: the backlog of an apply that cannot keep up (a
# message's lock held for long, a slow database) is then held by the database, not in memory.
RECEIVED_MAX = 20_000

class ApplyWorker:
    """The worker (sweeps too) and the other appliers, sharing what the handlers hand over."""

    def __init__(self, supervisor, config: Config, pool: asyncpg.Pool, publisher=None) -> None:
        self.supervisor = supervisor
        self.config = config
        self.pool = pool
        self.publisher = publisher  # woken when an applied batch made transitions
        self.received: list[Parsed] = []  # stored, to apply with what the handler parsed
        self.wake = asyncio.Event()
        self.wake_more = asyncio.Event()  # the other appliers'
        self.stopping = False
        self.tasks: list[asyncio.Task] = []
        self._over = Throttle()  # take() over RECEIVED_MAX: a line a minute

    def start(self) -> None:
        self.tasks = [self.supervisor.spawn("postbacks", self._work, stopping=lambda: self.stopping)]
        self.tasks += [self.supervisor.spawn(f"postbacks:apply:{i}", self._apply_more,
                                             stopping=lambda: self.stopping)
                       for i in range(1, APPLIERS)]

    async def apply_stored(self, conn: asyncpg.Connection, items: list[Parsed]) -> Outcome:
        """In the transaction that stores these rows (marked processed): apply them."""
        return await apply_stored(conn, self.config, items)

    def busy(self) -> bool:
        """Stored postbacks wait to be applied."""
        return bool(self.received)

    def take(self, items: list[Parsed]) -> None:
        """Postbacks just stored (committed) unapplied, with what their handlers parsed."""
        first = not self.received
        if len(self.received) + len(items) > RECEIVED_MAX:
            if (left_out := self._over.allow("over")) is not None:
                log.warning("postbacks stored faster than they are applied: left to the sweep",
                            rows=len(items), waiting=len(self.received), left_out=left_out)
            return
        self.received += items
        if first:  # the worker applies at once when idle (woken by the commit, not a timer);
            self.wake.set()  # while it applies, the next batch grows,
            self.wake_more.set()  # or another applier takes it

    async def stop(self) -> None:
        """Apply what was stored (STOP_GRACE_S at most), then stop; rows not applied stay
        unprocessed for the next start's sweep."""
        self.stopping = True
        self.wake.set()
        self.wake_more.set()
        await self.supervisor.stop_tasks(self.tasks, STOP_GRACE_S)
        self.tasks = []

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        backoff, sweep_at = 0.5, 0.0  # sweep at once: rows a crash may have left
        while not (self.stopping and not self.received):
            self.wake.clear()
            try:
                with beat().working():  # progress: a batch applied, or a sweep done
                    async with self.pool.acquire() as conn:
                        if self.received:  # what was stored while the last batch applied
                            items = self.received[:RECEIVED_BATCH]
                            self.received = self.received[RECEIVED_BATCH:]
                            await self._apply_received(conn, items)
                            continue
                        if loop.time() >= sweep_at and not self.stopping:
                            if await self._apply_some(conn) >= WORKER_BATCH:
                                continue  # more waiting
                            sweep_at = loop.time() + SWEEP_S
                backoff = 0.5
            except Exception as e:
                # What was taken from `received` is still an unprocessed row: the sweep gets it
                # (at once when the supervisor starts the worker again after a bug).
                if not is_outage(e):
                    raise
                sweep_at = 0.0
                log.warning("postback worker: database unavailable; will retry",
                            error=type(e.__cause__ or e).__name__)
                if self.stopping:
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if self.stopping:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), max(0.0, sweep_at - loop.time()))

    async def _apply_more(self) -> None:
        """Another applier: it applies what was stored while the worker applies a batch, so
        that a batch waits less for the one before it. Only the worker sweeps: a batch this
        one fails to apply stays unprocessed rows, and the worker's sweep applies them."""
        while not (self.stopping and not self.received):
            self.wake_more.clear()
            if not self.received:
                if self.stopping:
                    return
                beat().progress()  # nothing to apply is no failing (after a restart, say)
                await self.wake_more.wait()
                continue
            items = self.received[:RECEIVED_BATCH]
            self.received = self.received[RECEIVED_BATCH:]
            try:
                with beat().working():
                    async with self.pool.acquire() as conn:
                        await self._apply_received(conn, items)
            except Exception as e:
                if not is_outage(e):
                    raise
                log.warning("postback applier: database unavailable; the sweep will apply",
                            error=type(e.__cause__ or e).__name__)
                if self.stopping:
                    return
                await asyncio.sleep(0.5)

    async def _apply_received(self, conn: asyncpg.Connection, items: list[Parsed]) -> None:
        try:
            out = await process_received(conn, self.config, items)
        except BatchFailed as e:
            if not row_by_row(e) or conn.is_closed():  # the rows stay unprocessed: the sweep's
                raise
            await self._one_by_one(conn, e)  # from the stored rows, parsed again
            return
        await self.applied(conn, out)

    async def applied(self, conn: asyncpg.Connection, out: Outcome) -> None:
        """After the commit of a batch applied (here, or by apply_stored's transaction)."""
        await adopt_late(conn, out)
        if out.transitions and self.publisher is not None:
            self.publisher.wake.set()  # committed: publish now (the NOTIFY would take a hop more)
        if out.rows:
            log.debug("postbacks applied", rows=out.rows, observations=out.observations,
                      transitions=out.transitions)

    async def _apply_some(self, conn: asyncpg.Connection) -> int:
        """One batch; when the database refuses a batch for what it holds, the rows one by
        one, and a row refused alone is set aside with its error (tracker.postback_problems)."""
        try:
            out = await process_pending(conn, self.config, WORKER_BATCH)
        except BatchFailed as e:
            if not row_by_row(e) or conn.is_closed():  # (passing trouble: the supervisor's, counted)
                raise
            await self._one_by_one(conn, e)
            return 0
        if out.rows:
            log.debug("postbacks applied", rows=out.rows, observations=out.observations,
                      transitions=out.transitions, unreadable=out.unreadable)
        return out.rows

    async def _one_by_one(self, conn: asyncpg.Connection, failed: BatchFailed) -> None:
        log.warning("postback batch not applied; applying its rows one by one",
                    rows=len(failed.ids), error=type(failed.__cause__).__name__)
        held = None
        for pid in failed.ids:
            try:
                await process_pending(conn, self.config, 1, [pid])
            except BatchFailed as one:
                if conn.is_closed() or not row_by_row(one):
                    raise
                if lock_not_had(one):
                    held = one  # left unprocessed: the sweep's, once the lock is gone
                    continue
                reason = f"not applied: {type(one.__cause__).__name__}: {one.__cause__}"[:500]
                await conn.execute(q.FAIL_POSTBACK, pid, reason)
                log.error("postback set aside", postback_id=pid, error=reason)
        if held is not None:
            raise held


def row_by_row(e: BatchFailed) -> bool:
    """Whether the rows of a failed batch are applied one by one: the database refused the batch
    for a row it holds, or a message's lock held it (the others are applied around that one).
    Anything else (a privilege, a column gone) leaves the rows unprocessed, raised for the
    supervisor; the sweep applies them once the database takes them again."""
    return row_refused(e) or lock_not_had(e)
