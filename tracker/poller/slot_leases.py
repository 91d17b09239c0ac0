"""A vendor's `concurrency` for the whole deployment, exactly: slots held in PostgreSQL under a
lease (sql/016_vendor_slots.sql), one set of Slots per polled vendor (shared_limits.Slots).

Every RENEW_EVERY_S (a loop of its own under the supervisor, component `poll-slots`, so that
no other work delays it) one statement (q.HOLD_SLOTS) renews the slots this replica holds,
gives back those above its fair target (shared_limits.fair_target: the concurrency split among
the replicas polling the vendor now) and takes free or expired ones up to it. The rules that
keep two replicas from using one slot:

1. a replica's local limit is never more than the slots it holds in the database: after each
   renewal min(target, held); before the first, 0;
2. the local limit holds until the renewal statement was sent (the local monotonic clock) +
   VALID_S, and is 0 after that; the database's lease is VALID_S + a margin (a request
   timeout and SAFETY_S) from when the statement ran. A replica that cannot renew stops using
   its slots before their lease ends: once its limit is 0 the worker sends no new request
   (its gate) and the ones in flight end within their timeout. Then another may take them;
3. when its part shrinks, the local limit drops at once; a slot is given back only at a later
   renewal, once it is not in use (the statement keeps max(in use, limit before it));
4. a replica that stops gives its slots back (release).

Every failure is logged: a renewal that fails (with the time left on the lease), a lease that
ran out (polling of the vendor paused), and a vendor this replica should poll (target above 0)
for which it has held no slot for longer than a health flush (NO_SLOT_WARN_S: the others have
not given theirs back).
"""
from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from tracker import metrics
from tracker.config_types import VendorConfig
from tracker.db import DB_ERRORS
from tracker.db import queries as q
from tracker.logging import get_logger
from tracker.poller.clock import SYSTEM_CLOCK, Clock
from tracker.poller.shared_limits import Slots
from tracker.supervisor import beat

log = get_logger("tracker.poller")

RENEW_EVERY_S = 1.0  # renew, give back, take this often: a new replica has its part in seconds
VALID_S = 10.0  # the local lease: renewals may fail this long before this replica stops
SAFETY_S = 2.0  # the local lease ends this much (+ a request timeout) before the database's
TIMEOUT_S = 5.0  # a renewal (a connection and the statement) given up after this long
NO_SLOT_WARN_S = 5.0  # no slot of a vendor it should poll for this long (a health flush): said


def margin_s(cfg: VendorConfig) -> float:
    """How long before the database's lease ends this replica stops sending: a request sent
    just before still ends (its timeout) before another replica may take the slot."""
    return cfg.request_timeout_s + SAFETY_S


def lease_s(cfg: VendorConfig) -> float:
    """The database's lease."""
    return VALID_S + margin_s(cfg)


@dataclass
class Held:
    """One vendor's slots on this replica."""

    cfg: VendorConfig
    slots: Slots
    lease_s: float
    target: int | None = None  # as the last flush said
    replicas: int = 0
    held: int = 0
    none_since: float | None = None  # holding no slot though its target is above 0, since
    lapsed: bool = False  # its lease ran out (said once)
    said_at: float | None = None  # the last warning about it (repeated every NO_SLOT_WARN_S)


