"""tracker.delivery_by_route, tracker.vendor_comparison, tracker.vendor_hourly (sql/009) on a known
data set: routes derived at intake from recipients of several countries and malformed ones,
operators from postbacks, figures checked whether or not the rollup has been folded."""
from __future__ import annotations

import random
import re
from datetime import datetime, timedelta, timezone

import pytest

from tracker import rollup
from tracker.adapters.base import Observation
from tracker.config_types import Config
from tracker.core.states import Failure, State
from tracker.db import reducer
from tracker.intake import take_in

UTC = timezone.utc
TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
DAY = TODAY - timedelta(days=1) + timedelta(hours=10)  # yesterday 10:00 UTC
OLD = TODAY - timedelta(days=30) + timedelta(hours=10)  # outside vendor_comparison's 7 days

# (vendor, ref, recipient, submitted_at, [(state, seconds after submission, operator)])
DATA = [
    ("skycore", "s1", "12025550123", DAY, [(State.sent, 2, "AT&T"), (State.delivered, 10, "AT&T")]),
    ("skycore", "s2", "12025550124", DAY, [(State.delivered, 20, "AT&T")]),
    ("skycore", "s3", "12025550125", DAY, [(State.delivered, 30, "AT&T")]),
    ("skycore", "s4", "12025550126", DAY, [(State.failed, 40, "AT&T")]),
    ("skycore", "s5", "14165550123", DAY, [(State.delivered, 60, "Rogers")]),           # CA
    ("skycore", "s6", "447400123456", DAY, [(State.sent, 5, "Vodafone")]),              # GB, in flight
    ("skycore", "s7", "447700900123", DAY, [(State.delivered, 8, None)]),               # +44, no region
    ("sparksender", "p1", "12025550127", DAY, [(State.delivered, 100, None)]),
    ("sparksender", "p2", "12025550128", DAY, [(State.delivered, 200, None)]),
    ("sparksender", "p3", "12025550129", DAY, [(State.rejected, 1, None)]),
    ("sparksender", "p4", "9779801234567", DAY, [(State.delivered, 50, None)]),          # NP
    ("sparksender", "p5", "12", DAY, [(State.delivered, 5, None)]),                     # malformed
    ("sparksender", "p6", "99912345678", DAY, []),                                      # unassigned code
    ("sparksender", "p7", "12025550130", OLD, [(State.delivered, 7, None)]),
]


async def load_known_data(conn) -> None:
    await conn.executemany(
        "INSERT INTO tracker.submissions (vendor, vendor_ref, recipient, submitted_at) VALUES ($1, $2, $3, $4)",
        [(v, ref, to, at) for v, ref, to, at, _ in DATA])
    result = await take_in(conn, Config())
    assert result.messages == len(DATA) and result.refused == 0
    for v, ref, _, at, reports in DATA:
        for state, after_s, operator in reports:
            failure = Failure("E", "failed", True) if state in (State.failed, State.rejected) else None
            o = Observation(vendor=v, vendor_ref=ref, recipient=None, state=state, code=state.name, event_at=at + timedelta(seconds=after_s),
                            failure=failure, operator=operator)
            await reducer.apply(conn, "postback", [o], received_at=at + timedelta(seconds=after_s))


async def test_routes_are_derived_from_recipients_at_intake(pool):
    async with pool.acquire() as conn:
        await load_known_data(conn)
        routes = {r["vendor_ref"]: (r["country"], r["calling_code"]) for r in await conn.fetch(
            "SELECT vendor_ref, country, calling_code FROM tracker.messages")}
    assert routes["s1"] == ("US", 1) and routes["s5"] == ("CA", 1)
    assert routes["s6"] == ("GB", 44) and routes["p4"] == ("NP", 977)
    assert routes["s7"] == (None, 44)  # a +44 range assigned to no region
    assert routes["p5"] == (None, None) and routes["p6"] == (None, None)  # never an error


@pytest.mark.parametrize("folded", [False, True])
async def test_delivery_by_route_on_a_known_data_set(pool, folded):
    async with pool.acquire() as conn:
        await load_known_data(conn)
        if folded:
            assert await rollup.fold(conn) > 0
            assert await conn.fetchval("SELECT count(*) FROM tracker.route_deltas") == 0
        rows = await conn.fetch("SELECT * FROM tracker.delivery_by_route WHERE day = $1", DAY.date())
        by = {(r["vendor"], r["country"], r["operator"]): r for r in rows}
        assert set(by) == {("skycore", "US", "AT&T"), ("skycore", "CA", "Rogers"), ("skycore", "GB", "Vodafone"),
                           ("skycore", None, None), ("sparksender", "US", None), ("sparksender", "NP", None),
                           ("sparksender", None, None)}
        us = by["skycore", "US", "AT&T"]
        assert (us["total"], us["delivered"], us["failed"], us["in_flight"]) == (4, 3, 1, 0)
        assert float(us["delivered_ratio"]) == 0.75
        assert 19 <= us["p50_s"] <= 21  # the middle of 10, 20, 30 s, within its bucket (9%)
        assert 28 <= us["p90_s"] <= 32.1
        gb = by["skycore", "GB", "Vodafone"]
        assert (gb["total"], gb["sent"], gb["in_flight"], gb["delivered"]) == (1, 1, 1, 0)
        assert gb["delivered_ratio"] == 0 and gb["p50_s"] is None
        ps = by["sparksender", "US", None]
        assert (ps["total"], ps["delivered"], ps["rejected"]) == (3, 2, 1)
        assert 91 <= ps["p50_s"] <= 109  # of 100 and 200 s: the lower, within its bucket
        unknown = by["sparksender", None, None]
        assert (unknown["total"], unknown["delivered"], unknown["submitted"]) == (2, 1, 1)
        # The old day is its own row.
        old = await conn.fetch("SELECT * FROM tracker.delivery_by_route WHERE day = $1", OLD.date())
        assert [(r["vendor"], r["country"], r["delivered"]) for r in old] == [("sparksender", "US", 1)]


