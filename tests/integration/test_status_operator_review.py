"""GET /status after an on-call operator's review: what the page hid. A vendor refusing every
send looked healthy; the tracker's own readiness was nowhere; poll errors had no age; sinks were
listed as consumers 0 behind; "last hour" was two clock hours; unmapped codes had no count; the
page's queries ran with JIT on."""
from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import asyncpg

from tests.integration.test_status_page import card, serving, shown
from tests.status_support import add_messages
from tracker.config_types import Config, HealthConfig
from tracker.http.drain import Drain
from tracker.http import ops, status
from tracker.http.status_page import esc
from tracker.supervisor import Beat, Supervisor, beat

ACCOUNT = "the vendor reported an account problem: 20003 Authenticate <&>"


async def page_of(pool, **kw) -> str:
    async with serving(pool, **kw) as (session, url):
        async with session.get(url) as r:
            assert r.status == 200
            return await r.text()


def since(back: timedelta) -> set[str]:
    """How the page names the start of a window `back` long, the page made moments ago: by its
    clock hour (the previous one for the last hour), "yesterday" when that was before midnight
    (UTC). Both as of now and of five minutes ago, so that a test that crosses the top of an
    hour, or midnight, does not fail by it."""
    now = datetime.now(timezone.utc)
    return {f"{t - back:%H}:00" + (" yesterday" if (t - back).date() < t.date() else "")
            for t in (now, now - timedelta(minutes=5))}


HOUR = timedelta(hours=1)


def has_any(text: str, templates: set[str]) -> bool:
    return any(t in text for t in templates)


async def test_a_vendor_refusing_every_send_shows_its_refused_rows(pool):
    async with pool.acquire() as conn:
        # refused before the window (numbered first: rows are numbered as they arrive)
        await conn.execute(
            "INSERT INTO tracker.submissions (vendor, response, processed_at, error, created_at)"
            " SELECT 'twilio', '{}', now(), 'old', now() - interval '3 hours' FROM generate_series(1, 5)")
        await add_messages(conn, "twilio", 3, timedelta(minutes=20), "delivered", 5, tag="ok")
        await add_messages(conn, "twilio", 1, timedelta(minutes=20), "failed", None, tag="ko")
        await conn.execute(
            "INSERT INTO tracker.submissions (vendor, response, processed_at, error, created_at)"
            " SELECT 'twilio', '{}', now(), $1, now() - interval '1 minute' FROM generate_series(1, 251)",
            ACCOUNT)
        await conn.execute(  # named no message: in the refused rows' index, not refused
            "INSERT INTO tracker.submissions (vendor, vendor_ref, processed_at, message_count)"
            " VALUES ('twilio', 'x', now(), 0)")
        await conn.execute(
            "INSERT INTO tracker.submissions (vendor, response, processed_at, error)"
            " VALUES ('sparksender', '{}', now(), 'cannot read the sparksender send response')")
    page = await page_of(pool)
    twilio = card(page, "vendor-twilio")
    assert shown(page, "twilio")["ratio_hour"] == "75.0%"  # what the card read, alone
    assert shown(page, "twilio")["refused"] == "251"
    assert has_any(twilio, {f'class="b bad">251 refused at intake since {h}</span>' for h in since(HOUR)})
    assert 'class="b bad">account error</span>' in twilio  # the reason the rows give
    assert f"): {esc(ACCOUNT)}</div>" in twilio and ACCOUNT not in twilio  # its reason, escaped
    assert shown(page, "sparksender")["refused"] == "1"
    assert "account error" not in card(page, "vendor-sparksender")
    assert shown(page, "skycore")["refused"] == "0" and "refused at intake since" not in card(page, "vendor-skycore")


async def test_rows_refused_for_a_vendor_no_card_shows_are_on_the_page(pool):
    # 50 rows sent as vendor 'SparkSender' (the wrong case), all refused: intake_problems listed
    # them, but every card said "refused at intake 0" and the page looked idle.
    why = "unknown vendor 'SparkSender'; expected one of sparksender, engagespark"
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO tracker.submissions (vendor, response, processed_at, error, created_at)"
            " SELECT 'SparkSender', '{}', now(), $1, now() - interval '1 minute'"
            " FROM generate_series(1, 50)", why)
    page = await page_of(pool)
    said = card(page, "pipeline")
    assert has_any(said, {f"50 submission rows refused since {h} for vendor &#x27;SparkSender&#x27;, "
                          f"not one of ours: {esc(why)}" for h in since(HOUR)}), said
    assert all(shown(page, v)["refused"] == "0" for v in ("sparksender", "twilio"))


