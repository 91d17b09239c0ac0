"""A known data set for the status page (tests/integration/test_status_page.py and the headless
browser acceptance test): what each vendor's card must show, with hostile texts to escape."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

HOSTILE_CODE = '<script>alert("code")</script>'
HOSTILE_CONSUMER = "billing<img src=x onerror=alert(1)>"

# What the page must show per vendor, by data-k (tracker.http.status_page); every other vendor
# configured shows QUIET.
QUIET = {"in_flight": "0", "stuck": "0", "ratio_hour": "–", "ratio_day": "–"}
EXPECTED = {
    "sparksender": {"in_flight": "1", "stuck": "0", "ratio_hour": "80.0%", "ratio_day": "65.0%"},
    "engagespark": {"in_flight": "0", "stuck": "0", "ratio_hour": "100.0%", "ratio_day": "100.0%"},
    "skycore": {"in_flight": "5", "stuck": "5", "ratio_hour": "–", "ratio_day": "0.0%"},
    "sparrow": QUIET,
}


def expected_cards() -> dict[str, dict[str, str]]:
    """Every vendor the default configuration enables, with what its card must show."""
    from tracker.config_types import Config

    return {v.name: EXPECTED.get(v.name, QUIET) for v in Config().vendors.values() if v.enabled}


async def add_messages(conn, vendor: str, n: int, ago: timedelta, state: str, latency_s: float | None,
                       country: str = "US", operator: str | None = None, tag: str = "") -> None:
    now = datetime.now(timezone.utc)
    await conn.execute(
        "INSERT INTO tracker.messages (vendor, vendor_ref, submitted_at, state, delivered_at, country, operator)"
        " SELECT $1, $2 || g, $3::timestamptz, $4::tracker.state,"
        "        $3::timestamptz + make_interval(secs => $5::float8), $6, $7"
        " FROM generate_series(1, $8) g",
        vendor, f"{vendor}-{tag}-", now - ago, state, latency_s, country, operator, n)


async def seed(conn, *, backlog: bool = True) -> None:
    m = timedelta(minutes=1)
    # Spark Sender: last hour 10 (8 delivered, 1 failed, 1 in flight); 10 more 5 h ago (5 delivered).
    await add_messages(conn, "sparksender", 8, 20 * m, "delivered", 30, tag="a")
    await add_messages(conn, "sparksender", 1, 20 * m, "failed", None, tag="b")
    await add_messages(conn, "sparksender", 1, 20 * m, "sent", None, tag="c")
    await add_messages(conn, "sparksender", 5, 300 * m, "delivered", 90, country="PH", tag="d")
    await add_messages(conn, "sparksender", 5, 300 * m, "failed", None, country="PH", tag="e")
    # engageSPARK: 4 delivered in the last hour.
    await add_messages(conn, "engagespark", 4, 30 * m, "delivered", 120, country="NP", tag="a")
    # Skycore: 5 accepted 3 h ago and never heard of again: in flight and stuck (expected 1 h).
    await add_messages(conn, "skycore", 5, 180 * m, "accepted", None, operator="AT&T", tag="a")
    await conn.execute(
        "INSERT INTO tracker.observations (vendor, vendor_ref, source, state, code)"
        " VALUES ('skycore', 'skycore-a-1', 'postback', NULL, $1)", HOSTILE_CODE)
    await conn.execute(
        "INSERT INTO tracker.poll_stats (vendor, replica, polls_ok, polls_failed, last_success_at,"
        " last_error_at, last_error, circuit_state) VALUES"
        " ('sparksender', 'test', 10, 0, now() - interval '30 seconds', NULL, NULL, 'closed'),"
        " ('engagespark', 'test', 3, 7, now() - interval '10 minutes', now(), 'timeout', 'open')")
    # One event nobody has acknowledged yet.
    mid = await conn.fetchval("SELECT id FROM tracker.messages WHERE vendor_ref = 'sparksender-a-1'")
    await conn.execute(
        "INSERT INTO tracker.transitions (message_id, from_state, to_state, source, occurred_at)"
        " VALUES ($1, 'sent', 'delivered', 'postback', now())", mid)
    await conn.execute("SELECT tracker.publish_events()")
    await conn.execute("INSERT INTO tracker.consumers (consumer, acked_pos) VALUES ($1, 0)", HOSTILE_CONSUMER)
    await conn.execute(
        "INSERT INTO tracker.retention_runs (kind, started_at, cutoff, removed, batches)"
        " VALUES ('postbacks', now() - interval '2 hours', now() - interval '15 days', 4321, 5),"
        " ('postbacks', now() - interval '1 hour', now() - interval '15 days', 1234, 2)")
    if backlog:
        await conn.execute(
            "INSERT INTO tracker.submissions (vendor, vendor_ref, created_at)"
            " VALUES ('sparksender', 'waiting', now() - interval '2 minutes')")
        await conn.execute(
            "INSERT INTO tracker.postbacks (vendor, method, body, received_at)"
            " VALUES ('skycore', 'POST', '{}', now() - interval '10 seconds')")
