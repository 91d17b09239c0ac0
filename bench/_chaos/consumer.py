"""A downstream consumer of transition events, as the contract describes one: it reads with
tracker.read_events, handles the events, and acknowledges in batches with tracker.ack_events
(every one to three batches); every few seconds it "crashes" (its connection dropped with events
read but not acknowledged: it must get those again) and starts over. It is woken by
LISTEN tracker_events, with a short timer as backstop, and survives the database going away.

What it measures, each of which must be zero:
- reread_after_ack: an event returned again after the consumer acknowledged it;
- never_read (after drain): a transition in the table that it never got;
- out_of_order: per message, an event whose from_state is not the to_state of the event the
  consumer got before for that message (a skipped or reordered event).
"""
from __future__ import annotations

import asyncio
import random

import asyncpg

NAME = "chaos-consumer"
READ = ("SELECT event_id, message_id, from_state::text, to_state::text"
        " FROM tracker.read_events($1, $2)")
DURABLE = {"synchronous_commit": "on"}  # its acknowledgements survive a crash
ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


class Consumer:
    def __init__(self, dsn: str, seed: int, batch: int = 300, crash_every_s: float = 4.0) -> None:
        self.dsn, self.batch, self.crash_every_s = dsn, batch, crash_every_s
        self.rng = random.Random(seed)
        self.read: set[int] = set()  # every event ever handed to us
        self.acked: set[int] = set()
        self.last_state: dict[int, str] = {}  # message -> to_state of the last event got
        self.reread_after_ack = 0
        self.out_of_order = 0
        self.rereads = 0  # allowed: got again after a crash, not acknowledged before
        self.crashes = 0
        self.reconnects = 0
        self.stop = asyncio.Event()
        self.wake = asyncio.Event()
        self.quiet = asyncio.Event()  # set: it neither reads nor acknowledges

    async def run(self) -> None:
        """Consume until stop is set; then read until nothing is left."""
        while True:
            try:
                conn = await asyncpg.connect(self.dsn, timeout=2, server_settings=DURABLE)
            except ERRORS:
                self.reconnects += 1
                await asyncio.sleep(0.5)
                continue
            try:
                if await self._session(conn):
                    return
            except ERRORS:
                self.reconnects += 1
                await asyncio.sleep(0.5)
            finally:
                conn.terminate()

    async def _session(self, conn: asyncpg.Connection) -> bool:
        """One connection's life; True when drained after stop."""
        await conn.add_listener("tracker_events", lambda *_: self.wake.set())
        loop = asyncio.get_running_loop()
        crash_at = loop.time() + self.crash_every_s * (0.5 + self.rng.random())
        pending: list[int] = []
        unacked_batches = 0
        while True:
            self.wake.clear()
            if self.quiet.is_set():
                await asyncio.sleep(0.1)
                continue
            stopping = self.stop.is_set()
            rows = await conn.fetch(READ, NAME, self.batch, timeout=10)
            for r in rows:
                self._got(r)
                pending.append(r["event_id"])
            if rows:
                unacked_batches += 1
                if loop.time() >= crash_at and not stopping:
                    self.crashes += 1  # gone before acknowledging what it read
                    return False
                if stopping or unacked_batches >= self.rng.randint(1, 3):
                    await conn.fetchval("SELECT tracker.ack_events($1, $2)", NAME, pending[-1],
                                        timeout=10)
                    self.acked.update(pending)
                    pending, unacked_batches = [], 0
            if len(rows) < self.batch:
                if stopping:
                    if pending:
                        await conn.fetchval("SELECT tracker.ack_events($1, $2)", NAME,
                                            pending[-1], timeout=10)
                        self.acked.update(pending)
                    return True
                try:
                    await asyncio.wait_for(self.wake.wait(), 0.5)
                except TimeoutError:
                    pass

    def _got(self, r: asyncpg.Record) -> None:
        eid = r["event_id"]
        if eid in self.acked:
            self.reread_after_ack += 1
            return
        if eid in self.read:
            self.rereads += 1
            return
        self.read.add(eid)
        before = self.last_state.get(r["message_id"], "submitted")
        if r["from_state"] != before:
            self.out_of_order += 1
        self.last_state[r["message_id"]] = r["to_state"]

    async def never_read(self, pool: asyncpg.Pool) -> int:
        ids = {r[0] for r in await pool.fetch("SELECT event_id FROM tracker.transitions")}
        return len(ids - self.read)