class SlotLeases:
    def __init__(self, owner: str, pool: Callable[[], asyncpg.Pool], clock: Clock = SYSTEM_CLOCK):
        self.owner = owner
        self.pool = pool
        self.clock = clock
        self.vendors: dict[str, Held] = {}

    def add(self, cfg: VendorConfig, slots: Slots) -> None:
        """Put `slots` under the lease: none may be used until a flush has taken some."""
        slots.limit, slots.valid_until = 0, -math.inf
        self.vendors[cfg.name] = Held(cfg, slots, lease_s(cfg))
        metrics.vendor_slots.labels(cfg.name).set_function(slots.allowed)  # read at each scrape

    async def run(self, stopping: asyncio.Event) -> None:
        """The loop (under the supervisor): renew every RENEW_EVERY_S until `stopping`."""
        while not stopping.is_set():
            with beat().working():
                await self.flush()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), RENEW_EVERY_S)

    async def flush(self) -> None:
        """Renew, give back and take, for every vendor at once. Errors are logged, not raised:
        the limits then end with their lease."""
        if not self.vendors:
            return
        names, held = list(self.vendors), list(self.vendors.values())
        needs = [h.slots.need() for h in held]  # (before the statement goes: rule 3)
        sent = self.clock.monotonic()
        try:
            async with self.pool().acquire(timeout=TIMEOUT_S) as conn:
                rows = await conn.fetch(q.HOLD_SLOTS, self.owner, names,
                                        [h.cfg.concurrency for h in held], needs,
                                        [h.lease_s for h in held], timeout=TIMEOUT_S)
        except DB_ERRORS as e:
            self.not_renewed(e)
            return
        for r in rows:
            h = self.vendors[r["vendor"]]
            valid_until = sent + VALID_S
            await h.slots.resize(min(r["target"], r["held"]), valid_until)
            self.said(h, r["target"], r["replicas"], r["held"], r["given"], sent)

    def not_renewed(self, error: BaseException) -> None:
        now, kind = self.clock.monotonic(), type(error).__name__
        for h in self.vendors.values():
            left = h.slots.valid_until - now
            if h.slots.limit and left > 0:
                self.say(h, now, "concurrency slots not renewed; this replica stops polling the "
                         "vendor when their lease ends", slots=h.slots.limit,
                         lease_left_s=round(left, 1), error=kind)
            elif h.slots.limit and not h.lapsed:
                h.lapsed, h.said_at = True, now
                log.error("concurrency slots' lease ran out (not renewed): this replica polls "
                          "none of the vendor's messages until the database answers",
                          vendor=h.cfg.name, error=kind)
            else:
                self.say(h, now, "no concurrency slot (database unavailable): this replica "
                         "polls none of the vendor's messages", error=kind)

    def said(self, h: Held, target: int, replicas: int, held: int, given: int, sent: float) -> None:
        """Log what changed, and a vendor left without a slot for longer than a health flush."""
        name = h.cfg.name
        if h.lapsed:
            log.info("concurrency slots taken again after their lease ran out", vendor=name,
                     slots=h.slots.limit)
            h.lapsed = False
        if (target, held, replicas) != (h.target, h.held, h.replicas):
            log.info("concurrency slots", vendor=name, target=target, held=held,
                     given_back=given, replicas=replicas, concurrency=h.cfg.concurrency)
            if target == 0 and h.target != 0:
                log.info("more replicas poll the vendor than its concurrency: this one polls "
                         "none of its messages", vendor=name, replicas=replicas)
        h.target, h.replicas, h.held = target, replicas, held
        if h.slots.limit and h.slots.valid_until <= self.clock.monotonic():
            log.warning("concurrency slots renewed too late: their lease had ended here; the "
                        "next renewal tries again", vendor=name)
        if target == 0 or held > 0:
            h.none_since = h.said_at = None
        elif h.none_since is None:
            h.none_since = sent
        elif sent - h.none_since >= NO_SLOT_WARN_S:
            self.say(h, sent, "no concurrency slot for a vendor this replica should poll: the "
                     "other replicas have not given theirs back yet", target=target,
                     replicas=replicas, waited_s=round(sent - h.none_since, 1))

    @staticmethod
    def say(h: Held, now: float, event: str, **fields) -> None:
        """A warning about `h`, once every NO_SLOT_WARN_S at most while it lasts."""
        if h.said_at is None or now - h.said_at >= NO_SLOT_WARN_S:
            h.said_at = now
            log.warning(event, vendor=h.cfg.name, **fields)

    async def release(self) -> None:
        """Stop using every slot and give them back (a stopping replica)."""
        for h in self.vendors.values():
            await h.slots.resize(0, -math.inf)
        if not self.vendors:
            return
        try:
            async with self.pool().acquire(timeout=TIMEOUT_S) as conn:
                given = await conn.execute(q.RELEASE_SLOTS, self.owner, timeout=TIMEOUT_S)
            log.info("concurrency slots given back", slots=int(given.split()[-1]))
        except DB_ERRORS as e:
            log.warning("concurrency slots not given back; the other replicas take them when "
                        "their lease ends", error=type(e).__name__)