async def test_account_errors_half_open_circuits_and_poll_errors_have_an_age(pool):
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO tracker.poll_stats (vendor, replica, last_success_at, last_error_at, last_error,"
            " circuit_state, circuit_since) VALUES"
            # recovered: the error is 7 min old, before the last success
            " ('sparksender', 'r1', now() - interval '2 seconds', now() - interval '7 minutes',"
            "  'account error http_401: Unauthorized', 'closed', now() - interval '5 minutes'),"
            # failing now
            " ('engagespark', 'r1', now() - interval '10 minutes', now() - interval '10 seconds',"
            "  'account error 20003: <Authenticate>', 'open', now() - interval '3 minutes'),"
            # half-open, nothing good for 30 min (5 probe cycles are 5 min)
            " ('skycore', 'r1', now() - interval '30 minutes', now() - interval '1 minute', 'timeout',"
            "  'half_open', now() - interval '10 seconds'),"
            # half-open after a good poll a moment ago: no badge
            " ('sparrow', 'r1', now() - interval '20 seconds', now() - interval '1 minute', 'timeout',"
            "  'half_open', now() - interval '10 seconds')")
    page = await page_of(pool)
    spark, engage = card(page, "vendor-sparksender"), card(page, "vendor-engagespark")
    # ages to a tenth of a minute, the page made a moment after the rows (seconds on a busy machine)
    assert re.search(r'circuit <span class="b ok">closed</span> for 5\.\d min · polled by 1 replica', spark)
    assert re.search(re.escape('<div class="sub old" data-k="poll_error">last poll error, ') + r"7\.\d min ago"
                     + re.escape(", before the last success: account error http_401: Unauthorized</div>"), spark)
    assert "account error</span>" not in spark
    assert 'class="b bad">account error</span>' in engage and 'class="b bad">circuit open</span>' in engage
    assert re.search(r'circuit <span class="b bad">open</span> for 3\.\d min', engage)
    assert ('<div class="sub err" data-k="poll_error">last poll error, 1'  # 10.x s ago
            in engage and esc("account error 20003: <Authenticate>") in engage)
    assert re.search(r'class="b bad">half-open, last success 30\.\d min ago</span>', card(page, "vendor-skycore"))
    assert "half-open, last success" not in card(page, "vendor-sparrow")


async def test_the_tracker_card_says_what_readyz_says_and_who_polls(pool):
    clock = [1000.0]
    supervisor = Supervisor(HealthConfig(), clock=lambda: clock[0], sleep=lambda _s: asyncio.sleep(0))
    # the reviewer's publisher: blocked by another session's lock, no progress for 140 s
    publisher = Beat(supervisor.health("publisher"), supervisor.clock)
    publisher.progress()
    publisher.blocked("publication blocked by a lock <held by pid 4242>")
    recovered, parked = asyncio.Event(), asyncio.Event()
    tries = 0

    async def flaky() -> None:  # fails twice, then works
        nonlocal tries
        tries += 1
        if tries <= 2:
            raise RuntimeError("disk <full>")
        beat().progress()
        recovered.set()
        await parked.wait()

    task = supervisor.spawn("status-test-loop", flaky, stopping=parked.is_set)
    await asyncio.wait_for(recovered.wait(), 5)
    clock[0] += 140
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO tracker.poll_stats (vendor, replica, updated_at, stopped_at) VALUES"
            " ('sparksender', 'host-a/1', now(), NULL), ('skycore', 'host-a/1', now(), NULL),"
            " ('sparksender', 'host-b/2', now(), now()),"  # stopped
            " ('twilio', 'host-c/3', now() - interval '5 minutes', NULL)")  # silent
    try:
        page = await page_of(pool, supervisor=supervisor)
    finally:
        parked.set()
        await task
    tracker = card(page, "tracker")
    assert 'class="b bad">not ready' in tracker
    assert (f"<li><b>publisher</b>: {esc('publication blocked by a lock <held by pid 4242>')}; "
            "no progress for 140 s</li>") in tracker
    assert re.search(r"<td>status-test-loop</td><td class=\"n\">2</td><td>recovered</td>", tracker)
    assert esc("last error: RuntimeError: disk <full>") in tracker
    assert "<td>host-a/1</td><td>skycore, sparksender</td>" in tracker
    assert "host-b/2" not in tracker and "host-c/3" not in tracker


