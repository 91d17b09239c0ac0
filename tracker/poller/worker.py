"""One polled vendor's worker: a few loops (under the supervisor, as `poll:<vendor>:<n>`) that
each repeat one tick: claim due messages (a leased batch, tracker.db.queries CLAIM_*), ask the
vendor (tracker.poller.client, within its limits; the list endpoint through
tracker.poller.listing), parse the answers with the vendor's sans-I/O adapter, and write the
results back in one transaction through the reducer, releasing each message with its next
poll time (tracker.poller.schedule; the write-back: tracker.poller.writeback). Nothing per
message is kept in memory.

The worker is given what it uses: the vendor's adapter and configuration, the pool (a getter:
the daemon opens it after building its parts), its claim owner, the clock and the transport.
"""
from __future__ import annotations

import asyncio
import contextlib
import math
import random
from datetime import datetime
from typing import Callable, Sequence

import asyncpg

from tracker.adapters.base import AccountError, MessageRef, NotConfigured, ParseError, StatusResult
from tracker.adapters.contract import Adapter, ListsMessages, LogsIn, PollsInBatches
from tracker.config_types import VendorConfig
from tracker.core.reduce import recipient_key
from tracker.db import DB_ERRORS, is_outage
from tracker.db import queries as q
from tracker.logging import get_logger
from tracker.poller import schedule
from tracker.poller.client import AccountProblem, Deferred, TokenCache, VendorClient
from tracker.poller.clock import SYSTEM_CLOCK, Clock
from tracker.poller.health import VendorHealth
from tracker.poller.listing import LIST_CLAIM_MAX, ListWalker
from tracker.poller.outcomes import (DB_AWAY_WAIT_S, MALFORMED, Claimed, Outcome, Unwritten,
                                     kind_of, spread, storable, unpolled)
from tracker.poller.shared_limits import NoSlot, SharedRate, Slots
from tracker.poller.transport import Transport, TransportError
from tracker.poller.writeback import WriteBack
from tracker.supervisor import beat

log = get_logger("tracker.poller")

IDLE_MAX_S = 1.0  # an idle loop looks for due work at least this often
DB_RETRY_S = (1.0, 30.0)  # database unavailable: wait this long, doubling, up to the cap
PROBE_BUSY_S = 0.05  # another loop is sending the half-open probe: look again this soon
NO_SLOT_WAIT_S = 1.0  # messages handed back as this replica holds no slot: due again this soon


