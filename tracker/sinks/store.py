"""The database side of the sinks (sql/008_sinks.sql): thin calls of the statements in
tracker.db.queries. Every function takes a connection; none holds a transaction open longer
than its own statements."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Sequence

import asyncpg

from tracker.db import queries as q
from tracker.sinks.event import encode_event
from tracker.sinks.policy import EventFilter, Outcome


def consumer_name(sink: str) -> str:
    """The sink's cursor in tracker.consumers."""
    return f"sink:{sink}"


@dataclass(frozen=True)
class Filled:
    read: int = 0  # events taken from the outbox (and acknowledged)
    kept: int = 0  # of those, the ones the sink's filters take: now pending deliveries
    busy: bool = False  # another replica was filling this sink; nothing done

    def full(self, batch: int) -> bool:
        return self.read >= batch


@dataclass(frozen=True)
class Claimed:
    event_id: int
    body: bytes
    attempts: int  # made before this claim
    recorded_at: datetime


@dataclass(frozen=True)
class Result:
    event_id: int
    outcome: Outcome
    retry_in_s: float = 0.0
    status: int | None = None  # HTTP status; None: no answer
    error: str | None = None  # redacted, for the row and the view


@dataclass(frozen=True)
class SinkState:
    disabled: bool
    paused_s: float


async def register(conn: asyncpg.Connection, sinks: Iterable[tuple[str, str]]) -> None:
    """Make sure every configured sink has its row ((name, kind) pairs)."""
    sinks = list(sinks)
    if sinks:
        await conn.execute(q.REGISTER_SINKS, [n for n, _ in sinks], [k for _, k in sinks])


async def state(conn: asyncpg.Connection, sink: str) -> SinkState:
    row = await conn.fetchrow(q.SINK_STATE, sink)
    return SinkState(False, 0.0) if row is None else SinkState(row["disabled"], row["paused_s"])


async def fill(conn: asyncpg.Connection, sink: str, batch: int, keep: EventFilter) -> Filled:
    """Move up to `batch` events from the outbox into the sink's pending deliveries (those its
    filters take) and acknowledge them, in one transaction: each event ends up pending here
    or still unacknowledged there, never neither."""
    consumer = consumer_name(sink)
    async with conn.transaction():
        if not await conn.fetchval(q.TRY_LOCK_SINK_FILL, sink):
            return Filled(busy=True)
        rows = await conn.fetch(q.READ_SINK_EVENTS, consumer, batch)
        if not rows:
            return Filled()
        kept = [r for r in rows if keep.matches(r["vendor"], r["to_state"])]
        if kept:
            await conn.execute(q.INSERT_SINK_DELIVERIES, sink, [r["event_id"] for r in kept],
                               [r["pos"] for r in kept], [r["message_id"] for r in kept],
                               [r["recorded_at"] for r in kept], [encode_event(r) for r in kept])
        await conn.execute(q.ACK_SINK_EVENTS, consumer, rows[-1]["event_id"])
    return Filled(read=len(rows), kept=len(kept))


async def claim(conn: asyncpg.Connection, sink: str, limit: int, lease_s: float,
                token: str) -> list[Claimed]:
    rows = await conn.fetch(q.CLAIM_SINK_DELIVERIES, sink, limit, lease_s, token)
    return [Claimed(r["event_id"], bytes(r["body"]), r["attempts"], r["recorded_at"]) for r in rows]


async def record(conn: asyncpg.Connection, sink: str, token: str, results: Sequence[Result]) -> None:
    await conn.execute(q.RECORD_SINK_DELIVERIES, sink, token, [r.event_id for r in results],
                       [r.outcome.value for r in results], [r.retry_in_s for r in results],
                       [r.status for r in results], [r.error for r in results])


async def next_due_s(conn: asyncpg.Connection, sink: str) -> float | None:
    return await conn.fetchval(q.NEXT_SINK_DUE, sink)


async def disable(conn: asyncpg.Connection, sink: str, reason: str) -> None:
    await conn.execute(q.DISABLE_SINK, sink, reason)


async def enable(conn: asyncpg.Connection, sink: str) -> bool:
    done = await conn.fetchval(q.ENABLE_SINK, sink) is not None
    await conn.execute(q.WAKE_SINKS)
    return done


async def pause(conn: asyncpg.Connection, sink: str, seconds: float) -> None:
    await conn.execute(q.PAUSE_SINK, sink, seconds)


async def succeeded(conn: asyncpg.Connection, sink: str) -> None:
    await conn.execute(q.SINK_SUCCEEDED, sink)


async def failed(conn: asyncpg.Connection, sink: str, error: str) -> None:
    await conn.execute(q.SINK_FAILED, sink, error)


async def redrive(conn: asyncpg.Connection, sink: str, since: datetime | None) -> int:
    """Dead letters of `sink` pending again, to be sent at once; how many."""
    done = await conn.execute(q.REDRIVE_SINK, sink, since)
    await conn.execute(q.WAKE_SINKS)
    return int(done.split()[-1])


async def status(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(q.SINK_STATUS)