async def test_sinks_are_not_consumers_and_show_their_health_in_words(pool):
    long_error = "HTTP 500 from the receiver: " + "no-space-" * 40 + "<end>"
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO tracker.sinks (name, kind, consumer, last_success_at, last_error, last_error_at)"
            " VALUES ('billing', 'webhook', 'sink:billing', now() - interval '40 seconds', $1,"
            "         now() - interval '5 seconds')", long_error)
        await conn.execute(
            "INSERT INTO tracker.sinks (name, kind, consumer, disabled_at, disabled_reason)"
            " VALUES ('crm', 'webhook', 'sink:crm', now(), '410 Gone')")
        await conn.execute("INSERT INTO tracker.consumers (consumer, acked_pos) VALUES"
                           " ('sink:billing', 0), ('sink:crm', 0), ('reports', 0)")
        await conn.execute(
            "INSERT INTO tracker.sink_deliveries (sink, event_id, pos, message_id, recorded_at, body, status)"
            " SELECT 'billing', g, g, g, now(), '\\x7b7d', CASE WHEN g <= 2 THEN 'dead' ELSE 'pending' END"
            " FROM generate_series(1, 1236) g")
        behind = await conn.fetchval("SELECT events_behind FROM tracker.sink_status WHERE sink = 'billing'")
    assert behind >= 1000
    page = await page_of(pool)
    pipeline = card(page, "pipeline")
    consumers = pipeline[pipeline.index('class="consumers"'):pipeline.index("<h3>Sinks</h3>")]
    assert "<td>reports</td>" in consumers and "sink:" not in consumers
    sinks = pipeline[pipeline.index("<h3>Sinks</h3>"):]
    billing = sinks[sinks.index("<td>billing"):sinks.index("<td>crm")]
    # ages to a tenth of a second: the page is made a moment after the rows (on a busy machine,
    # seconds): 40 and 5 s, give or take what the test took
    assert re.search(re.escape('<td>billing<div class="sub">webhook</div></td><td>enabled</td>'
                               f'<td class="n">{behind:,}</td><td class="n"><span class="b bad">2</span></td>'
                               "<td>") + r"4\d\.\d s ago</td></tr>", billing), billing
    assert re.search(r'<div class="wrap">last error \([5-9]\.\d s ago\): '
                     + re.escape(f"{esc(long_error)}</div></td></tr>"), billing), billing
    crm = sinks[sinks.index("<td>crm"):]
    assert ('<td><span class="b bad">disabled</span></td><td class="n">0</td><td class="n">0</td>'
            "<td>never</td></tr>") in crm
    assert '<div class="wrap">disabled: 410 Gone</div>' in crm


async def test_windows_are_named_by_the_hour_they_start(pool):
    page = await page_of(pool)
    spark = card(page, "vendor-sparksender")
    assert has_any(spark, {f"delivered, since {h}</span>" for h in since(HOUR)})
    assert has_any(spark, {f"<th>since {h}</th>" for h in since(HOUR)})
    assert has_any(spark, {f"<th>since {h}</th>" for h in since(timedelta(days=1))})
    assert "last hour" not in page and "last day" not in page


async def test_unmapped_codes_show_their_reports_and_when_last_seen(pool, monkeypatch):
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO tracker.observations (vendor, vendor_ref, source, state, code, received_at)"
            " VALUES ('skycore', 'a', 'postback', NULL, 'X7', now() - interval '10 minutes'),"
            "        ('skycore', 'b', 'postback', NULL, 'X7', now() - interval '20 minutes'),"
            "        ('skycore', 'c', 'poll', NULL, 'X7', now() - interval '30 minutes'),"
            "        ('skycore', 'd', 'poll', NULL, 'Y<9>', now() - interval '2 hours'),"
            "        ('skycore', 'e', 'poll', 'delivered', 'Z', now())")
    sky = card(await page_of(pool), "vendor-skycore")
    assert "2 unmapped codes" in sky
    assert re.search(r"<li><code>X7</code> ×3, last seen 10\.\d min ago</li>", sky)
    assert f"<li><code>{esc('Y<9>')}</code> ×1, last seen 2.0 h ago</li>" in sky
    monkeypatch.setattr(status, "UNMAPPED_COUNT_CAP", 2)  # counted up to 2: bounds, said so
    sky = card(await page_of(pool), "vendor-skycore")
    assert re.search(r"<li><code>X7</code> ×≥2, last seen at most \d+\.\d min ago</li>", sky)


class JitWatched(asyncpg.Connection):
    """Notes the jit setting in force when each query of a transaction runs."""

    seen: list[str] = []

    async def _note(self) -> None:
        if self.is_in_transaction():
            JitWatched.seen.append(await super().fetchval("SHOW jit"))

    async def fetch(self, *args, **kw):
        await self._note()
        return await super().fetch(*args, **kw)

    async def fetchrow(self, *args, **kw):
        await self._note()
        return await super().fetchrow(*args, **kw)


async def test_the_page_queries_run_without_jit(db_dsn):
    JitWatched.seen = []
    pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=1, connection_class=JitWatched,
                                     server_settings={"jit": "on"})
    try:
        config = Config()
        await status.gather(SimpleNamespace(config=config, pool=pool, heads=ops.HeadClock(),
                                            supervisor=Supervisor(config.health), drain=Drain(0)))
        assert len(JitWatched.seen) >= 10 and set(JitWatched.seen) == {"off"}, JitWatched.seen
    finally:
        await pool.close()
