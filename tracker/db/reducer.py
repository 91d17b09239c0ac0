"""The reducer: the only way any message's state changes.

apply() takes a batch of observations in one transaction: every observation appended, states
raised by the rule (tracker.core), one transition row per real change, one NOTIFY per batch.
Reports for messages not yet known are stored with no message and adopted when it appears.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable, Sequence

import asyncpg
import orjson

from tracker.adapters.base import Observation
from tracker.core.reduce import PlannedTransition, Report, plan, recipient_key
from tracker.core.states import State
from tracker import metrics
from tracker.db import queries as q


@dataclass
class Applied:
    stored: int = 0  # observations appended
    orphans: int = 0  # of which waiting for their message
    unmapped: int = 0  # of which with a vendor code we do not map
    transitions: list[PlannedTransition] = field(default_factory=list)


def _json(raw) -> str | None:
    if raw is None:
        return None
    try:
        return orjson.dumps(raw, default=str).decode()
    except TypeError:
        return orjson.dumps(str(raw)).decode()


async def apply(
    conn: asyncpg.Connection,
    source: str,
    observations: Sequence[Observation],
    *,
    received_at: datetime | Sequence[datetime] | None = None,
    postback_id: int | Sequence[int | None] | None = None,
) -> Applied:
    """Append observations and raise states, in one transaction (a savepoint if the caller
    already holds one). `received_at` and `postback_id` are one value for all observations, or
    one per observation (a batch of postbacks, each with its own time and raw row)."""
    if not observations:
        return Applied()
    n = len(observations)
    now = received_at if isinstance(received_at, Sequence) else [received_at or datetime.now(timezone.utc)] * n
    postback_ids = postback_id if isinstance(postback_id, Sequence) else [postback_id] * n
    cols: list[list] = [[] for _ in range(14)]
    for o, at, pb in zip(observations, now, postback_ids, strict=True):
        f = o.failure
        row = (
            o.vendor, o.vendor_ref, recipient_key(o.vendor, o.recipient), source,
            o.state.name if o.state is not None else None, o.code, o.text, o.event_at, at,
            f.code if f else None, f.reason if f else None, f.permanent if f else None,
            _json(o.raw), pb,
        )
        for col, value in zip(cols, row):
            col.append(value)
    async with conn.transaction():
        rows = await conn.fetch(q.INSERT_OBSERVATIONS, *cols)
        result = await _raise_states(conn, rows)
    for r in rows:
        metrics.observations.labels(r["vendor"], source).inc()
        if r["state"] is None:
            metrics.unmapped.labels(r["vendor"], str(r["code"])[:32]).inc()
    result.stored = len(rows)
    result.orphans = sum(1 for r in rows if r["message_id"] is None)
    result.unmapped = sum(1 for r in rows if r["state"] is None)
    return result


async def adopt_orphans(conn: asyncpg.Connection, message_ids: Iterable[int] | None = None) -> Applied:
    """Attach waiting reports to their messages (these, or all that exist now) and apply them."""
    ids = list(message_ids) if message_ids is not None else None
    async with conn.transaction():
        rows = await conn.fetch(q.ADOPT_ORPHANS, ids)
        return await _raise_states(conn, rows)


async def _raise_states(conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]) -> Applied:
    reports = [
        Report(r["id"], r["message_id"], State[r["state"]], r["source"], r["occurred_at"],
               r["failure_code"], r["failure_reason"], r["failure_permanent"])
        for r in rows
        if r["message_id"] is not None and r["state"] is not None
    ]
    touched: dict[int, datetime] = {}
    for r in rows:
        if r["message_id"] is not None:
            prev = touched.get(r["message_id"])
            touched[r["message_id"]] = max(prev, r["received_at"]) if prev else r["received_at"]
    if not touched:
        return Applied()
    # Lock in id order so that concurrent batches never deadlock.
    locked = await conn.fetch(q.LOCK_MESSAGES, sorted(touched))
    current = {r["id"]: State[r["state"]] for r in locked}
    planned = plan(current, reports)
    if planned:
        await conn.execute(
            q.INSERT_TRANSITIONS,
            [t.message_id for t in planned],
            [t.from_state.name for t in planned],
            [t.to_state.name for t in planned],
            [t.report.source for t in planned],
            [t.report.occurred_at for t in planned],
            [t.report.failure_code for t in planned],
            [t.report.failure_reason for t in planned],
            [t.report.failure_permanent for t in planned],
            [t.is_correction for t in planned],
            [t.report.observation_id for t in planned],
        )
        last = {t.message_id: t for t in planned}  # the last step per message is its new state
        await conn.execute(
            q.UPDATE_MESSAGE_STATES,
            list(last),
            [t.to_state.name for t in last.values()],
            [t.report.occurred_at for t in last.values()],
            [t.report.failure_code for t in last.values()],
            [t.report.failure_reason for t in last.values()],
            [t.report.failure_permanent for t in last.values()],
        )
        await conn.execute(q.NOTIFY_EVENTS, str(len(planned)))
    await conn.execute(q.TOUCH_MESSAGES, list(touched), list(touched.values()))
    vendor_of = {r["message_id"]: r["vendor"] for r in rows}
    for t in planned:
        metrics.transitions.labels(vendor_of[t.message_id], t.to_state.name).inc()
    return Applied(transitions=planned)
