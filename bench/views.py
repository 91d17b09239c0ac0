"""How fast the delivery-by-route views answer at 10 million messages (docs/views.md).

    .venv/bin/python bench/views.py [--messages 10000000] [--days 30] [--dsn DSN]

Fills a fresh database (a private embedded cluster unless --dsn names a server where it may
create one) with messages spread over --days days, 5 vendors, 30 countries and their operators,
mostly final, with lognormal latencies, through the same statement triggers the daemon's writes
fire; folds the rollup; then prints EXPLAIN ANALYZE execution times of the questions the views,
the status page and the dashboard ask, beside the same question asked of tracker.messages
directly (what a plain view would cost).
"""
from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import asyncpg  # noqa: E402

from tracker.db.embedded import EmbeddedPostgres  # noqa: E402
from intake import fresh_database  # noqa: E402

CHUNK = 500_000

# One chunk of messages: $1 first number, $2 how many, $3 days spread.
FILL = """
INSERT INTO tracker.messages (vendor, vendor_ref, recipient, submitted_at, state, delivered_at,
                              country, calling_code, operator, updated_at, last_report_at)
SELECT v.vendor, 'b' || g, NULL, s.at, s.state,
       CASE WHEN s.state >= 'delivered' THEN s.at + make_interval(secs => s.latency) END,
       c.country, c.code,
       CASE WHEN v.vendor = 'skycore' THEN c.country || '-op' || (g % 3) END,
       s.at + make_interval(secs => s.latency), s.at + make_interval(secs => s.latency)
FROM generate_series($1::bigint, $1::bigint + $2 - 1) g
CROSS JOIN LATERAL (SELECT (ARRAY['sparksender', 'engagespark', 'skycore', 'sparrow', 'twilio'])[1 + g % 5]
                    AS vendor) v
CROSS JOIN LATERAL (SELECT 'C' || lpad(((g / 7) % 30)::text, 2, '0') AS country, 100 + (g / 7) % 30 AS code) c
CROSS JOIN LATERAL (
    SELECT now() - make_interval(secs => random() * $3 * 86400) AS at,
           (CASE WHEN r < 0.85 THEN 'delivered' WHEN r < 0.90 THEN 'failed' WHEN r < 0.93 THEN 'rejected'
                 WHEN r < 0.95 THEN 'expired' WHEN r < 0.98 THEN 'unknown' ELSE 'sent' END)::tracker.state AS state,
           exp(2.5 + 1.2 * sqrt(-2 * ln(greatest(random(), 1e-9))) * cos(2 * pi() * random())) AS latency
    FROM (SELECT random() AS r, g) x
) s
"""

QUESTIONS = {
    "delivery_by_route, one day": (
        "SELECT * FROM tracker.delivery_by_route WHERE day = (now() AT TIME ZONE 'UTC')::date - 1",
        """SELECT (submitted_at AT TIME ZONE 'UTC')::date, vendor, country, operator, count(*),
                  count(*) FILTER (WHERE state >= 'delivered'),
                  percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - submitted_at)),
                  percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - submitted_at))
           FROM tracker.messages
           WHERE (submitted_at AT TIME ZONE 'UTC')::date = (now() AT TIME ZONE 'UTC')::date - 1
           GROUP BY 1, 2, 3, 4"""),
    "delivery_by_route, every day and route": (
        "SELECT * FROM tracker.delivery_by_route",
        """SELECT (submitted_at AT TIME ZONE 'UTC')::date, vendor, country, operator, count(*),
                  count(*) FILTER (WHERE state >= 'delivered'),
                  percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - submitted_at))
           FROM tracker.messages GROUP BY 1, 2, 3, 4"""),
    "vendor_comparison (7 days)": (
        "SELECT * FROM tracker.vendor_comparison",
        """SELECT country, vendor, count(*), count(*) FILTER (WHERE state >= 'delivered'),
                  percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - submitted_at))
           FROM tracker.messages WHERE submitted_at >= now() - interval '7 days' GROUP BY 1, 2"""),
    "vendor_hourly, last 24 h (status page charts)": (
        "SELECT * FROM tracker.vendor_hourly WHERE hour >= now() - interval '24 hours'",
        """SELECT date_trunc('hour', submitted_at), vendor, count(*), count(*) FILTER (WHERE state >= 'delivered')
           FROM tracker.messages WHERE submitted_at >= now() - interval '24 hours' GROUP BY 1, 2"""),
    "status page: in flight (capped 100,000) and stuck (10,000) per vendor": (
        """SELECT v, (SELECT count(*) FROM (SELECT 1 FROM tracker.messages m WHERE m.vendor = v
                     AND m.state < 'unknown' LIMIT 100000) f),
                  (SELECT count(*) FROM (SELECT 1 FROM tracker.messages m WHERE m.vendor = v AND m.state < 'unknown'
                     AND m.submitted_at < now() - interval '1 hour'
                     AND coalesce(m.last_report_at, m.submitted_at) < now() - interval '1 hour' LIMIT 10000) s)
           FROM unnest(ARRAY['sparksender', 'engagespark', 'skycore', 'sparrow', 'twilio']) v""",
        None),
}


