"""The SQL views answer the questions operators ask."""
from datetime import datetime

from tracker.adapters.base import Observation
from tracker.core.states import State
from tracker.db import reducer


async def test_summary_latency_and_stuck(pool):
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO tracker.messages (vendor, vendor_ref, submitted_at) SELECT 'sparksender', g::text,"
            " '2026-03-01 10:00+00'::timestamptz FROM generate_series(1, 10) g")
        await conn.execute(
            "INSERT INTO tracker.messages (vendor, vendor_ref, submitted_at) VALUES"
            " ('skycore', 'old', now() - interval '3 hours'), ('skycore', 'new', now())")
        await conn.execute("INSERT INTO tracker.vendor_settings VALUES ('skycore', 3600)")
        obs = [Observation(vendor="sparksender", vendor_ref=str(i), recipient=None, state=State.delivered, code="2",
                           event_at=datetime.fromisoformat(f"2026-03-01T10:00:{i:02d}+00:00"))
               for i in range(1, 9)]
        obs += [Observation(vendor="sparksender", vendor_ref="9", recipient=None, state=State.failed, code="3"),
                Observation(vendor="sparksender", vendor_ref="10", recipient=None, state=State.sent, code="1")]
        await reducer.apply(conn, "poll", obs)
        s = await conn.fetchrow("SELECT * FROM tracker.delivery_summary WHERE vendor = 'sparksender'")
        assert (s["total"], s["delivered"], s["failed"], s["sent"]) == (10, 8, 1, 1)
        assert float(s["delivered_ratio"]) == 0.8
        lat = await conn.fetchrow("SELECT * FROM tracker.delivery_latency WHERE vendor = 'sparksender'")
        assert lat["delivered"] == 8
        # Latencies 1..8 s. The quantiles come from the rollup's latency histogram (sql/017): each
        # within the bucket holding the nearest-rank percentile (4 s for p50, 8 s for p99), not
        # percentile_cont's 4.5 s and 7.93 s; hist_quantile rounds to milliseconds.
        for col, nearest_s in (("p50_s", 4), ("p99_s", 8)):
            lo, hi = await conn.fetchrow(
                "SELECT tracker.bucket_lower_s(b), tracker.bucket_upper_s(b)"
                " FROM tracker.latency_bucket(to_timestamp(0), to_timestamp($1)) AS b", nearest_s)
            assert lo - 0.0005 <= lat[col] <= hi + 0.0005, (col, lat[col], lo, hi)
        stuck = {r["vendor_ref"] for r in await conn.fetch("SELECT vendor_ref FROM tracker.stuck_messages")}
        # sparksender 10 was submitted long ago but reported just now: not silent, so not stuck.
        assert stuck == {"old"}
