"""From stored raw postbacks to states: parse each row again (the adapter is pure, and the row
keeps everything it needs), apply what it says through the reducer, mark the row processed,
all in one transaction. Used by the daemon's worker for new rows and by `tracker replay` for old
ones.

Each row keeps the fingerprints of the observations it has produced, so a row is never applied
twice: the worker takes only unprocessed rows (under FOR UPDATE SKIP LOCKED, so several replicas
share the work), and a replay appends only observations that a new parse adds.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Sequence

import asyncpg
import orjson

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

    def add(self, other: "Outcome") -> None:
        for name in ("rows", "observations", "transitions", "unreadable", "unchanged"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def _known(value) -> set[str]:
    if value is None:
        return set()
    return set(orjson.loads(value) if isinstance(value, (str, bytes)) else value)


async def apply_rows(conn: asyncpg.Connection, config: Config, rows: Sequence[asyncpg.Record],
                     *, defer_polls: bool) -> Outcome:
    """Parse and apply claimed rows; the caller holds the transaction."""
    out = Outcome(rows=len(rows))
    found_all: list[Observation] = []
    new: list[Observation] = []
    new_ids: list[int] = []
    new_at: list[datetime] = []
    ids, counts, prints, errors = [], [], [], []
    for row in rows:
        known = _known(row["fingerprints"])
        ids.append(row["id"])
        try:
            found = core.parse(core.RawPostback.from_row(row))
        except ParseError as e:
            out.unreadable += 1
            counts.append(None)
            prints.append(orjson.dumps(sorted(known)).decode())
            errors.append(str(e)[:500])
            continue
        fps = [core.fingerprint(o) for o in found]
        fresh = [o for o, fp in zip(found, fps) if fp not in known]
        if not fresh:
            out.unchanged += 1
        new += fresh
        new_ids += [row["id"]] * len(fresh)
        new_at += [row["received_at"]] * len(fresh)
        found_all += found
        counts.append(len(found))
        prints.append(orjson.dumps(sorted(known | set(fps))).decode())
        errors.append(None)
    applied = await reducer.apply(conn, "postback", new, received_at=new_at, postback_id=new_ids)
    await conn.execute(q.FINISH_POSTBACKS, ids, counts, prints, errors)
    if defer_polls and found_all:
        keys = {(o.vendor, o.vendor_ref, recipient_key(o.vendor, o.recipient)) for o in found_all}
        keys = sorted(k for k in keys if k[0] in config.vendors)
        await conn.execute(q.DEFER_POLLS, [k[0] for k in keys], [k[1] for k in keys],
                           [k[2] for k in keys],
                           [config.vendors[k[0]].max_poll_interval_s for k in keys])
    out.observations = applied.stored
    out.transitions = len(applied.transitions)
    return out


class BatchFailed(Exception):
    """Applying these rows failed (the transaction rolled back); the cause is chained."""

    def __init__(self, ids: list[int]):
        super().__init__(f"{len(ids)} postbacks not applied")
        self.ids = ids


async def process_pending(conn: asyncpg.Connection, config: Config, limit: int,
                          ids: Sequence[int] | None = None) -> Outcome:
    """Apply up to `limit` unprocessed rows (of `ids`, if given) in one transaction."""
    async with conn.transaction():
        rows = await conn.fetch(q.CLAIM_POSTBACKS, limit, list(ids) if ids is not None else None)
        if not rows:
            return Outcome()
        try:
            return await apply_rows(conn, config, rows, defer_polls=True)
        except Exception as e:
            raise BatchFailed([r["id"] for r in rows]) from e
