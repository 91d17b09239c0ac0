"""A batch's submission rows, claimed a few at a time (queries.CLAIM_SUBMISSIONS), for
tracker.intake.take_in. Sizes: FIRST_CLAIM rows first, then as many as should bring the batch to
BATCH_MESSAGES messages, within BATCH_BYTES bytes of JSON text; a row whose response or request
is longer than ROW_BYTES as text is not fetched (the reader refuses it). Sizes are measured in
the server as the text the daemon would receive, never as stored (compressed) bytes.

A row PostgreSQL cannot hand over, though it is stored small (a jsonb whose text would pass
PostgreSQL's 1 GB limit: class 54), fails the claim that fetches it, and the batch with it. The
batch is then taken again `careful`: each claim in a savepoint (two round trips more, so not
always), and after a failed one the rows one at a time, up to the row at fault: each row's id is
locked first, then its contents fetched by that id in a savepoint, so the row refused with
PostgreSQL's reason is exactly the one that failed. It no longer stops every batch.
"""
from __future__ import annotations

import contextlib
import math
from typing import AsyncIterator, Callable

import asyncpg

from tracker.db import queries as q
from tracker.logging import get_logger
from tracker.masking import shortened

log = get_logger("tracker.intake")

BATCH_BYTES = 16 << 20  # response + request bytes (as JSON text) claimed per batch, about (a row may pass it)
BATCH_MESSAGES = 20_000  # a batch claims no more rows once it holds this many (two chunks)
FIRST_CLAIM = 10  # rows a batch claims first, to learn how many messages its rows hold
ROW_BYTES = 16 << 20  # a row whose response or request is longer as JSON text is refused


class ClaimRefused(Exception):
    """A claim failed for what one of its rows holds (class 54): take the batch again, careful."""


def refusal(e: asyncpg.PostgresError) -> str:
    text = shortened(str(e).replace("\x00", ""), 300)
    return f"refused by PostgreSQL ({e.sqlstate}): {text}"


class Claims:
    """A batch's rows, claimed a few at a time (queries.CLAIM_SUBMISSIONS): FIRST_CLAIM rows,
    then as many more as should bring the batch to BATCH_MESSAGES messages at the rate its rows
    held so far, within `rows_max` rows and BATCH_BYTES bytes. A batch of one-message
    rows is claimed in two statements; a campaign of bulk rows (engageSPARK: 100 messages a
    row) becomes several batches that the intake loops share, one loop reading and planning
    while another's batch is written, instead of one loop taking the whole campaign (every
    row a claim looks at stays locked until commit, so a claim must not look further)."""

    def __init__(self, conn: asyncpg.Connection, rows_max: int, careful: bool = False) -> None:
        self.conn = conn
        self.careful = careful
        self.rows_left, self.bytes_left = rows_max, BATCH_BYTES
        self.taken = 0  # rows claimed
        self.after = 0  # the last id claimed

    async def rows(self, messages: Callable[[], int]) -> AsyncIterator[asyncpg.Record]:
        """Claimed rows, one by one; `messages()`: how many the rows read so far hold."""
        want = min(FIRST_CLAIM, self.rows_left)
        while want > 0 and self.bytes_left > 0:
            rows = await self._claim(want)
            if rows:
                self.after = rows[-1]["id"]
            self.rows_left -= len(rows)
            self.bytes_left -= sum(r["stored_size"] for r in rows)
            self.taken += len(rows)
            for row in rows:
                yield row
            if len(rows) < want:  # none left just now, or the bytes are spent
                return
            held = messages()
            per_row = max(held, 1) / self.taken
            want = min(self.rows_left, math.ceil((BATCH_MESSAGES - held) / per_row))

    async def _claim(self, want: int, after: int | None = None, budget: int | None = None) -> list:
        """Up to `want` rows after `after` within `budget` bytes; careful: in a savepoint, and
        if that fails for a row, one at a time up to that row, which is refused."""
        after = self.after if after is None else after
        budget = self.bytes_left if budget is None else budget
        if self.careful and want == 1:
            return await self._claim_one(after, budget)
        try:
            async with self.conn.transaction() if self.careful else contextlib.nullcontext():
                return await self.conn.fetch(q.CLAIM_SUBMISSIONS, want, budget, ROW_BYTES, after)
        except asyncpg.PostgresError as e:
            if not str(e.sqlstate or "").startswith("54"):
                raise
            if not self.careful:  # the batch's transaction is lost with it: taken again, careful
                raise ClaimRefused from e
        rows: list = []
        while len(rows) < want and budget > 0:  # one at a time, up to the row at fault
            one = await self._claim_one(rows[-1]["id"] if rows else after, budget)
            rows += one
            if not one or one[0].get("unreadable"):
                break
            budget -= one[0]["stored_size"]
        return rows

    async def _claim_one(self, after: int, budget: int) -> list:
        """The next row after `after`: its id locked first (outside the savepoint, so the lock
        stays), then its contents fetched by that id in a savepoint. If PostgreSQL cannot hand
        them over, exactly that row is refused: a row with a lower id that committed meanwhile
        is never taken for it."""
        sid = await self.conn.fetchval(q.CLAIM_SUBMISSION_BARE, after)
        if sid is None:
            return []
        try:
            async with self.conn.transaction():
                return await self.conn.fetch(q.CLAIM_SUBMISSION_BY_ID, 1, budget, ROW_BYTES, sid)
        except asyncpg.PostgresError as e:
            if not str(e.sqlstate or "").startswith("54"):
                raise
            log.warning("intake cannot read a row", submission_id=sid, error=str(e)[:200])
            return [{"id": sid, "stored_size": 0, "unreadable": "cannot be handed over: " + refusal(e)}]
