"""GET /status (tracker.http.status) against a real PostgreSQL: each vendor's figures from a known
data set, everything escaped, the token, the sinks' view absent or present, the database gone."""
from __future__ import annotations

import contextlib
import dataclasses
import re
from types import SimpleNamespace

import aiohttp
import pytest
import structlog
from aiohttp import web

from tests.status_support import HOSTILE_CODE, HOSTILE_CONSUMER, expected_cards, seed
from tracker import metrics
from tracker.config_types import Config, HttpConfig
from tracker.http.drain import Drain
from tracker.http import ops, status
from tracker.http.status_page import esc
from tracker.supervisor import Supervisor

TOKEN = "status-token-0123456789abcdef"


@contextlib.asynccontextmanager
async def serving(pool, config: Config | None = None, supervisor: Supervisor | None = None):
    """The status route alone on a loopback port, over this test's database, with what /readyz
    reads of the daemon (its supervisor: no component running unless one is given)."""
    config = config or Config()
    app = web.Application()
    status.add_routes(app, SimpleNamespace(config=config, pool=pool, heads=ops.HeadClock(),
                                           supervisor=supervisor or Supervisor(config.health),
                                           drain=Drain(0)))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = site._server.sockets[0].getsockname()[:2]
    try:
        async with aiohttp.ClientSession() as session:
            yield session, f"http://{host}:{port}/status"
    finally:
        await runner.cleanup()


def shown(page: str, vendor: str) -> dict[str, str]:
    """The data-k figures of a vendor's card."""
    return dict(re.findall(r'data-k="(\w+)">([^<]*)<', card(page, f"vendor-{vendor}")))


def shows(page: str, vendor: str, figures: dict[str, str]) -> bool:
    """The vendor's card shows these figures (among others)."""
    return figures.items() <= shown(page, vendor).items()


def card(page: str, card_id: str) -> str:
    """The section of that id."""
    at = page.index(f'id="{card_id}"')
    return page[at:page.index("</section>", at)]


async def test_each_vendor_shows_its_figures_escaped(pool):
    async with pool.acquire() as conn:
        await seed(conn)
        await conn.execute("DROP VIEW IF EXISTS tracker.sink_status CASCADE")
    async with serving(pool) as (session, url):
        async with session.get(url) as r:
            assert r.status == 200 and r.content_type == "text/html"
            assert "script-src" not in r.headers["Content-Security-Policy"]  # no script at all
            assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]  # never framed
            assert r.headers["Cache-Control"] == "no-store"
            page = await r.text()
    for vendor, figures in expected_cards().items():
        assert shows(page, vendor, figures), vendor
    assert '<meta http-equiv="refresh" content="15;url=/status">' in page
    assert "<script" not in page and "<img" not in page  # hostile texts are shown, as text
    assert esc(HOSTILE_CODE) in page and esc(HOSTILE_CONSUMER) in page
    assert 'class="b bad">circuit open' in page  # engageSPARK's circuit
    assert "5 stuck, oldest submitted 3.0 h ago" in page
    assert 'data-k="intake_waiting">1<' in page and 'data-k="postbacks_waiting">1<' in page
    # amber and red by /readyz's stall limits (60 s): a row 2 min old is red, a postback 10 s
    # old is fine (any backlog was amber)
    assert 'data-k="intake_oldest"><span class="b bad">' in page
    assert 'data-k="postbacks_oldest"><span class="b ok">' in page
    # the tracker itself: that intake row makes /readyz 503, and the page says so
    tracker = card(page, "tracker")
    assert 'class="b bad">not ready' in tracker
    assert "<b>intake</b>: the oldest submission row has waited 120 s" in tracker
    assert page.count("<svg") == len(expected_cards())  # a chart per vendor
    assert "no sinks: tracker.sink_status does not exist" in page
    assert ">postbacks</td>" in page and ">1,234</td>" in page  # what retention last removed
    assert ">4,321</td>" not in page  # the run before
    # Top routes: Spark Sender to the US first (10 messages).
    routes = page[page.index("Top routes"):]
    assert re.search(r"<td>sparksender</td><td>US</td><td>–</td><td class=\"n\">10</td>"
                     r"<td class=\"n\">80.0%</td>", routes)


