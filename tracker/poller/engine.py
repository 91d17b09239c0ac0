"""The polling engine (docs/polling.md): a component of the daemon with `start()` and `stop()`.

Per polled vendor, a VendorWorker (tracker.poller.worker) runs a couple of loops that claim due
messages, ask the vendor and write the results back through the reducer; the schedule lives in
`messages.next_poll_at`, never in memory. This module starts and stops them and runs the
periodic sweeps: tracking windows (one replica at a time) and the poll counters.

What happens on each failure path (per "poll": one status call, or one pair of Sparrow report
calls for a whole batch, or one page walk of engageSPARK's list endpoint):

- a report PostgreSQL would refuse: a stray NUL in a text or the raw payload is replaced by
  U+FFFD and the reading kept; one still unstorable (a time out of range) counts as malformed.
- timeout, connection error, 5xx, 429, malformed answer (an answer naming another message
  than the one asked about is one): no observation; the message is polled again after its
  backoff delay (at least the Retry-After, which also pauses the whole vendor); the error
  counts towards the circuit breaker (`circuit_failures` in a row open it).
- the list endpoint failing (not an account error): the messages its pages did not show are
  asked for one by one, and list mode rests for `circuit_reset_s`.
- account-level error (bad key, suspended, no funds, login refused): the circuit opens at once
  and the messages are handed back unpolled, due again when a half-open probe may go
  (`circuit_reset_s`); no message state changes. A probe that succeeds closes the circuit.
- Retry-After longer than a request timeout: the messages still waiting are handed back
  unpolled, due when the vendor said.
- database unavailable: claiming or writing fails; the loop waits (1 s doubling to 30 s) and
  tries again. The answers of a claim whose write failed are kept and written first when the
  database answers (the vendor is not asked twice), while the lease lasts; past it they are
  dropped (logged) and the messages come due again. The deployment's rate limit (kept in the
  database) out of reach: the poll's messages are handed back unpolled, the vendor not blamed.
- each vendor's concurrency slots (the deployment's, tracker.poller.slot_leases, renewed by
  component `poll-slots`) not renewed (the database away): its polls stop before their lease
  ends, logged; none held: nothing claimed. stop() gives them back.
- a write the database refuses (not an outage: a claim's raw payloads past jsonb's 256 MB,
  say): written per message; a message refused alone is written without its raw payload (a
  marker says why), logged and counted as a malformed answer; never retried forever.
- a claim that outlived its lease (and so may be held by another poller now) writes nothing:
  the write first locks the messages it still holds (same owner and lease time); logged and
  counted (tracker_poll_answers_lost_total). So that a slow vendor never makes it so, a claim
  sends no request after its lease less a request timeout and the write's margin
  (schedule.send_until_s): the rest is handed back, due at once.
- stop(): the loops stop claiming and get a few seconds to write what is in flight; anything
  still claimed is handed back, due at once.
- anything unexpected (a bug) in one batch: the loop's supervisor (tracker.supervisor) logs
  it with its traceback, counts it and starts the loop again after a short delay; that batch's
  claims come due when their lease ends.

Each loop runs under the supervisor as component `poll:<vendor>:<n>`; its progress is a tick
completed, or a poll answered (or failed) within a long tick.

The Poller is given what it uses (no daemon object): the configuration, the pool (a getter),
the supervisor (to run its loops), `every` (periodic sweeps), `exclusive` (a lock helper: run a
job on one replica at a time), the clock and a transport per vendor.
"""
from __future__ import annotations

import asyncio
import os
import secrets
import socket
from datetime import datetime
from typing import Any, Awaitable, Callable, Mapping

import asyncpg

from tracker import adapters
from tracker.adapters.base import NotConfigured, Observation
from tracker.config_types import Config
from tracker.core.states import Failure, State
from tracker.db import DB_ERRORS
from tracker.db import queries as q
from tracker.db import reducer
from tracker.logging import get_logger
from tracker.poller.clock import SYSTEM_CLOCK, Clock
from tracker.poller.slot_leases import SlotLeases
from tracker.poller.transport import TransportFactory, vendor_transport
from tracker.poller.worker import IDLE_MAX_S, VendorWorker  # noqa: F401 - IDLE_MAX_S: bench
from tracker.supervisor import Supervisor

log = get_logger("tracker.poller")

