"""The delivery rollup stays exact under concurrent writers: whatever order reducers, intake and
folds commit in, the rollup (folded rows plus pending deltas) equals a fresh count of the
messages, per route and day and per vendor and hour, latency buckets included."""
from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

from tracker import rollup
from tracker.adapters.base import Observation
from tracker.config_types import Config
from tracker.core.states import State
from tracker.db import reducer
from tracker.intake import take_in

T0 = datetime.now(timezone.utc) - timedelta(days=2)
VENDORS = ("sparksender", "engagespark", "skycore")
RECIPIENTS = ("12025550100", "447400123456", "9779801234567", "639171234567", "12")

EXACT_BY_DAY = """
SELECT (submitted_at AT TIME ZONE 'UTC')::date AS day, vendor, coalesce(country, '') AS country,
       coalesce(operator, '') AS operator, state::text AS state, count(*) AS n
FROM tracker.messages GROUP BY 1, 2, 3, 4, 5
"""
EXACT_LATENCY_BY_DAY = """
SELECT (submitted_at AT TIME ZONE 'UTC')::date AS day, vendor, coalesce(country, '') AS country,
       coalesce(operator, '') AS operator, tracker.latency_bucket(submitted_at, delivered_at) AS bucket,
       count(*) AS n
FROM tracker.messages WHERE delivered_at IS NOT NULL GROUP BY 1, 2, 3, 4, 5
"""
STATES = ("submitted", "accepted", "sent", "unknown", "expired", "rejected", "failed", "delivered", "read")
ROLLED_BY_DAY = f"""
SELECT day, vendor, country, operator, {", ".join(f"sum({s}) AS {s}" for s in STATES)},
       tracker.hist_merge(latency) AS latency
FROM (SELECT day, vendor, country, operator, {", ".join(STATES)}, latency FROM tracker.route_days
      UNION ALL
      SELECT (hour AT TIME ZONE 'UTC')::date, vendor, country, operator, {", ".join(STATES)}, latency
      FROM tracker.route_deltas_by_hour) r
GROUP BY 1, 2, 3, 4
"""


def as_counts(state_rows, latency_rows) -> dict:
    out = {}
    for r in state_rows:
        out[(r["day"], r["vendor"], r["country"], r["operator"], r["state"])] = r["n"]
    for r in latency_rows:
        out[(r["day"], r["vendor"], r["country"], r["operator"], r["bucket"])] = r["n"]
    return out


def rolled_counts(rows) -> dict:
    out = {}
    for r in rows:
        key = (r["day"], r["vendor"], r["country"], r["operator"])
        for s in STATES:
            if r[s]:
                out[(*key, s)] = r[s]
        for bucket, n in enumerate(r["latency"] or []):
            if n:
                out[(*key, bucket)] = n
    return out


async def test_rollup_equals_a_fresh_count_under_concurrent_writers(pool):
    rnd = random.Random(1409)
    refs = [(rnd.choice(VENDORS), f"r{i}") for i in range(400)]
    async with pool.acquire() as conn:
        await conn.executemany(
            "INSERT INTO tracker.submissions (vendor, vendor_ref, recipient, submitted_at) VALUES ($1, $2, $3, $4)",
            [(v, ref, rnd.choice(RECIPIENTS), T0 + timedelta(hours=rnd.randrange(60))) for v, ref in refs])
    stop = asyncio.Event()

    async def intake() -> None:
        async with pool.acquire() as conn:
            while (await take_in(conn, Config(), 25)).rows:
                await asyncio.sleep(0)

    async def reporter(seed: int) -> None:
        r = random.Random(seed)
        async with pool.acquire() as conn:
            for _ in range(60):
                batch = []
                for v, ref in r.sample(refs, 12):
                    at = T0 + timedelta(hours=60, seconds=r.randrange(1, 100_000))
                    batch.append(Observation(vendor=v, vendor_ref=ref, recipient=None, state=r.choice(list(State)), code="c", event_at=at,
                                             operator=r.choice((None, None, "Alpha", "Beta"))))
                await reducer.apply(conn, "postback", batch,
                                    received_at=T0 + timedelta(hours=61, seconds=r.randrange(100_000)))

    async def folder() -> int:
        folds = 0
        async with pool.acquire() as conn:
            while not stop.is_set():
                folds += bool(await rollup.fold(conn))
                await asyncio.sleep(0.005)
        return folds

    folding = asyncio.create_task(folder())
    await asyncio.gather(intake(), *(reporter(s) for s in range(6)))
    stop.set()
    assert await folding > 0  # folds really ran while the writers wrote
    async with pool.acquire() as conn:
        exact = as_counts(await conn.fetch(EXACT_BY_DAY), await conn.fetch(EXACT_LATENCY_BY_DAY))
        assert sum(n for k, n in exact.items() if isinstance(k[-1], str)) == len(refs)
        assert await conn.fetchval("SELECT count(*) FROM tracker.messages WHERE operator IS NOT NULL") > 0
        assert rolled_counts(await conn.fetch(ROLLED_BY_DAY)) == exact
        await rollup.fold(conn)
        assert rolled_counts(await conn.fetch(ROLLED_BY_DAY)) == exact
        # Per vendor and hour, the same messages.
        hourly = await conn.fetch("SELECT vendor, sum(total) AS n FROM tracker.vendor_hourly GROUP BY vendor")
        per_vendor = {r["vendor"]: r["n"] for r in hourly}
        fresh = {r["vendor"]: r["n"] for r in await conn.fetch(
            "SELECT vendor, count(*) AS n FROM tracker.messages GROUP BY vendor")}
        assert per_vendor == fresh