async def test_sinks_are_shown_when_their_view_exists(pool):
    async with pool.acquire() as conn:
        if await conn.fetchval("SELECT to_regclass('tracker.sinks') IS NOT NULL"):
            await conn.execute("INSERT INTO tracker.sinks (name, kind, consumer) VALUES ('crm', 'webhook', 'sink:crm')")
        else:  # before the sinks' migration: a stand-in of its view
            await conn.execute("CREATE VIEW tracker.sink_status AS SELECT 'crm'::text AS sink, 0 AS events_behind")
    async with serving(pool) as (session, url):
        async with session.get(url) as r:
            page = await r.text()
    sinks = page[page.index("<h3>Sinks</h3>"):]
    assert re.search(r"<td>crm(<div|</td>)", sinks) and "events behind" in sinks


async def test_a_broken_sink_view_is_shown_not_fatal(pool):
    async with pool.acquire() as conn:
        await conn.execute("DROP VIEW IF EXISTS tracker.sink_status CASCADE")
        await conn.execute("CREATE VIEW tracker.sink_status AS SELECT 'x'::text AS sink, 1 / 0 AS lag")
    async with serving(pool) as (session, url):
        async with session.get(url) as r:
            assert r.status == 200
            assert "sink status unreadable: DivisionByZeroError" in await r.text()


async def test_token_in_query_or_bearer_compared_and_kept_in_the_refresh(pool):
    config = dataclasses.replace(Config(), http=HttpConfig(status_token=TOKEN))
    async with serving(pool, config) as (session, url):
        for headers, query in [({}, ""), ({}, "?token=nope"), ({"Authorization": "Bearer nope"}, ""),
                               ({"Authorization": f"Basic {TOKEN}"}, "")]:
            async with session.get(url + query, headers=headers) as r:
                assert r.status == 401 and TOKEN not in await r.text()
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
        async with session.get(url, params={"token": TOKEN}) as r:
            assert r.status == 200
            assert f'content="15;url=/status?token={TOKEN}"' in await r.text()
        async with session.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200 and 'content="15;url=/status"' in await r.text()


async def test_refusals_are_counted_and_logged_a_line_a_minute(pool, monkeypatch):
    # anyone who reaches the listener can send them: 3,000 wrong tokens wrote 3,000 lines
    monkeypatch.setattr(status, "_refusals", status.Throttle())
    config = dataclasses.replace(Config(), http=HttpConfig(status_token=TOKEN, trusted_proxies=("127.0.0.1/32",)))
    before = metrics.status_refused._value.get()
    async with serving(pool, config) as (session, url):
        with structlog.testing.capture_logs() as logs:
            for _ in range(20):
                async with session.get(url + "?token=guess", headers={"X-Forwarded-For": "203.0.113.9"}) as r:
                    assert r.status == 401
    [line] = [e for e in logs if e["event"].startswith("status page refused")]
    assert (line["peer"], line["left_out"]) == ("203.0.113.9", 0)  # the client, not the proxy
    assert metrics.status_refused._value.get() - before == 20


async def test_figures_are_kept_a_few_seconds(pool, monkeypatch):
    async with serving(pool) as (session, url):
        async with session.get(url) as r:
            before = shown(await r.text(), "sparrow")
        async with pool.acquire() as conn:
            await conn.execute("INSERT INTO tracker.messages (vendor, vendor_ref) VALUES ('sparrow', 'new')")
        async with session.get(url) as r:
            assert shown(await r.text(), "sparrow") == before  # from the cache
        monkeypatch.setattr(status, "CACHE_S", 0.0)
        async with session.get(url) as r:
            assert shown(await r.text(), "sparrow")["in_flight"] == "1"


async def test_database_gone_is_a_503_page_saying_so(db_dsn):
    import asyncpg

    pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=2)
    await pool.close()
    async with serving(pool) as (session, url):
        async with session.get(url) as r:
            assert r.status == 503
            assert "Database unavailable" in await r.text()


@pytest.mark.parametrize("value,expected", [(None, "–"), (0.5, "0.5 s"), (150, "2.5 min"), (7200, "2.0 h"),
                                            (3 * 86400, "3.0 d")])
def test_durations_read_well(value, expected):
    from tracker.http.status_page import seconds

    assert seconds(value) == expected