LOOPS_PER_VENDOR = 2  # one claims while the other waits on the vendor or the database
STOP_GRACE_S = 5.0  # stop(): time in-flight polls get to finish and write
WINDOW_BATCH = 1000  # window sweep: messages per reducer call
WINDOW_MAX = 50_000  # ... and per run (the next run continues)
HEALTH_FLUSH_S = 5.0  # poll counters go to tracker.poll_stats this often
WINDOW_CODE = "window_closed"
WINDOW_TEXT = "tracking window ended without a final report"

Sweep = Callable[[], Awaitable[None]]
Every = Callable[[str, float, Sweep], None]  # run a sweep every so many seconds
Job = Callable[[asyncpg.Connection], Awaitable]
Exclusive = Callable[[str, Job], Awaitable[bool]]  # run a job on one replica at a time (True: ran)


class Poller:
    def __init__(self, config: Config, pool: Callable[[], asyncpg.Pool], supervisor: Supervisor,
                 *, every: Every, exclusive: Exclusive, clock: Clock = SYSTEM_CLOCK,
                 transport: TransportFactory = vendor_transport):
        self.config = config
        self.pool = pool
        self.supervisor = supervisor
        self.every = every
        self.exclusive = exclusive
        self.clock = clock
        self.transport = transport
        self.owner = f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"
        self.workers: dict[str, VendorWorker] = {}
        # Each vendor's concurrency: the slots of the deployment's this replica holds.
        self.leases = SlotLeases(self.owner, pool, clock)
        self.tasks: list[asyncio.Task] = []
        self.stopping = asyncio.Event()
        self.repaired = False  # poll_left_unpolled has run since the start

    def worker(self, name: str) -> VendorWorker:
        """The worker of vendor `name` (made, not started), with the vendor's adapter bound to
        its settings (adapters.for_config): its token cache and list walker share it.
        NotConfigured for a setting the adapter cannot honour."""
        cfg = self.config.vendors[name]
        return VendorWorker(adapters.for_config(name, cfg), cfg, self.pool, self.owner,
                            self.transport(cfg), self.clock, self.stopping)

    def take_on(self, name: str) -> VendorWorker:
        """Make the worker of vendor `name`, its concurrency under the deployment's slots (none
        until a renewal takes some)."""
        w = self.workers[name] = self.worker(name)
        self.leases.add(w.cfg, w.slots)
        return w

    async def start(self) -> None:
        for name, cfg in self.config.vendors.items():
            polls = adapters.get(name).POLLS
            if not polls or not cfg.enabled:  # push-only (Skycore) or disabled: windows still end
                if polls:
                    log.warning("vendor disabled: its messages are not polled, and those whose "
                                "tracking window ends meanwhile end unknown", vendor=name)
                continue
            if not cfg.base_url:
                log.warning("vendor has no base_url: its messages are not polled", vendor=name)
                continue
            try:
                self.take_on(name)
            except NotConfigured as e:  # check-config refuses it: a Config not loaded from a file
                log.error("vendor not polled: a setting cannot be honoured", vendor=name, error=str(e))
        # Say at once that this replica polls, and take its part of each vendor's concurrency
        # slots (a database not reachable yet: the next renewal; until then it polls nothing).
        await self.flush_health_now()
        await self.leases.flush()
        if self.workers:
            self.tasks.append(self.supervisor.spawn(
                "poll-slots", lambda: self.leases.run(self.stopping), stopping=self.stopping.is_set))
        for w in self.workers.values():
            for i in range(LOOPS_PER_VENDOR):
                self.tasks.append(self.supervisor.spawn(
                    f"poll:{w.name}:{i}", w.run, stopping=self.stopping.is_set))
        windows = [v.tracking_window_s for v in self.config.vendors.values() if v.enabled]
        sweep_s = min(10.0, max(0.5, min(windows, default=200.0) / 20))
        self.every("poll-windows", sweep_s, self.sweep_windows)  # supervised: sweep:<name>
        self.every("poll-health", HEALTH_FLUSH_S, self.flush_health)
        log.info("poller started", owner=self.owner, vendors=sorted(self.workers),
                 window_sweep_s=sweep_s)

    def stop_claiming(self) -> None:
        """The loops claim nothing more (the daemon's first step on SIGTERM, before the parts
        stop in reverse); what they hold is written or handed back by stop()."""
        self.stopping.set()
        for w in self.workers.values():
            w.wake.set()

    async def stop(self) -> None:
        self.stop_claiming()
        await self.supervisor.stop_tasks(self.tasks, STOP_GRACE_S)
        self.tasks.clear()
        try:
            async with self.pool().acquire() as conn:
                released = await conn.execute(q.RELEASE_ALL, self.owner)
            log.info("poller stopped; claims handed back", released=released.split()[-1])
        except DB_ERRORS as e:
            log.warning("poller stopped; claims not handed back (they come due when their "
                        "lease ends)", error=type(e).__name__)
        await self.flush_health_now()
        try:
            async with self.pool().acquire() as conn:
                await conn.execute(q.STOP_POLL_STATS, self.owner)
        except DB_ERRORS:
            pass
        await self.leases.release()  # nothing is in flight any more
        for w in self.workers.values():
            await w.close()

    # --- periodic sweeps ------------------------------------------------------------------------

    async def sweep_windows(self) -> None:
        if not self.repaired:  # until it has run here since the start: see poll_left_unpolled
            self.repaired = await self.exclusive("unpolled", poll_left_unpolled)
        await self.exclusive("windows", end_windows)

    async def flush_health_now(self) -> None:
        """The flush at start and stop, outside the supervisor's job: any failure is a warning
        (the counters are kept for the next flush)."""
        try:
            await self.flush_health()
        except DB_ERRORS as e:
            log.warning("poll stats not written", error=type(e).__name__)

    async def flush_health(self) -> None:
        if not self.workers:
            return
        healths = [w.health for w in self.workers.values()]
        taken = [h.take_stats() for h in healths]
        try:
            async with self.pool().acquire() as conn:
                await conn.execute(
                    q.ADD_POLL_STATS, [h.name for h in healths], self.owner,
                    [s.ok for s in taken], [s.failed for s in taken],
                    [s.last_success_at for s in taken], [s.last_error_at for s in taken],
                    [s.last_error for s in taken], [h.circuit.state for h in healths],
                    [h.circuit_since for h in healths])
        except BaseException:
            for h, s in zip(healths, taken):
                h.keep_stats(s)  # written with the next flush
            raise  # the supervisor's (Supervisor.job: an outage waited out, else counted)


