"""tracker.delivery_summary and tracker.delivery_latency (sql/017) read the rollup, so a day's
figures stay whole when retention removes its final messages (DESIGN.md § 9), whether or not the
rollup sweep has folded that day yet; and they agree with tracker.delivery_by_route."""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

from tracker import retention, rollup
from tracker.config_types import RetentionConfig

UTC = timezone.utc
TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
DAY_A = TODAY - timedelta(days=100) + timedelta(hours=10)  # folded before retention runs
DAY_B = TODAY - timedelta(days=96) + timedelta(hours=23, minutes=30)  # left in route_deltas

# (vendor, submitted_at, final state, seconds from submission to delivery or None)
DATA = (
    [("sparksender", DAY_A, "delivered", s) for s in (3, 7, 12, 25, 40, 90, 150, 600)]
    + [("sparksender", DAY_A, "failed", None)] * 2
    + [("skycore", DAY_A, "delivered", s) for s in (0.4, 30, 45)] + [("skycore", DAY_A, "expired", None)]
    + [("sparksender", DAY_B, "read", s) for s in (5, 8)]
    + [("sparksender", DAY_B, "delivered", s) for s in (13, 21, 34)] + [("sparksender", DAY_B, "rejected", None)]
)
QUANTILES = {"p50_s": 0.5, "p90_s": 0.9, "p99_s": 0.99}
# Older than this (and final since before it) may go: both days' messages.
CONFIG = RetentionConfig(final_messages_days=90, batch_size=4, pause_ms=0, run_budget_s=30)

# 003's definitions over tracker.messages: what the views said before any message was removed.
EXACT_SUMMARY = """
SELECT m.vendor, (m.submitted_at AT TIME ZONE 'UTC')::date AS day, count(*) AS total,
       count(*) FILTER (WHERE m.state = 'submitted') AS submitted, count(*) FILTER (WHERE m.state = 'accepted') AS accepted,
       count(*) FILTER (WHERE m.state = 'sent') AS sent, count(*) FILTER (WHERE m.state = 'unknown') AS unknown,
       count(*) FILTER (WHERE m.state = 'expired') AS expired, count(*) FILTER (WHERE m.state = 'rejected') AS rejected,
       count(*) FILTER (WHERE m.state = 'failed') AS failed, count(*) FILTER (WHERE m.state = 'delivered') AS delivered,
       count(*) FILTER (WHERE m.state = 'read') AS read,
       round(count(*) FILTER (WHERE m.state >= 'delivered')::numeric / count(*), 4) AS delivered_ratio
FROM tracker.messages m GROUP BY 1, 2 ORDER BY 1, 2
"""
# hist_quantile rounds to milliseconds.
ROUNDING_S = 0.0005


async def load(conn) -> int:
    """Both days' messages, final five days after submission, one published event each; every
    event is acknowledged but the last one (a failed Spark Sender message of day A, which
    retention must therefore keep). Day A is folded, day B is not. Returns that message's id."""
    ids = []
    for day in (DAY_A, DAY_B):
        if day == DAY_B:
            assert await rollup.fold(conn) > 0  # day A into route_days
        for i, (vendor, at, state, latency_s) in enumerate(DATA):
            if at == day:
                ids.append(await conn.fetchval(
                    "INSERT INTO tracker.messages (vendor, vendor_ref, state, submitted_at, updated_at, delivered_at)"
                    " SELECT $1, $2, $3::tracker.state, t, t + interval '5 days', t + make_interval(secs => $5)"
                    " FROM (SELECT $4::timestamptz AS t) s RETURNING id", vendor, str(i), state, at, latency_s))
    held = ids[DATA.index(("sparksender", DAY_A, "failed", None))]
    await conn.execute(
        "INSERT INTO tracker.transitions (message_id, from_state, to_state, source, occurred_at, recorded_at, pos)"
        " SELECT id, 'submitted', state, 'poll', updated_at, updated_at,"
        "        (SELECT last_pos FROM tracker.event_publisher) + row_number() OVER (ORDER BY id = $1, id)"
        " FROM tracker.messages", held)
    last = await conn.fetchval("UPDATE tracker.event_publisher SET last_pos = last_pos + $1 RETURNING last_pos",
                               len(ids))
    await conn.execute("INSERT INTO tracker.consumers (consumer, acked_pos) VALUES ('billing', $1)", last - 1)
    # Today's message in flight: never retention's.
    await conn.execute("INSERT INTO tracker.messages (vendor, vendor_ref) VALUES ('sparksender', 'today')")
    return held


async def bucket_of_nearest_rank(conn, latencies: list[float], q: float) -> tuple[float, float]:
    """The bounds (s) of the latency bucket (sql/009: tracker.latency_bucket) holding the
    nearest-rank q-percentile, the latency of rank ceil(q·n): the histogram's quantile is
    interpolated within that bucket, so that bucket's width is the test's tolerance."""
    nearest = sorted(latencies)[math.ceil(q * len(latencies)) - 1]
    return tuple(await conn.fetchrow(
        "SELECT tracker.bucket_lower_s(b), tracker.bucket_upper_s(b)"
        " FROM tracker.latency_bucket(to_timestamp(0), to_timestamp($1)) AS b", nearest))


