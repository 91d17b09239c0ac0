"""Vendor limits for the whole deployment, not per replica (sql/012_shared_limits.sql).

- SharedRate: the deployment's token bucket for one vendor, kept in PostgreSQL; a replica takes
  a fiftieth of a second's worth at a time and spends it here, dropping what it has not spent
  within a second (so all replicas together never go past the rate plus one burst).
- Slots: the polls this replica may run at once for one vendor: as many as it holds of the
  deployment's `concurrency` slots in the database, while their lease lasts (the leases:
  tracker.poller.slot_leases); `fair_target` is its part of them.
"""
from __future__ import annotations

import asyncio
import math
from typing import Callable

import asyncpg

from tracker.config_types import VendorConfig
from tracker.db import queries as q
from tracker.poller.clock import SYSTEM_CLOCK, Clock

# Tokens taken at a time: this many seconds' worth (one at least). Small, since what replicas
# hold unspent is what the deployment may send above the rate (measured by bench/chaos.py).
CHUNK_S = 0.02
KEEP_S = 1.0  # tokens not spent within this are dropped


class SharedRate:
    def __init__(self, cfg: VendorConfig, pool: Callable[[], asyncpg.Pool], clock: Clock = SYSTEM_CLOCK):
        self.vendor = cfg.name
        self.per_s = cfg.rate_limit_per_s
        self.chunk = max(1, math.floor(self.per_s * CHUNK_S))
        self.pool = pool
        self.clock = clock
        self.tokens = 0
        self.taken_at = 0.0
        self.lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait for one of the deployment's tokens. Database errors go to the caller."""
        async with self.lock:
            while True:
                if self.tokens > 0 and self.clock.monotonic() - self.taken_at < KEEP_S:
                    self.tokens -= 1
                    return
                async with self.pool().acquire() as conn:
                    got = await conn.fetchval(q.TAKE_RATE_TOKENS, self.vendor, self.chunk,
                                              self.per_s, float(self.chunk))
                if got:
                    self.tokens, self.taken_at = got, self.clock.monotonic()
                else:  # the bucket is empty: the next token is this far off
                    await self.clock.sleep(1.0 / self.per_s)


class NoSlot(Exception):
    """This replica may run none of the vendor's polls now (it holds no slot, or their lease
    ended): the caller hands its messages back unpolled."""


class Slots:
    """A semaphore whose size can change: `async with slots:` takes one of `limit`. The limit
    holds until `valid_until` (the clock's monotonic time; a lease: tracker.poller.slot_leases)
    and is 0 after it. Entering while the limit is 0 raises NoSlot (a wait would outlast the
    caller's claim); the polls already in flight keep their slot."""

    def __init__(self, limit: int, clock: Clock = SYSTEM_CLOCK):
        self.limit = limit
        self.valid_until = math.inf  # alone (no lease): for good
        self.clock = clock
        self.used = 0
        self.changed = asyncio.Condition()

    def allowed(self) -> int:
        """The limit now: 0 once the lease has ended."""
        return self.limit if self.clock.monotonic() < self.valid_until else 0

    def need(self) -> int:
        """How many slots may be in use until the limit next changes: those in use, or more up
        to the limit."""
        return max(self.used, self.allowed())

    async def __aenter__(self) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: self.used < self.allowed() or not self.allowed())
            if not self.allowed():
                raise NoSlot()
            self.used += 1

    async def __aexit__(self, *exc) -> None:
        async with self.changed:
            self.used -= 1
            self.changed.notify_all()

    async def resize(self, limit: int, valid_until: float = math.inf) -> None:
        async with self.changed:
            self.limit, self.valid_until = max(0, limit), valid_until
            self.changed.notify_all()


def fair_target(concurrency: int, replicas: int, rank: int) -> int:
    """The slots the replica at `rank` (0 first, in the order of their names) of the `replicas`
    polling a vendor aims to hold: `concurrency` split evenly, the remainder to the first ones
    (0 when there are more replicas than slots). q.HOLD_SLOTS computes the same in SQL."""
    replicas = max(1, replicas)
    return concurrency // replicas + (1 if rank < concurrency % replicas else 0)
