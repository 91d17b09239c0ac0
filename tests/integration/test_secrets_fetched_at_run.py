"""Secrets a running daemon holds that no configuration names as such, echoed by a vendor, reach
no log line, no tracker.vendor_health row and no /status page: Sparrow's login token (fetched at
run time, a new one at each login: tracker.poller.client.TokenCache) and the password of a
vendor's base_url (http://user:password@host). The tracker runs as `tracker run` runs it (its
configuration loaded from the environment, every component started), against a fake Sparrow on
loopback that answers as the audit's did."""
from __future__ import annotations

import contextlib
import io
from base64 import b64decode
from datetime import datetime, timedelta, timezone

import pytest
import structlog
from aiohttp import ClientSession, web

from tests.polling_support import wait_until
from tracker import logging as tlog
from tracker import masking
from tracker.app import Tracker
from tracker.config import load

TOKEN_MARK = "SESSIONSECRET"  # in every token the fake gives
PASSWORD = "BASICpwSECRET42"
BATCH = "5c32728e-340f-43b6-898d-d2b24e8e1426"


class FakeSparrow:
    """Each login gives a new token; every report call is refused echoing the token it was sent
    ("expired session <token>, log in again"): the first token's with HTTP 401 (the tracker
    logs in again), the next ones' as Sparrow words it, HTTP 200 and result "401" (an account
    error: the circuit opens). `refuse_login`: the login itself is refused, echoing the
    basic-auth credentials of the base_url."""

    def __init__(self, refuse_login: bool = False):
        self.refuse_login = refuse_login
        self.tokens: list[str] = []
        self.echoed: list[str] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/autho/apitoken/login/", self.login)
        app.router.add_route("*", "/v1/intlsms/{rest:.*}", self.report)
        return app

    async def login(self, request: web.Request) -> web.Response:
        if self.refuse_login:  # the URL's user and password, as the tracker sent them
            sent = b64decode(request.headers.get("Authorization", "").removeprefix("Basic ")).decode()
            self.echoed.append(sent)
            return web.json_response({"status": "UNAUTHORIZED", "result": "401", "data": {
                "errors": f"basic auth {sent} is not allowed here"}}, status=401)
        token = f"SPRjwt{TOKEN_MARK}_{len(self.tokens) + 1}_xyz123"
        self.tokens.append(token)
        expires = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
        return web.json_response({"data": {"message": "Success", "token": token, "expires_on": expires},
                                  "meta": {}, "result": "00", "status": "OK"})

    async def report(self, request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").partition(" ")[2]
        self.echoed.append(token)
        return web.json_response({"status": "UNAUTHORIZED", "result": "401",
                                  "message": f"expired session {token}, log in again"},
                                 status=401 if token == self.tokens[0] else 200)


@contextlib.asynccontextmanager
async def on_loopback(app: web.Application):
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]
    finally:
        await runner.cleanup()


@pytest.fixture
def logs(no_secrets_registered, monkeypatch):
    """The daemon's log lines, JSON as `tracker run` writes them (redaction included); no
    secret registered before the test's configuration is loaded."""
    monkeypatch.setattr(masking, "_fixed", set())
    monkeypatch.setattr(masking, "_rotating", {})
    out = io.StringIO()
    tlog.configure("info", "json", stream=out, cache=False)
    yield out
    structlog.reset_defaults()


async def run_against(fake: FakeSparrow, db_dsn: str, base_url: str) -> tuple[list[str], str]:
    """Run the tracker with one Sparrow message in flight until vendor_health shows the fake's
    refusal; the errors stored and the /status page."""
    others = {f"TRACKER_VENDORS__{v}__ENABLED": "false"
              for v in ("SPARKSENDER", "ENGAGESPARK", "SKYCORE", "TWILIO")}
    config = load(None, env={
        **others, "TRACKER_DATABASE__DSN": db_dsn, "TRACKER_HTTP__LISTEN": "127.0.0.1:0",
        "TRACKER_VENDORS__SPARROW__BASE_URL": base_url,
        "TRACKER_VENDORS__SPARROW__API_TOKEN": "sparrow-api-token-77",
        "TRACKER_VENDORS__SPARROW__PARTNER_TOKEN": "sparrow-partner-token-77",
        "TRACKER_VENDORS__SPARROW__CIRCUIT_FAILURES": "1",
    })
    tracker = Tracker(config)
    await tracker.start()
    try:
        async with tracker.pool.acquire() as conn:
            await conn.execute("INSERT INTO tracker.submissions (vendor, vendor_ref, recipient)"
                               " VALUES ('sparrow', $1, '9779800000001')", BATCH)

            async def taken_in() -> bool:
                return await conn.fetchval("SELECT count(*) FROM tracker.messages") == 1

            await wait_until(taken_in, 15.0)
            await conn.execute("UPDATE tracker.messages SET next_poll_at = now()")  # due now

            async def error_shown() -> bool:
                return await conn.fetchval("SELECT last_error FROM tracker.vendor_health"
                                           " WHERE vendor = 'sparrow'") is not None

            await wait_until(error_shown, 20.0)
            errors = [r["last_error"] for r in await conn.fetch(
                "SELECT last_error FROM tracker.poll_stats UNION ALL"
                " SELECT last_error FROM tracker.vendor_health") if r["last_error"]]
        host, port = tracker.listen_addresses["listen"]
        async with ClientSession() as http, http.get(f"http://{host}:{port}/status") as r:
            assert r.status == 200
            page = await r.text()
    finally:
        await tracker.stop()
    return errors, page


async def test_a_login_token_echoed_by_sparrow_is_masked_everywhere(db_dsn, logs):
    fake = FakeSparrow()
    async with on_loopback(fake.app()) as port:
        errors, page = await run_against(fake, db_dsn, f"http://127.0.0.1:{port}")
    assert len(fake.tokens) >= 2 and set(fake.echoed) <= set(fake.tokens)  # a new token, refused too
    assert errors and all("expired session ***, log in again" in e for e in errors), errors
    assert "expired session ***, log in again" in page and TOKEN_MARK not in page
    lines = logs.getvalue()
    assert "vendor circuit open" in lines and "expired session ***" in lines
    assert TOKEN_MARK not in lines and not any(TOKEN_MARK in e for e in errors)


async def test_a_base_url_password_echoed_by_sparrow_is_masked_everywhere(db_dsn, logs):
    fake = FakeSparrow(refuse_login=True)
    async with on_loopback(fake.app()) as port:
        errors, page = await run_against(fake, db_dsn, f"http://basicuser:{PASSWORD}@127.0.0.1:{port}")
    assert fake.echoed[0] == f"basicuser:{PASSWORD}"
    assert errors and all("basic auth basicuser:*** is not allowed" in e for e in errors), errors
    assert "basicuser:***" in page and PASSWORD not in page
    lines = logs.getvalue()
    assert "basicuser:*** is not allowed" in lines and PASSWORD not in lines
