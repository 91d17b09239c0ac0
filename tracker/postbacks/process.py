"""From stored raw postbacks to states: what a row says goes through the reducer, and the row is
marked processed, in one transaction. Four ways in:

- apply_stored: rows being stored, in the transaction that stores them, with what their
  handlers parsed (the hot path: the group commit);
- process_received: rows stored unapplied, with what their handlers parsed (a batch too large
  to apply as it was stored, written beside another, or one the database refused);
- process_pending: unprocessed rows, parsed again from the stored request (the sweep: rows a
  crash or a lost database left behind; several replicas share them with SKIP LOCKED);
- replay_rows: old rows parsed again by `tracker replay` after a mapping fix.

A row is never applied twice: the first two take only unprocessed rows under a row lock, and a
replay appends only the observations that a new parse adds to those the row already produced
(tracker.observations.postback_id says which), so running it again changes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Sequence

import asyncpg

from tracker import adapters
from tracker.adapters.base import Observation, ParseError
from tracker.config_types import Config
from tracker.core.reduce import recipient_key
from tracker.db import queries as q
from tracker.db import reducer
from tracker.postbacks import core


@dataclass
class Outcome:
    rows: int = 0
    observations: int = 0  # appended
    transitions: int = 0
    unreadable: int = 0  # rows the adapter cannot read (now)
    unchanged: int = 0  # rows whose parse adds nothing new
    orphan_ids: list[int] = field(default_factory=list)  # reports stored before their message

    def add(self, other: "Outcome") -> None:
        for name in ("rows", "observations", "transitions", "unreadable", "unchanged"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(frozen=True, slots=True)
class Parsed:
    """A stored raw postback and what it says (`found`), or why it cannot be read."""

    id: int
    received_at: datetime
    found: list[Observation] | None
    error: str | None = None


class BatchFailed(Exception):
    """Applying these rows failed (the transaction rolled back); the cause is chained, and named
    in the message (what /readyz and the supervisor's log line show)."""

    def __init__(self, ids: list[int], cause: BaseException | None = None):
        why = f": {type(cause).__name__}: {cause}" if cause is not None else ""
        super().__init__(f"{len(ids)} postbacks not applied{why}"[:300])
        self.ids = ids


def parse_row(row: asyncpg.Record, config: Config | None = None) -> Parsed:
    """A stored row parsed again, with its vendor's settings (`config`: the running one)."""
    raw = core.RawPostback.from_row(row)
    try:
        return Parsed(row["id"], row["received_at"],
                      core.parse(raw, config.vendors.get(raw.vendor) if config is not None else None))
    except ParseError as e:
        return Parsed(row["id"], row["received_at"], None, str(e)[:500])


async def _apply(conn: asyncpg.Connection, config: Config, items: Sequence[Parsed],
                 known: dict[int, set] | None = None, claim: bool = False) -> Outcome:
    """Append what the rows say, less what they produced before (`known`: postback id ->
    report keys), push polls out, and record unreadable rows. The rows are claimed and locked
    by the caller, or here (`claim`: in the statement that stores their reports; rows another
    session holds or did are left to it)."""
    new: list[Observation] = []
    new_ids: list[int] = []
    new_at: list[datetime] = []
    fresh_of: dict[int, list[Observation]] = {}
    for item in items:
        if item.found is None:
            continue
        before = known.get(item.id, set()) if known is not None else set()
        fresh = [o for o in item.found if core.report_key(o) not in before] if before else item.found
        fresh_of[item.id] = fresh
        new += fresh
        new_ids += [item.id] * len(fresh)
        new_at += [item.received_at] * len(fresh)
    applied = await reducer.apply(conn, "postback", new, received_at=new_at, postback_id=new_ids,
                                  claim=[i.id for i in items] if claim else None)
    if claim:
        taken = set(applied.claimed)
        items = [i for i in items if i.id in taken]
    out = Outcome(rows=len(items), observations=applied.stored,
                  transitions=len(applied.transitions), orphan_ids=applied.orphan_ids)
    polled: set[tuple[str, str, str]] = set()
    bad_ids, bad_errors = [], []
    for item in items:
        if item.found is None:
            out.unreadable += 1
            bad_ids.append(item.id)
            bad_errors.append(item.error)
            continue
        out.unchanged += not fresh_of[item.id]
        polled.update((o.vendor, o.vendor_ref, recipient_key(o.vendor, o.recipient))
                      for o in item.found if adapters.get(o.vendor).POLLS)
    if bad_ids:
        await conn.execute(q.MARK_POSTBACKS_UNREADABLE, bad_ids, bad_errors)
    if polled:
        keys = sorted(polled)
        await conn.execute(q.DEFER_POLLS, [k[0] for k in keys], [k[1] for k in keys],
                           [k[2] for k in keys],
                           [config.vendors[k[0]].max_poll_interval_s for k in keys])
    return out


async def adopt_late(conn: asyncpg.Connection, out: Outcome) -> Outcome:
    """After commit: orphans whose message was being made meanwhile (reducer.adopt_orphans)."""
    if out.orphan_ids:
        out.transitions += await reducer.adopt_after_commit(conn, observation_ids=out.orphan_ids)
    return out


async def apply_stored(conn: asyncpg.Connection, config: Config,
                       items: Sequence[Parsed]) -> Outcome:
    """Apply rows that the caller's transaction is storing, already marked processed (nobody
    else sees them before it commits). adopt_late() is for after the commit."""
    return await _apply(conn, config, items)


async def process_received(conn: asyncpg.Connection, config: Config,
                           items: Sequence[Parsed]) -> Outcome:
    """Apply rows stored unapplied, with what the handlers parsed. Marking them processed is
    also the claim, made by the statement that stores their reports: rows another session
    holds or has applied meanwhile (a sweep, a replay) are left to it. adopt_late() is for
    after the commit."""
    try:
        async with conn.transaction():
            return await _apply(conn, config, items, claim=True)
    except Exception as e:
        raise BatchFailed([i.id for i in items], e) from e


async def process_pending(conn: asyncpg.Connection, config: Config, limit: int,
                          ids: Sequence[int] | None = None) -> Outcome:
    """Parse again and apply up to `limit` unprocessed rows (of `ids`, if given)."""
    async with conn.transaction():
        rows = await conn.fetch(q.CLAIM_POSTBACKS, limit, list(ids) if ids is not None else None)
        if not rows:
            return Outcome()
        items = [parse_row(r, config) for r in rows]
        try:
            out = await _apply(conn, config, items)
            await conn.execute(q.FINISH_POSTBACKS, [i.id for i in items if i.found is not None])
        except Exception as e:
            raise BatchFailed([r["id"] for r in rows], e) from e
    return await adopt_late(conn, out)


async def replay_rows(conn: asyncpg.Connection, config: Config,
                      rows: Sequence[asyncpg.Record]) -> Outcome:
    """Parse locked rows again and append only what is new for each; the caller holds the
    transaction. A row that no longer parses keeps what it produced and gets the error."""
    ids = [r["id"] for r in rows]
    known: dict[int, set] = {}
    for o in await conn.fetch(q.POSTBACK_OBSERVATIONS, ids):
        known.setdefault(o["postback_id"], set()).add(core.stored_report_key(o))
    items = [parse_row(r, config) for r in rows]
    out = await _apply(conn, config, items, known)
    await conn.execute(q.FINISH_POSTBACKS, [i.id for i in items if i.found is not None])
    return out
