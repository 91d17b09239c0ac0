"""Vendor limits for the whole deployment, not per replica (sql/012_shared_limits.sql).

- SharedRate: the deployment's token bucket for one vendor, kept in PostgreSQL; a replica takes
  a fiftieth of a second's worth at a time and spends it here, dropping what it has not spent
  within a second (so all replicas together never go past the rate plus one burst).
- Slots: this replica's share of the vendor's `concurrency`, resized as replicas come and go.
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


class Slots:
    """A semaphore whose size can change: `async with slots:` takes one of `limit`."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self.changed = asyncio.Condition()

    async def __aenter__(self) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: self.used < self.limit)
            self.used += 1

    async def __aexit__(self, *exc) -> None:
        async with self.changed:
            self.used -= 1
            self.changed.notify_all()

    async def resize(self, limit: int) -> None:
        async with self.changed:
            self.limit = max(1, limit)
            self.changed.notify_all()


def share(concurrency: int, replicas: int) -> int:
    """This replica's part of a vendor's concurrency among `replicas` (itself included)."""
    return max(1, math.ceil(concurrency / max(1, replicas)))
