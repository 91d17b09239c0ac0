"""Retention (docs/retention.md, docs/design.md#contract-9): old rows removed in small batches, each its own short
transaction, on one replica at a time, so that a busy deployment's disk stays bounded.

Kinds and what may go (the batch functions tracker.retain_<kind> are in sql/009_route_views.sql,
sql/021, sql/025 and sql/028):

- orphans: reports that never found their message;
- postbacks: raw postbacks already applied (or set aside);
- observations: reports, with their raw payloads, of final messages;
- transitions: events of final messages that every consumer and sink has acknowledged;
- final_messages: messages final for that long whose events are all acknowledged, with their
  reports, events and the submission rows they leave behind;
- unreferenced_rows: submission rows taken in that no message points to (a resubmission, an id
  used again: a message points to the first row that named it), as long as final_messages keeps
  messages (sql/028);
- refused_rows: submission rows refused (or that named no message); only those are walked (sql/021);
- sink_dead_letters: a sink's dead letters, oldest first by when they died (sql/025).

After the kinds, every sweep folds the poll counters (tracker.poll_stats) of replicas stopped or
silent for a day into one history row per vendor (sql/028): vendor_health shows the same figures,
and the table no longer gains rows with every start.

A kind's sweep walks its table in id order (ids grow with time), a batch at a time, and stops
where the rows are too young; rows held by another transaction are passed over, never waited for;
between batches it rests at least twice as long as the batch took. A sweep has a time budget,
shared by the kinds; a kind that runs out is marked behind (metric), and the next sweep goes on
from where it stopped (tracker.retention_cursors): starting over from id 0 every time, a head of
rows kept longer than the kind's limit used up the share and the rest was never reached. A walk
that reaches rows too young, or the end, or a batch that fails, starts from id 0 at the next
sweep, for the rows it passed over that may go since. What each sweep removed is in
tracker.retention_status.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import asyncpg
import orjson

from tracker import metrics
from tracker.config_types import RetentionConfig
from tracker.db import DB_ERRORS
from tracker.db import queries as q
from tracker.logging import get_logger, scrub
from tracker.supervisor import beat

log = get_logger("tracker.retention")

# In the order they run: the cheap, independent kinds first; messages after their reports and
# events have mostly gone, then the submission rows they leave; refused rows last.
KINDS = ("orphans", "postbacks", "observations", "transitions", "final_messages", "unreferenced_rows",
         "refused_rows", "sink_dead_letters")
# A kind with no [retention] key of its own follows another's: a submission row no message points
# to goes when messages do (walked by id, it then finds few rows kept past its cutoff).
FOLLOWS = {"unreferenced_rows": "final_messages"}
# Not a kind of the configuration: poll counters only change shape (their figures stay), so they
# are folded at every sweep, whatever the kinds' limits (sql/028).
POLL_STATS = "poll_stats"
POLL_STATS_FOLD_DAYS = 1.0  # a replica stopped or silent this long: its rows go into history
SWEPT = (*KINDS, POLL_STATS)  # what a sweep records and counts (tracker_retention_errors_total)
LOCK = "tracker.retention"
RUNS_KEPT_DAYS = 30  # tracker.retention_runs itself is kept this long


@dataclass
class Swept:
    """What one sweep of one kind did."""

    kind: str
    removed: int = 0
    also: dict | None = None
    batches: int = 0
    behind: bool = False  # stopped with eligible rows left (budget spent, or a failure)
    error: str | None = None


def limit_days(config: RetentionConfig, kind: str) -> float:
    """How many days a kind's rows are kept (0: for ever)."""
    if kind == POLL_STATS:
        return POLL_STATS_FOLD_DAYS
    return getattr(config, f"{FOLLOWS.get(kind, kind)}_days")