async def test_existing_messages_are_counted_by_the_migration(pool):
    """The migration counts messages that were there before it (a deployment upgrading): here the
    whole rollup is rebuilt the way the migration builds it and must match what the triggers kept."""
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO tracker.messages (vendor, vendor_ref, submitted_at, state, delivered_at, country, operator)"
            " SELECT 'sparrow', g::text, $1::timestamptz, 'delivered', $1::timestamptz + make_interval(secs => g), 'NP', 'Ncell'"
            " FROM generate_series(1, 50) g", T0)
        await rollup.fold(conn)
        kept = rolled_counts(await conn.fetch(ROLLED_BY_DAY))
        sql = (Path(__file__).resolve().parents[2] / "sql" / "009_route_views.sql").read_text()
        backfill = sql[sql.index("INSERT INTO tracker.route_deltas (hour, vendor, country, operator, state, bucket, n)\nSELECT date_trunc('hour', m.submitted_at"):]
        backfill = backfill[:backfill.index("SELECT tracker.fold_route_deltas();")]
        async with conn.transaction():
            await conn.execute("TRUNCATE tracker.route_days, tracker.vendor_hours, tracker.route_deltas")
            await conn.execute(backfill)
            await rollup.fold(conn)
            assert rolled_counts(await conn.fetch(ROLLED_BY_DAY)) == kept


async def test_the_update_trigger_reads_each_row_once_however_many_a_statement_updates(pool):
    """A claim of thousands of messages (list mode) once spent seconds in the rollup's trigger:
    it joined the statement's old and new rows, and with a transition table estimated at one row
    the join was a nested loop rescanning one table per row of the other. Each transition table
    is read once now (sql/014), and the counts stay exact."""
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO tracker.messages (vendor, vendor_ref, submitted_at, state, country)"
            " SELECT 'engagespark', g::text, $1::timestamptz, 'accepted', 'PH'"
            " FROM generate_series(1, 2000) g", T0)
        await conn.execute("LOAD 'auto_explain'")
        for setting in ("log_min_duration = 0", "log_analyze = on", "log_nested_statements = on",
                        "log_level = notice"):
            await conn.execute(f"SET auto_explain.{setting}")
        plans: list[str] = []

        def keep(_conn, msg) -> None:
            plans.append(msg.message)

        conn.add_log_listener(keep)
        # A claim: every counted fact unchanged ...
        await conn.execute("UPDATE tracker.messages SET lease_owner = 'me', lease_until = now()")
        # ... and a report moving half of them on.
        await conn.execute("UPDATE tracker.messages SET state = 'sent' WHERE id % 2 = 0")
        await conn.execute("RESET auto_explain.log_min_duration")
        conn.remove_log_listener(keep)
        trigger_plans = [p for p in plans if "INSERT INTO tracker.route_deltas" in p]
        assert len(trigger_plans) == 2, plans
        for plan in trigger_plans:
            scans = [line for line in plan.splitlines() if "Named Tuplestore Scan" in line]
            assert len(scans) == 2 and all("loops=1)" in s for s in scans), plan
        await rollup.fold(conn)
        exact = as_counts(await conn.fetch(EXACT_BY_DAY), await conn.fetch(EXACT_LATENCY_BY_DAY))
        assert rolled_counts(await conn.fetch(ROLLED_BY_DAY)) == exact
        assert exact[(T0.date(), "engagespark", "PH", "", "sent")] == 1000