async def views(conn) -> tuple[list, list]:
    return (await conn.fetch("SELECT * FROM tracker.delivery_summary ORDER BY vendor, day"),
            await conn.fetch("SELECT * FROM tracker.delivery_latency ORDER BY vendor, day"))


async def unfolded_days(conn) -> set:
    return {r[0] for r in await conn.fetch(
        "SELECT DISTINCT (hour AT TIME ZONE 'UTC')::date FROM tracker.route_deltas")}


async def test_retention_leaves_delivery_summary_and_latency_whole(pool):
    async with pool.acquire() as conn:
        held = await load(conn)
        assert DAY_B.date() in await unfolded_days(conn) and DAY_A.date() not in await unfolded_days(conn)
        summary, latency = await views(conn)
        # Before retention: counts and ratio exactly what 003's count over the messages said ...
        assert [dict(r) for r in summary] == [dict(r) for r in await conn.fetch(EXACT_SUMMARY)]
        by = {(r["vendor"], r["day"]): r for r in summary}
        a = by["sparksender", DAY_A.date()]
        assert (a["total"], a["delivered"], a["failed"], float(a["delivered_ratio"])) == (10, 8, 2, 0.8)
        b = by["sparksender", DAY_B.date()]
        assert (b["total"], b["delivered"], b["read"], b["rejected"], float(b["delivered_ratio"])) == (6, 3, 2, 1, 0.8333)
        assert [(r["vendor"], r["day"], r["delivered"]) for r in latency] == [
            ("skycore", DAY_A.date(), 3), ("sparksender", DAY_A.date(), 8), ("sparksender", DAY_B.date(), 5)]

    swept = await retention.sweep(pool, CONFIG)

    async with pool.acquire() as conn:
        final = next(s for s in swept if s.kind == "final_messages")
        assert final.removed == len(DATA) - 1
        assert [r[0] for r in await conn.fetch("SELECT id FROM tracker.messages WHERE vendor_ref <> 'today'")] == [held]
        # Day B's deltas are still unfolded, and both views still say what they said.
        assert DAY_B.date() in await unfolded_days(conn)
        assert await views(conn) == (summary, latency)
        await check_against_delivery_by_route(conn, summary, latency)
        # Folding day B changes nothing either.
        assert await rollup.fold(conn) > 0
        assert await views(conn) == (summary, latency)


async def check_against_delivery_by_route(conn, summary, latency) -> None:
    """delivery_by_route summed over routes gives the same counts; with one route per vendor
    and day (no country or operator here) the same histogram, so the same p50 and p90."""
    routes = await conn.fetch(
        "SELECT vendor, day, sum(total) total, sum(delivered) delivered, sum(read) read, sum(failed) failed,"
        "       sum(rejected) rejected, sum(expired) expired, sum(submitted) submitted,"
        "       round(sum(delivered + read) / sum(total), 4) delivered_ratio, count(*) routes,"
        "       min(p50_s) p50_s, min(p90_s) p90_s"
        " FROM tracker.delivery_by_route GROUP BY vendor, day ORDER BY vendor, day")
    assert [(r["vendor"], r["day"], r["total"], r["delivered"], r["read"], r["failed"], r["rejected"], r["expired"],
             r["submitted"], r["delivered_ratio"]) for r in routes] == \
        [(s["vendor"], s["day"], s["total"], s["delivered"], s["read"], s["failed"], s["rejected"], s["expired"],
          s["submitted"], s["delivered_ratio"]) for s in summary]
    by_route = {(r["vendor"], r["day"]): r for r in routes}
    for r in latency:
        route = by_route[r["vendor"], r["day"]]
        assert route["routes"] == 1 and (route["p50_s"], route["p90_s"]) == (r["p50_s"], r["p90_s"])


async def test_latency_quantiles_lie_in_the_bucket_of_the_nearest_rank_percentile(pool):
    """p50/p90/p99 come from the latency histogram: each lies within the bucket (about 9% wide)
    holding the latency of rank ceil(q·n), folded or not."""
    async with pool.acquire() as conn:
        await load(conn)
        unfolded = await conn.fetch("SELECT * FROM tracker.delivery_latency ORDER BY vendor, day")
        await rollup.fold(conn)
        latency = await conn.fetch("SELECT * FROM tracker.delivery_latency ORDER BY vendor, day")
        assert latency == unfolded and len(latency) == 3
        for r in latency:
            latencies = [s for v, at, _, s in DATA if (v, at.date()) == (r["vendor"], r["day"]) and s is not None]
            assert r["delivered"] == len(latencies)
            for k, q in QUANTILES.items():
                lo, hi = await bucket_of_nearest_rank(conn, latencies, q)
                assert lo - ROUNDING_S <= r[k] <= hi + ROUNDING_S, (r["vendor"], r["day"], k, r[k], lo, hi)