class VendorWorker(WriteBack):
    def __init__(self, adapter: Adapter, cfg: VendorConfig, pool: Callable[[], asyncpg.Pool],
                 owner: str, transport: Transport, clock: Clock = SYSTEM_CLOCK,
                 stopping: asyncio.Event | None = None):
        self.adapter = adapter
        self.cfg = cfg
        self.name = cfg.name
        self.pool = pool
        self.owner = owner
        self.clock = clock
        self.stopping = stopping or asyncio.Event()
        self.health = VendorHealth(cfg, clock)
        self.client = VendorClient(cfg, transport, clock)
        self.client.gate = self.gate
        self.client.shared = SharedRate(cfg, pool, clock)  # the deployment's rate
        self.tokens = TokenCache(adapter, self.client) if isinstance(adapter, LogsIn) else None
        self.lists = (ListWalker(adapter, cfg, self.client, self.health)
                      if isinstance(adapter, ListsMessages) else None)
        self.batches = adapter if isinstance(adapter, PollsInBatches) else None
        # At most `concurrency` polls at once; a poll holds its slot until its outcome has
        # reached the circuit breaker, so that none starts after the circuit should have opened.
        # Under the Poller, as many as this replica holds of the deployment's slots, 0 possibly
        # (tracker.poller.slot_leases); a worker alone (tests) has them all.
        self.slots = Slots(cfg.concurrency, clock)
        self.wake = asyncio.Event()
        self.rng = random.Random()
        # Answers whose write-back the database refused (it went away): written first when it
        # answers again, so the vendor is not asked twice and the messages do not sit leased.
        self.unwritten: list[Unwritten] = []

    async def close(self) -> None:
        await self.client.close()

    # --- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        db_wait = DB_RETRY_S[0]
        while not self.stopping.is_set():
            self.wake.clear()  # before the tick: stop() during it still cuts the sleep short
            try:
                with beat().working():
                    sleep_s = await self.tick()
                db_wait = DB_RETRY_S[0]
            except DB_ERRORS as e:
                log.warning("poll: database unavailable; retrying", vendor=self.name,
                            error=type(e).__name__, retry_in_s=db_wait)
                sleep_s, db_wait = db_wait, min(db_wait * 2, DB_RETRY_S[1])
                self.health.release_probe()  # a probe that never went out
            except Exception:  # a bug: the supervisor says so and starts the loop again
                self.health.release_probe()
                raise
            if sleep_s > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), sleep_s)

    async def tick(self) -> float:
        """Claim, poll and write one batch. Returns how long to sleep before the next."""
        await self.write_unwritten()
        wait = max(self.health.reopens_in(), self.client.pause_left())
        if wait > 0:
            return min(wait, IDLE_MAX_S)
        if not self.slots.allowed():  # no slot of the deployment's here: claim nothing
            self.health.rest()  # and no probe can go: an ended open circuit stops saying "open"
            return IDLE_MAX_S
        may, probe = self.health.allow()
        if not may:
            return PROBE_BUSY_S
        rows, lease_until, listing, send_by = await self.claim(probe)  # a probe: one message
        if not rows:
            if probe:
                self.health.release_probe()
            return await self.idle_s()
        started = self.clock.monotonic()
        outcomes = await (self.poll_list(rows, send_by) if listing else self.poll(rows, send_by))
        await self.write_claim(Unwritten(rows, outcomes, lease_until))
        late = sum(1 for o in outcomes.values() if not o.polled and o.wait_s == 0.0)
        if late and self.clock.monotonic() > send_by:  # a slow vendor, or few slots: say so
            log.info("claim's lease ran short of the vendor's answers: the rest handed back",
                     vendor=self.name, messages=len(rows), handed_back=late)
        log.debug("poll batch", vendor=self.name, messages=len(rows), list=listing,
                  seconds=round(self.clock.monotonic() - started, 3))
        return 0.0

    async def idle_s(self) -> float:
        async with self.pool().acquire() as conn:
            nxt = await conn.fetchval(q.NEXT_DUE, self.name)
        if nxt is None:
            return IDLE_MAX_S
        return min(IDLE_MAX_S, max(0.02, (nxt - self.clock.now()).total_seconds()))

    # --- claims ---------------------------------------------------------------------------------

    async def claim(self, probe: bool) -> tuple[list[Claimed], datetime | None, bool, float]:
        """The claimed messages, their lease's end (the database's time), list mode or not, and
        until when (the clock's monotonic time) the claim's requests may go (see send_until_s)."""
        cfg = self.cfg
        asked_at = self.clock.monotonic()  # before the lease starts: errs on the early side
        async with self.pool().acquire() as conn:
            listing = False
            # (not while the list endpoint rests after a failure: listing.ListWalker.rest)
            if self.lists is not None and not probe and cfg.list_poll_min > 0 \
                    and self.lists.available():
                due = await conn.fetchval(q.COUNT_DUE, self.name, cfg.list_poll_min)
                listing = schedule.list_mode(due, cfg, True)
            limit = 1 if probe else (LIST_CLAIM_MAX if listing else cfg.batch_size)
            # The lease covers the requests this claim makes: in list mode a few pages and at
            # most a batch asked for one by one (poll_list hands the rest back), not one
            # request per message (that once held 5,000 messages for 17 minutes after a kill).
            requests = (math.ceil(limit / self.lists.adapter.LIST_MAX_SIZE) + cfg.batch_size
                        if listing else limit)
            sql = q.CLAIM_DUE_BATCHES if self.batches is not None else q.CLAIM_DUE
            lease = schedule.lease_s(cfg, requests)
            rows = await conn.fetch(sql, self.name, limit, self.owner, lease)
        claimed = [
            Claimed(r["id"], MessageRef(r["issued_ref"], r["recipient"], r["submitted_at"],
                                        r["vendor_deadline"]),
                    (r["vendor_ref"], r["recipient_key"]), r["poll_count"], r["submitted_at"],
                    r["window_ends_at"])
            for r in rows
        ]
        return (claimed, (rows[0]["lease_until"] if rows else None), listing,
                asked_at + schedule.send_until_s(cfg, lease))

    # --- polling --------------------------------------------------------------------------------

    async def poll(self, rows: Sequence[Claimed], send_by: float = math.inf) -> dict[int, Outcome]:
        """One poll per group: per message, or per batch id where one call answers a batch; none
        that could not be answered and written within the claim's lease (`send_by`)."""
        if self.batches is not None:
            groups: dict[str, list[Claimed]] = {}
            for r in rows:
                groups.setdefault(self.batches.batch_of(r.ref), []).append(r)
            parts = list(groups.values())
        else:
            parts = [[r] for r in rows]
        out: dict[int, Outcome] = {}
        todo = iter(parts)

        async def worker() -> None:  # a few workers, not a task per message
            for group in todo:
                if self.clock.monotonic() > send_by:  # handed back without waiting for a slot
                    self.health.release_probe()
                    out.update(unpolled(group, 0.0))
                    continue
                try:
                    async with self.slots:
                        out.update(await self.poll_group(group, send_by))
                except NoSlot:  # this replica's slots went (to 0) since the claim
                    self.health.release_probe()
                    out.update(unpolled(group, NO_SLOT_WAIT_S))

        await asyncio.gather(*(worker() for _ in range(min(len(parts), self.cfg.concurrency))))
        return out

    async def poll_group(self, rows: Sequence[Claimed], send_by: float = math.inf) -> dict[int, Outcome]:
        if self.health.is_open:
            return unpolled(rows, self.health.reopen_wait())
        refs = [r.ref for r in rows]
        started = self.clock.monotonic()
        try:
            result = await self._ask(refs, send_by)
            kept = storable(result.observations)
            if len(kept) < len(result.observations):  # the rest: not answered, malformed
                result.transient_error = result.transient_error or MALFORMED
            result.observations = kept
        except Deferred as d:
            self.health.release_probe()
            return unpolled(rows, d.wait_s)
        except AccountProblem as e:
            result = StatusResult(account_error=e.error)
        except TransportError as e:
            result = StatusResult(transient_error=str(e))
        except ParseError:
            result = StatusResult(transient_error=MALFORMED)
        except NotConfigured as e:  # a setting is missing: the operator must act
            result = StatusResult(account_error=AccountError("config", str(e)))
        except DB_ERRORS as e:  # the deployment's rate (shared_limits) was not to be had
            if not is_outage(e):
                raise
            # Nothing was sent: handed back, the vendor not blamed; the claim's other answers
            # are kept (raised, they were lost with the claim held until its lease ran out).
            log.warning("poll: shared rate limit unavailable (database); handed back unpolled",
                        vendor=self.name, messages=len(rows), error=type(e).__name__)
            self.health.release_probe()
            return unpolled(rows, DB_AWAY_WAIT_S)
        self.health.took(self.clock.monotonic() - started)
        self.health.record(*kind_of(result))
        return spread(rows, result, self._key, self.health.reopen_wait())

    def gate(self) -> float:
        """Seconds until a request may go: the circuit's say; and none goes while this replica
        holds no slot (its lease ended, say), not even one of a poll already under way."""
        return self.health.reopens_in() or (0.0 if self.slots.allowed() else NO_SLOT_WAIT_S)

    def _key(self, o) -> tuple[str, str]:
        return o.vendor_ref, recipient_key(self.name, o.recipient)

    async def _ask(self, refs: list[MessageRef], send_by: float) -> StatusResult:
        token = await self.tokens.get() if self.tokens else None
        responses = await self._fetch_all(self.adapter.status_requests(self.cfg, refs, token), send_by)
        if self.tokens and any(r.status == 401 for r in responses):
            self.tokens.forget(token)  # refused: log in again, once
            token = await self.tokens.get()
            responses = await self._fetch_all(self.adapter.status_requests(self.cfg, refs, token), send_by)
        return self.adapter.parse_status(responses, refs, self.clock.now())

    async def _fetch_all(self, requests, send_by: float) -> list:
        """One after another (Sparrow's two report calls): a poll holds one concurrency slot,
        and `concurrency` counts requests at the vendor; each passes the gate when it goes, so
        none starts after this replica's slots have lapsed (sent together, the second waited
        for a connection past the gate and the lease, and the vendor saw twice the limit)."""
        return [await self.client.fetch(r, send_by=send_by) for r in requests]

    async def poll_list(self, rows: Sequence[Claimed], send_by: float = math.inf) -> dict[int, Outcome]:
        """Many messages in flight: walk the list endpoint; whatever the pages do not show is
        asked for per message."""
        try:
            async with self.slots:
                out, rest = await self.lists.walk(rows, send_by)
        except NoSlot:
            return unpolled(rows, NO_SLOT_WAIT_S)
        if len(rest) > self.cfg.batch_size:  # more than the lease covers: due again at once
            out.update(unpolled(rest[self.cfg.batch_size:], 0.0))
            rest = rest[:self.cfg.batch_size]
        if rest:
            out.update(await self.poll(rest, send_by))
        return out