async def sweep(pool: asyncpg.Pool, config: RetentionConfig) -> list[Swept] | None:
    """One sweep of every kind with a limit, then the poll counters' fold (recorded and counted as
    a kind's, not returned), on one replica at a time: None when another replica is sweeping now."""
    kinds = [k for k in KINDS if limit_days(config, k) > 0]
    async with pool.acquire() as conn:
        if not await conn.fetchval(q.RETENTION_TRY_LOCK, LOCK):
            # another replica sweeps now: what this one said of its last sweep is no news (a 1
            # kept by a replica that lost the lock at every turn kept RetentionBehind firing)
            metrics.retention_behind.clear()
            return None
        try:
            share = config.run_budget_s / max(1, len(kinds))
            done = []
            for kind in kinds:
                done.append(await sweep_kind(conn, kind, config, time.monotonic() + share))
            await sweep_kind(conn, POLL_STATS, config, time.monotonic() + share)
            await conn.execute(q.RETENTION_FORGET_RUNS, RUNS_KEPT_DAYS)
        finally:
            await conn.execute(q.RETENTION_UNLOCK, LOCK)
    metrics.retention_last_run.set(time.time())
    return done


async def sweep_kind(conn: asyncpg.Connection, kind: str, config: RetentionConfig,
                     deadline: float) -> Swept:
    """Remove what may go of one kind, batch by batch, until nothing old is left or the
    deadline; record and count what was done."""
    out = Swept(kind)
    started_at, cutoff, after = await conn.fetchrow(q.RETENTION_START, kind,
                                                    limit_days(config, kind))
    resumed_after = after
    try:
        while True:
            if time.monotonic() >= deadline:
                out.behind = True
                break
            began = time.monotonic()
            batch = await _batch(conn, kind, after, cutoff, config.batch_size)
            out.batches += 1
            out.removed += batch["removed"]
            _add(out, batch["also"])
            beat().progress()  # a sweep longer than health.wedged_after_s is not a wedged one
            if not batch["old"] or batch["last_id"] is None:
                after = 0  # reached rows too young to go, or the end: the next walk starts over
                break
            after = batch["last_id"]
            # Rest at least twice as long as the batch took: retention has the database a third
            # of the time at most, however slow it is under load.
            await asyncio.sleep(max(config.pause_ms / 1000, 2 * (time.monotonic() - began)))
    except DB_ERRORS as e:
        if conn.is_closed():
            raise
        # The next walk starts from id 0: resumed at a batch that keeps failing, every sweep would
        # fail at once and never start over, and rows before it passed over would stay for good.
        after = 0
        out.behind = True
        out.error = scrub(f"{type(e).__name__}: {e}")[:300]
        metrics.retention_errors.labels(kind).inc()
        log.warning("retention batch failed; the next sweep starts over", kind=kind, error=out.error)
    if after != resumed_after:  # where the next sweep goes on: after the last batch done, or from 0
        await conn.execute(q.RETENTION_KEEP_CURSOR, kind, after)
    metrics.retention_removed.labels(kind).inc(out.removed)
    metrics.retention_behind.labels(kind).set(1 if out.behind else 0)
    # A sweep that removed nothing, failed in nothing and left nothing is not recorded (one row a
    # kind a sweep otherwise); one that ran out of time is, or RetentionBehind's runbook found
    # no row and no log line of the kind it fired for.
    if out.removed or out.error or out.behind:
        await conn.execute(q.RETENTION_RECORD_RUN, kind, started_at, cutoff, out.removed,
                           orjson.dumps(out.also).decode() if out.also else None, out.batches,
                           out.error)
        log.info("retention", kind=kind, removed=out.removed, also=out.also, batches=out.batches,
                 behind=out.behind, older_than=cutoff.isoformat(), resumed_after=resumed_after)
    return out


async def _batch(conn: asyncpg.Connection, kind: str, after: int, cutoff, limit: int) -> asyncpg.Record:
    """One batch in its own transaction, which never waits long for a lock."""
    async with conn.transaction():
        await conn.execute(q.RETENTION_BATCH_LIMITS)
        if kind in q.RETENTION_READS_HORIZON:
            await conn.execute(q.RETENTION_HOLD_HORIZON)
        return await conn.fetchrow(q.RETENTION_BATCH[kind], after, cutoff, limit)


def _add(out: Swept, also: str | dict | None) -> None:
    if not also:
        return
    counts = orjson.loads(also) if isinstance(also, str) else also
    out.also = {k: (out.also or {}).get(k, 0) + v for k, v in counts.items()}