async def explain_ms(conn: asyncpg.Connection, sql: str, runs: int = 3) -> tuple[float, str]:
    """The best of `runs` EXPLAIN ANALYZE execution times, and that plan's first lines."""
    best, plan = float("inf"), ""
    for _ in range(runs):
        rows = [r[0] for r in await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql)]
        ms = float(re.search(r"Execution Time: ([\d.]+) ms", rows[-1]).group(1))
        if ms < best:
            best, plan = ms, "\n".join(rows[:6])
    return best, plan


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=10_000_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--dsn")
    ap.add_argument("--plans", action="store_true", help="print the plans' first lines too")
    a = ap.parse_args()
    work = None
    if a.dsn:
        dsn = a.dsn
    else:
        work = Path(tempfile.mkdtemp(prefix="tracker-bench-views-"))
        work.chmod(0o755)
        pg = EmbeddedPostgres(work / "pg").start()
        dsn = pg.dsn
    try:
        async with fresh_database(dsn) as db_dsn:
            conn = await asyncpg.connect(db_dsn)
            try:
                await report(conn, a)
            finally:
                await conn.close()
    finally:
        if work is not None:
            pg.stop()
            shutil.rmtree(work, ignore_errors=True)


async def report(conn: asyncpg.Connection, a: argparse.Namespace) -> None:
    t0 = time.monotonic()
    for first in range(0, a.messages, CHUNK):
        await conn.execute(FILL, first, min(CHUNK, a.messages - first), a.days)
        await conn.execute("SELECT tracker.fold_route_deltas()")
        print(f"\r{first + CHUNK:,} messages ({time.monotonic() - t0:.0f} s)", end="", file=sys.stderr)
    print(file=sys.stderr)
    await conn.execute("VACUUM ANALYZE")
    sizes = await conn.fetchrow(
        "SELECT pg_size_pretty(pg_total_relation_size('tracker.messages')) AS messages,"
        " pg_size_pretty(pg_total_relation_size('tracker.route_days')) AS route_days,"
        " (SELECT count(*) FROM tracker.route_days) AS route_rows,"
        " pg_size_pretty(pg_total_relation_size('tracker.vendor_hours')) AS vendor_hours")
    print(f"{a.messages:,} messages over {a.days} days: tracker.messages {sizes['messages']}, "
          f"route_days {sizes['route_days']} ({sizes['route_rows']:,} rows), "
          f"vendor_hours {sizes['vendor_hours']}; filled in {time.monotonic() - t0:.0f} s")
    print(f"{'question':62} {'view (ms)':>10} {'messages (ms)':>14}")
    for name, (view_sql, plain_sql) in QUESTIONS.items():
        view_ms, plan = await explain_ms(conn, view_sql)
        plain = f"{(await explain_ms(conn, plain_sql, 1))[0]:14.1f}" if plain_sql else f"{'-':>14}"
        print(f"{name:62} {view_ms:10.1f} {plain}")
        if a.plans:
            print("    " + plan.replace("\n", "\n    "))


if __name__ == "__main__":
    asyncio.run(main())
