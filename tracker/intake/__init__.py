"""Intake: turn rows of tracker.submissions into tracked messages, a batch at a time.

A claimed batch is read row by row (tracker.intake.rows: pure, bounded), planned chunk by chunk
(tracker.intake.plan: pure) and written with a constant number of set-based statements per
chunk: new messages, their observations, their transitions, then every row's outcome. A row
that cannot be read is refused alone with its reason. A chunk that PostgreSQL refuses is split
in halves, down to the single row it refuses, so that one bad row never holds back the rest.
Large rows are read and planned off the event loop. See docs/intake.md.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

import asyncpg

from tracker.config_types import Config
from tracker.db import clock as db_clock
from tracker.db import row_refused
from tracker.db import queries as q
from tracker.db import reducer
from tracker.db.rows import masked_text, rows_json
from tracker.intake.claims import ClaimRefused, Claims, refusal
from tracker.intake.plan import ChunkPlan, plan_chunk, tracked_already
from tracker.intake.rows import RowError, TakenRow, read_row
from tracker.logging import get_logger

__all__ = ["IntakeResult", "RowError", "take_in"]

log = get_logger("tracker.intake")

CHUNK_MESSAGES = 10_000  # messages written per savepoint (a row's messages are never split)
SLICE = 2_000  # messages per statement
OFF_LOOP_BYTES = 64 << 10  # rows and chunks larger than this are read and planned in a thread
SLICE_S = 0.002  # reading small rows, the loop gets a turn at least this often


@dataclass
class IntakeResult:
    rows: int = 0
    messages: int = 0
    refused: int = 0


@dataclass
class _Outcome:
    error: str | None = None
    count: int = 0
    note: str | None = None


async def take_in(conn: asyncpg.Connection, config: Config, batch_size: int | None = None) -> IntakeResult:
    """Take in one batch of new submission rows, in one transaction. Returns what it did."""
    try:
        return await _take_in(conn, config, batch_size, careful=False)
    except ClaimRefused:  # rolled back: again, each claim in a savepoint (claims.py)
        return await _take_in(conn, config, batch_size, careful=True)


async def _take_in(conn: asyncpg.Connection, config: Config, batch_size: int | None,
                   careful: bool) -> IntakeResult:
    now = db_clock.now()
    vendors = config.vendors
    limit = config.intake.max_messages_per_row
    outcomes: dict[int, _Outcome] = {}
    written: list[tuple[list[int], int]] = []  # per chunk: messages made, transitions to notify
    async with _gc_paused() as pause, conn.transaction():
        claims = Claims(conn, batch_size or config.intake.batch_size, careful)
        chunk: list[TakenRow] = []
        size = messages = 0
        slice_began = time.perf_counter()
        async for row in claims.rows(lambda: messages):
            if row.get("unreadable"):  # claimed bare: PostgreSQL could not hand it over
                outcomes[row["id"]] = _Outcome(error=row["unreadable"])
                continue
            big = _size(row) > OFF_LOOP_BYTES
            if big:
                pause()
            taken = await _maybe_off_loop(big, _read, row, now, limit)
            if isinstance(taken, str):
                outcomes[row["id"]] = _Outcome(error=taken)
                continue
            outcomes[row["id"]] = _Outcome(count=taken.messages, note=taken.note)
            chunk.append(taken)
            size += len(taken.observations)
            messages += len(taken.observations)
            if size >= CHUNK_MESSAGES:
                written.append(await _write_isolated(conn, chunk, vendors, now, outcomes))
                chunk, size = [], 0
            if time.perf_counter() - slice_began > SLICE_S:
                await asyncio.sleep(0)
                slice_began = time.perf_counter()
        if chunk:
            written.append(await _write_isolated(conn, chunk, vendors, now, outcomes))
        if outcomes:
            await conn.execute(q.FINISH_SUBMISSIONS, list(outcomes),
                               [0 if o.error else o.count for o in outcomes.values()])
            # A vendor's words in them (an account error's "Invalid Token <our key>") are
            # masked as in any row stored (tracker.masking): shown by intake_problems, /status.
            problems = [(sid, masked_text(o.error), masked_text(o.note))
                        for sid, o in outcomes.items() if o.error or o.note]
            if problems:
                await conn.execute(q.FINISH_SUBMISSION_PROBLEMS, *map(list, zip(*problems)))
        transitions = sum(t for _, t in written)
        if transitions:
            await conn.execute(q.NOTIFY_EVENTS, str(transitions))
    created = [mid for made, _ in written for mid in made]
    if created:  # again after commit: reports stored meanwhile (see reducer.adopt_orphans)
        await reducer.adopt_after_commit(conn, created)
    refused = sum(1 for o in outcomes.values() if o.error is not None)
    return IntakeResult(rows=claims.taken, refused=refused,
                        messages=sum(o.count for o in outcomes.values() if o.error is None))


_gc_pauses = 0  # intake loops holding the cyclic garbage collector off


@contextlib.asynccontextmanager
async def _gc_paused():
    """Yields `pause()`: from then until the block ends, the cyclic garbage collector waits.
    A big row keeps hundreds of thousands of objects alive at once, and every full collection
    over them holds the event loop for up to 100 ms (several per row); they hold no cycles and
    are freed by reference counting when the row is done, so nothing is lost by waiting."""
    global _gc_pauses
    held = False

    def pause() -> None:
        nonlocal held
        global _gc_pauses
        if not held:
            held = True
            _gc_pauses += 1
            gc.disable()

    try:
        yield pause
    finally:
        if held:
            _gc_pauses -= 1
            if _gc_pauses == 0:
                gc.enable()


def _read(row: asyncpg.Record, now: datetime, limit: int) -> TakenRow | str:
    """A row read, or the reason it is refused. A bug met while reading one row refuses that
    row (and is logged with its traceback), never the batch."""
    try:
        return read_row(row, now, limit)
    except RowError as e:
        return str(e)
    except Exception as e:  # noqa: BLE001 - one row's surprise must not stop intake
        log.exception("intake could not read a row", submission_id=row["id"])
        return f"internal error while reading this row ({type(e).__name__}); see the tracker's log"


def _size(row: asyncpg.Record) -> int:
    return len(row["response"] or "") + len(row["request"] or "")


async def _write_isolated(conn: asyncpg.Connection, rows: list[TakenRow], vendors, now: datetime,
                          outcomes: dict[int, _Outcome]) -> tuple[list[int], int]:
    """Write these rows in a savepoint; if PostgreSQL refuses what one of them says, or the
    planning or writing of one of them meets a bug, split them in halves until that row is
    found, refuse it with the reason, and write the rest. Returns the ids of the messages made
    and the number of transitions."""
    try:
        async with conn.transaction():
            made, steps, notes = await _write(conn, rows, vendors, now)
    except Exception as e:
        if not row_refused(e) or conn.is_closed():
            raise  # the batch's problem (the caller retries it), not one row's
        if len(rows) == 1:
            if isinstance(e, asyncpg.PostgresError):
                reason = refusal(e)
            else:  # as _read does: the row is refused, the bug is in the log with its traceback
                log.exception("intake could not write a row", submission_id=rows[0].id)
                reason = (f"internal error while writing this row ({type(e).__name__}); "
                          "see the tracker's log")
            outcomes[rows[0].id] = _Outcome(error=reason)
            return [], 0
        half = len(rows) // 2
        a = await _write_isolated(conn, rows[:half], vendors, now, outcomes)
        b = await _write_isolated(conn, rows[half:], vendors, now, outcomes)
        return a[0] + b[0], a[1] + b[1]
    for row_id, said in notes.items():  # written: what of each row was tracked once only
        outcome = outcomes[row_id]
        outcome.note = "; ".join([*([outcome.note] if outcome.note else []), *said])
    return made, steps


async def _write(conn: asyncpg.Connection, rows: list[TakenRow], vendors,
                 now: datetime) -> tuple[list[int], int, dict[int, list[str]]]:
    """The set-based writes of one chunk (see tracker.intake.plan), a slice of SLICE messages
    per statement, so that no step between two awaits holds the event loop long. Returns the
    ids of the messages made, the number of transitions still to be notified, and the notes of
    rows that named a message again."""
    big = sum(len(r.observations) for r in rows) > SLICE
    plan: ChunkPlan = await _maybe_off_loop(big, plan_chunk, rows, vendors, now)
    message_id: list[int | None] = [None] * len(plan.keys)
    observation_id: list[int | None] = [None] * len(plan.observations)
    created: list[int] = []
    waited_for: list[int] = []
    others = []
    ids = await conn.fetchval(q.RESERVE_MESSAGE_IDS, len(plan.keys)) if plan.keys else []
    for a in range(0, len(plan.order), SLICE):  # in key order (plan.ChunkPlan: no deadlock)
        part = plan.order[a:a + SLICE]
        for r in await conn.fetch(q.INSERT_NEW_MESSAGES, rows_json(plan.messages[k] for k in part),
                                  [ids[k] for k in part]):
            message_id[plan.index[r["vendor"], r["vendor_ref"], r["recipient_key"]]] = r["id"]
            created.append(r["id"])
            if r["orphans"]:
                waited_for.append(r["id"])
    for a in range(0, len(plan.observations), SLICE):
        part = plan.observations[a:a + SLICE]
        mine = [(i, message_id[k], o) for i, (k, o) in enumerate(part, a) if message_id[k] is not None]
        others += [o for k, o in part if message_id[k] is None]
        if mine:
            stored = await reducer.insert_observations_of(conn, "submit", [m[1:] for m in mine], now)
            for (i, _, _), oid in zip(mine, stored):
                observation_id[i] = oid
    vendor_of = {message_id[k]: key[0] for k, key in enumerate(plan.keys)}
    steps = 0
    for a in range(0, len(plan.transitions), SLICE):
        part = reducer.remap(plan.transitions[a:a + SLICE], message_id, observation_id)
        if part:
            await reducer.insert_transitions(conn, part, vendor_of)
            steps += len(part)
    if others:  # keys that existed already: the reducer's general path (it notifies itself)
        await reducer.apply(conn, "submit", others, received_at=now)
    if waited_for:
        await reducer.adopt_orphans(conn, waited_for)
    notes = plan.notes
    if others:
        for row_id, said in tracked_already(plan, message_id).items():
            notes.setdefault(row_id, []).extend(said)
    return created, steps, notes


async def _maybe_off_loop(big: bool, fn: Callable, *args) -> Any:
    return await asyncio.to_thread(fn, *args) if big else fn(*args)