async def poll_left_unpolled(conn: asyncpg.Connection) -> int:
    """Make due the messages in flight that a replica of an earlier release took in with no first
    poll (its vendor disabled there: the sinks-only replica the guide suggested). Once at each
    start: during a rolling upgrade an old replica still strands them until it is replaced, and
    the new one that replaces it repairs what it left."""
    polled = [v for v in adapters.VENDORS if adapters.get(v).POLLS]
    n = int((await conn.execute(q.POLL_LEFT_UNPOLLED, polled)).split()[-1])
    if n:
        log.warning("messages in flight had no next poll (taken in by an earlier release with "
                    "their vendor disabled): due now", messages=n)
    return n


def window_ended(row: Mapping[str, Any], now: datetime) -> Observation:
    """The `unknown` that ends a message's window. When the vendor's last report was one not in
    our mapping (a Twilio `undelivered` with an error code we do not know), its code and words
    go with it as the failure's, so that tracker.message_status and the event say what the
    vendor said (never guessed into a state)."""
    text, failure = WINDOW_TEXT, None
    if row["unmapped_code"] is not None:
        words = f" ({row['unmapped_text'][:200]})" if row["unmapped_text"] else ""
        text = f"{WINDOW_TEXT}; the vendor's last report, not in our mapping: {row['unmapped_code']}{words}"
        failure = Failure(row["unmapped_code"], text, None)
    return Observation(vendor=row["vendor"], vendor_ref=row["vendor_ref"], recipient=row["recipient"],
                       state=State.unknown, code=WINDOW_CODE, text=text, event_at=now, failure=failure)


async def end_windows(conn: asyncpg.Connection) -> int:
    """Turn every message whose tracking window has ended, not final yet, `unknown`."""
    total = 0
    while total < WINDOW_MAX:
        rows = await conn.fetch(q.WINDOW_ENDED, WINDOW_BATCH)
        if not rows:
            break
        now = SYSTEM_CLOCK.now()
        await reducer.apply(conn, "tracker", [window_ended(r, now) for r in rows], received_at=now)
        total += len(rows)
        if len(rows) < WINDOW_BATCH:
            break
    if total:
        log.info("tracking windows ended", messages=total)
    return total
