"""The rows of tracker.postbacks, written by binary COPY (the group commit's writes: commit.py).
Binary COPY costs PostgreSQL less per row than INSERT ... SELECT FROM unnest(arrays)."""
from __future__ import annotations

from datetime import datetime

import asyncpg

from tracker.db import lock_not_had
from tracker.db import queries as q
from tracker.postbacks.core import RawPostback


async def copy_rows(conn: asyncpg.Connection, ids: list[int], raws: list[RawPostback],
                    processed_at: datetime | None) -> None:
    """The rows, marked processed at `processed_at` (applied in the same transaction) unless
    None. Outside a transaction block it is committed (WAL flushed) when it returns."""
    applied = () if processed_at is None else (processed_at,)
    await conn.copy_records_to_table(
        "postbacks", schema_name="tracker",
        columns=q.APPLIED_POSTBACK_COLUMNS if applied else q.POSTBACK_COLUMNS,
        records=[(i, r.vendor, r.method, r.content_type, r.query, r.body, r.source,
                  r.received_at, *applied) for i, r in zip(ids, raws)])


async def copy_unapplied(conn: asyncpg.Connection, ids: list[int], raws: list[RawPostback]) -> None:
    """The rows of a batch stored unapplied (its own commit). The connections' short
    lock_timeout is for the apply, which has the worker to fall back on; storing has not: a lock
    on the table not had in time (a migration's, held a few seconds) is waited for again, within
    the write's own timeout (the caller's)."""
    while True:
        try:
            return await copy_rows(conn, ids, raws, None)
        except Exception as e:
            if not lock_not_had(e) or conn.is_closed():
                raise