async def test_vendor_comparison_sets_vendors_side_by_side(pool):
    async with pool.acquire() as conn:
        await load_known_data(conn)
        rows = await conn.fetch("SELECT * FROM tracker.vendor_comparison")
        await rollup.fold(conn)
        assert await conn.fetch("SELECT * FROM tracker.vendor_comparison") == rows
    us = [r for r in rows if r["country"] == "US"]
    # Over the last 7 days (the 30-day-old message is left out), best delivered ratio first.
    assert [(r["vendor"], r["messages"], float(r["delivered_ratio"]), r["rank_in_country"]) for r in us] == [
        ("skycore", 4, 0.75, 1), ("sparksender", 3, 0.6667, 2)]
    assert [float(r["share"]) for r in us] == [pytest.approx(4 / 7, abs=1e-4), pytest.approx(3 / 7, abs=1e-4)]
    assert all(float(r["best_ratio_in_country"]) == 0.75 for r in us)
    assert 19 <= us[0]["p50_s"] <= 21 and 91 <= us[1]["p50_s"] <= 109
    assert {r["country"] for r in rows} == {"US", "CA", "GB", "NP", None}


async def test_vendor_hourly_and_figures_since(pool):
    async with pool.acquire() as conn:
        await load_known_data(conn)
        hour = await conn.fetchrow("SELECT * FROM tracker.vendor_hourly WHERE vendor = 'skycore' AND hour = $1",
                                   DAY.replace(minute=0))
        assert (hour["total"], hour["delivered"], hour["in_flight"], hour["not_delivered"]) == (7, 5, 1, 1)
        figures = {r["vendor"]: r for r in await conn.fetch(
            "SELECT * FROM tracker.vendor_figures_since($1)", DAY - timedelta(minutes=5))}
        assert figures["sparksender"]["total"] == 6 and float(figures["sparksender"]["delivered_ratio"]) == 0.6667
        assert figures["skycore"]["total"] == 7


async def test_latency_percentiles_track_the_exact_ones(pool):
    """On a few thousand random latencies, the bucketed p50/p90 stay within a bucket's width (9%)
    of PostgreSQL's exact percentile_cont."""
    rnd = random.Random(14)
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO tracker.messages (vendor, vendor_ref, submitted_at, state, delivered_at, country)"
            " SELECT 'engagespark', g::text, $1::timestamptz, 'delivered', $1::timestamptz + make_interval(secs => s), 'PH'"
            " FROM unnest($2::float8[]) WITH ORDINALITY AS u(s, g)",
            DAY, [rnd.lognormvariate(3.5, 1.2) for _ in range(3000)])
        exact = await conn.fetchrow(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - submitted_at)) AS p50,"
            "       percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - submitted_at)) AS p90"
            " FROM tracker.messages")
        await rollup.fold(conn)
        got = await conn.fetchrow("SELECT * FROM tracker.delivery_by_route WHERE vendor = 'engagespark'")
    assert got["total"] == 3000 and float(got["delivered_ratio"]) == 1
    assert abs(got["p50_s"] / float(exact["p50"]) - 1) < 0.09
    assert abs(got["p90_s"] / float(exact["p90"]) - 1) < 0.09


async def test_day_filter_reads_the_rollup_by_its_key(pool):
    async with pool.acquire() as conn:
        plan = "\n".join(r[0] for r in await conn.fetch(
            "EXPLAIN SELECT * FROM tracker.delivery_by_route WHERE day = $1", DAY.date()))
        key = [r[0] for r in await conn.fetch(
            "SELECT a.attname FROM pg_index i, unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)"
            " JOIN pg_attribute a ON a.attrelid = 'tracker.route_days'::regclass AND a.attnum = k.attnum"
            " WHERE i.indexrelid = 'tracker.route_days_pkey'::regclass ORDER BY k.n")]
    # The rollup is read through its primary key, the day as the index condition: not a scan of
    # every day, nor some other index. (Index or bitmap scan: the planner's pick.) The day leads
    # the key, so the condition reads that day's entries only, not the whole index.
    assert key[0] == "day", key
    assert re.search(r"Index Scan on route_days_pkey\b.*\n\s+Index Cond: \(day = ", plan), plan
    assert not re.search(r"Seq Scan on route_days\b", plan), plan
