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
from tracker.sinks.policy import Outcome


# Each daemon writes that it runs its sinks (tracker.sink_runners) this often; `tracker sinks
# forget` refuses a sink seen that recently: a few writes missed (a slow database) are no proof
# that no daemon runs it, and a daemon killed without a stop is waited out.
SEEN_EVERY_S = 5.0
SEEN_FRESH_S = 30.0
RUNNER_ROWS_KEPT_S = 86400.0  # a killed daemon's rows: dropped by the next start after this


def consumer_name(sink: str) -> str:
    """The sink's cursor in tracker.consumers."""
    return f"sink:{sink}"


class SinkGone(Exception):
    """The sink's row is gone from under a loop that runs it (`tracker sinks forget`, or SQL):
    the loop stops rather than idle or make its cursor again at position 0 (the supervisor
    logs it, restarts it and /readyz names it while it lasts)."""

    def __init__(self, sink: str):
        super().__init__(
            f"sink {sink!r} is no longer in the database (forgotten while this daemon runs it): "
            "it sends nothing and moves no cursor. Take it out of the configuration of every "
            "daemon and restart them; a daemon restarted with it still configured registers it "
            "as a new sink, which sends every event kept again, from the oldest")
        self.sink = sink


@dataclass(frozen=True)
class Claimed:
    """An event to send: a claimed row of tracker.sink_deliveries, or (virtual) an event read
    from the outbox that has no row yet."""

    event_id: int
    body: bytes
    attempts: int  # made before this claim
    recorded_at: datetime
    pos: int = 0
    message_id: int = 0
    virtual: bool = False


def from_outbox(row) -> Claimed:
    """A read_events row as an event to send, its body made once here."""
    return Claimed(row["event_id"], encode_event(row), 0, row["recorded_at"], row["pos"],
                   row["message_id"], virtual=True)


@dataclass(frozen=True)
class Result:
    event_id: int
    outcome: Outcome
    retry_in_s: float = 0.0
    status: int | None = None  # HTTP status; None: no answer
    error: str | None = None  # redacted, for the row and the view


async def register(conn: asyncpg.Connection, sinks: Iterable[tuple[str, str]]) -> list[str]:
    """Make sure every configured sink has its row ((name, kind) pairs); the sinks whose row is
    new (their cursor starts at the oldest event kept)."""
    sinks = list(sinks)
    if not sinks:
        return []
    rows = await conn.fetch(q.REGISTER_SINKS, [n for n, _ in sinks], [k for _, k in sinks])
    return [r["name"] for r in rows if r["new"]]


async def see(conn: asyncpg.Connection, sinks: Sequence[str], runner: str) -> set[str]:
    """This daemon (`runner`) runs `sinks` now; those of them that still have their row."""
    return {r["sink"] for r in await conn.fetch(q.SEE_SINKS, list(sinks), runner)}


async def release(conn: asyncpg.Connection, runner: str) -> None:
    """This daemon runs no sink any more (it stops); and rows of daemons long gone go too."""
    await conn.execute(q.RELEASE_SINK_RUNNER, runner)
    await conn.execute(q.DROP_OLD_SINK_RUNNERS, RUNNER_ROWS_KEPT_S)


async def kind(conn: asyncpg.Connection, sink: str) -> str | None:
    """'webhook' or 'nats' for a sink the database knows; None for one it does not."""
    return await conn.fetchval(q.SINK_KIND, sink)


@dataclass(frozen=True)
class Reader:
    ours: bool  # this loop holds the reader lease: it may read the outbox
    disabled: bool
    paused_s: float


async def take_reader(conn: asyncpg.Connection, sink: str, token: str, lease_s: float) -> Reader:
    """Take or renew the sink's reader lease (not while disabled), and its shared state."""
    row = await conn.fetchrow(q.TAKE_SINK_READER, sink, token, lease_s)
    if row is None:
        raise SinkGone(sink)
    return Reader(row["ours"], row["disabled"], row["paused_s"])


async def drop_reader(conn: asyncpg.Connection, sink: str, token: str) -> None:
    await conn.execute(q.DROP_SINK_READER, sink, token)


async def read(conn: asyncpg.Connection, sink: str, after_pos: int, batch: int) -> list[asyncpg.Record]:
    """Up to `batch` events after the sink's cursor and after `after_pos` (what open batches
    hold already); moves nothing. Each with `message_pending`: its message has an event
    pending for the sink."""
    return await conn.fetch(q.READ_SINK_BATCH, sink, after_pos, batch)


@dataclass(frozen=True)
class Unsettled:
    """An event of a read batch that was not delivered, as it goes into the table."""

    event: Claimed
    attempts: int = 0
    retry_in_s: float = 0.0
    dead: bool = False
    in_flight: bool = False  # still being sent by us: the row is leased to our claim
    last_status: int | None = None
    last_error: str | None = None


async def settle(conn: asyncpg.Connection, sink: str, token: str, lease_s: float,
                 rows: Sequence[Unsettled], last_event_id: int, delivered: bool) -> None:
    """Record a read batch's undelivered events and move the cursor past the batch, in one
    transaction (one statement); `delivered`: some of it was (the sink's last success).
    SinkGone when the sink's row is gone: nothing is written."""
    e = [u.event for u in rows]
    try:
        settled = await conn.fetchrow(
            q.SETTLE_SINK_BATCH, sink, token, [x.event_id for x in e], [x.pos for x in e],
            [x.message_id for x in e], [x.recorded_at for x in e], [x.body for x in e],
            [u.attempts for u in rows], [u.retry_in_s for u in rows],
            ["dead" if u.dead else "pending" for u in rows], [u.in_flight for u in rows],
            [u.last_status for u in rows], lease_s, consumer_name(sink), last_event_id,
            [u.last_error for u in rows], delivered)
    except asyncpg.ForeignKeyViolationError as error:  # its rows' only reference: the sink's row
        raise SinkGone(sink) from error
    if settled is None:
        raise SinkGone(sink)


async def ack(conn: asyncpg.Connection, sink: str, event_id: int) -> None:
    """Move a NATS sink's cursor to `event_id`; SinkGone (and no cursor made) when its row is gone."""
    if await conn.fetchrow(q.ACK_SINK_EVENTS, sink, event_id) is None:
        raise SinkGone(sink)


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
    """Enable the sink (after a 410) and end its pause: every event waiting is due now."""
    async with conn.transaction():
        done = await conn.fetchval(q.ENABLE_SINK, sink) is not None
        await conn.execute(q.RESUME_DELIVERIES, sink)
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


async def lag(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(q.SINK_LAG)


@dataclass(frozen=True)
class Forget:
    known: bool  # the database had the sink
    running: list[tuple[str, float]]  # (runner, seconds since seen): daemons running it; nothing deleted


async def forget(conn: asyncpg.Connection, sink: str, fresh_s: float = SEEN_FRESH_S) -> Forget:
    """Remove a sink's row, deliveries, dead letters and cursor, unless a daemon was seen running
    it within `fresh_s`. One transaction: its row locked first, so that no daemon writes that it
    runs the sink between the look and the delete."""
    async with conn.transaction(isolation="read_committed"):  # the look after the lock: a new snapshot
        if await conn.fetchval(q.LOCK_SINK, sink) is None:
            return Forget(False, [])
        running = [(r["runner"], r["seen_s_ago"]) for r in await conn.fetch(q.SINK_RUNNING, sink, fresh_s)]
        if not running:
            await conn.execute(q.FORGET_SINK, sink)
        return Forget(True, running)
