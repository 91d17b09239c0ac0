"""Sparrow's report call over loopback: the page contradicts itself (POST vs GET, compose/ vs
campaign/, /delivery vs /delivered), so the sandbox serves one variant (its settings, the
adapter's defaults by default) and answers the others as a web server's router does (404 / 405).
The adapter's settings `report_method` / `report_prefix` / `report_path` choose the call; a wrong choice is an account (configuration)
error that opens the circuit, never a per-message "not found" nor an endless transient retry."""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

import aiohttp
import pytest

from tests.polling_support import make_config, numbers, send, start_poller, wait_until
from tracker.adapters import sparrow as sp
from tracker.adapters.base import HttpRequest, HttpResponse, MessageRef
from tracker.config_types import VendorConfig
from tracker.core.states import State
from tracker.sandbox import Sandbox, send_many

KNOBS = {"time_scale": 0.001, "latency": "fixed", "latency_s": 1.0, "delivered": 1.0, "read": 0.0,
         "failed": 0.0, "expired": 0.0, "rejected": 0.0, "no_receipt": 0.0}


@pytest.fixture
async def sandbox():
    sb = Sandbox(knobs=KNOBS, seed=7)
    await sb.start()
    yield sb
    await sb.stop()


async def fetch(http: aiohttp.ClientSession, req: HttpRequest) -> HttpResponse:
    kw: dict[str, Any] = {"headers": dict(req.headers or {}), "allow_redirects": False}
    if req.json is not None:
        kw["json"] = req.json
    async with http.request(req.method, req.url, **kw) as resp:
        return HttpResponse(resp.status, dict(resp.headers), await resp.read())


def now() -> datetime:
    return datetime.now(timezone.utc)


async def poll(sb: Sandbox, http: aiohttp.ClientSession, cfg: VendorConfig, refs: list[MessageRef]):
    login = sp.parse_login(await fetch(http, sp.login_request(cfg)), now())
    assert login.token, login
    reqs = sp.status_requests(cfg, refs, login.token)
    start = sb.request_count
    result = sp.parse_status([await fetch(http, r) for r in reqs], refs, now())
    seen = [(r["method"], r["path"].rsplit("/", 2)[-2], r["status"]) for r in sb.requests if r["seq"] > start]
    return result, seen


async def one_batch(sb: Sandbox, http: aiohttp.ClientSession) -> list[MessageRef]:
    [call] = await send_many(sb, "sparrow", ["+9779800000001", "+9779800000002"], bulk=True, session=http)
    batch = call.response["data"]["batch_id"]
    return [MessageRef(batch, "9779800000001"), MessageRef(batch, "9779800000002")]


def cfg_of(sb: Sandbox, **settings: str) -> VendorConfig:
    return VendorConfig.from_keys("sparrow", **{**sb.vendor_config("sparrow"), **settings})


async def test_the_configured_report_call_is_used_and_a_wrong_one_is_a_config_error(sandbox):
    sb = sandbox
    async with aiohttp.ClientSession() as http:
        refs = await one_batch(sb, http)
        await wait_delivered(sb, refs)
        # defaults on both sides: GET .../delivery/
        result, seen = await poll(sb, http, cfg_of(sb), refs)
        assert seen == [("GET", "delivery", 200), ("GET", "failed", 200)]
        assert result.account_error is None and [o.state for o in result.observations] == [State.delivered] * 2

        # the sandbox serves POST .../delivered/ only; vendor_config hands the settings on
        sb.vendors["sparrow"].set_report(method="POST", path="delivered")
        assert sb.vendor_config("sparrow")["report_method"] == "POST"
        result, seen = await poll(sb, http, cfg_of(sb), refs)
        assert seen == [("POST", "delivered", 200), ("POST", "failed", 200)]
        assert result.account_error is None and [o.state for o in result.observations] == [State.delivered] * 2

        # the tracker configured otherwise: the vendor's router refuses, the adapter says why
        result, seen = await poll(sb, http, cfg_of(sb, report_method="POST", report_path="delivery"), refs)
        assert seen == [("POST", "delivery", 404), ("POST", "failed", 200)]
        assert (result.observations, result.transient_error) == ([], None)
        assert result.account_error.code == "http_404" and "report_path" in result.account_error.reason
        result, seen = await poll(sb, http, cfg_of(sb, report_method="GET", report_path="delivered"), refs)
        assert seen == [("GET", "delivered", 405), ("GET", "failed", 405)]
        assert (result.observations, result.transient_error) == ([], None)
        assert result.account_error.code == "http_405" and "report_method" in result.account_error.reason

        # an unknown batch on the right call is still Sparrow's own 404: per message, no account error
        gone = [MessageRef("00000000-0000-4000-8000-000000000000", "9779800000001")]
        result, seen = await poll(sb, http, cfg_of(sb), gone)
        assert [s for _, _, s in seen] == [404, 404] and result.account_error is None
        assert [(o.state, o.code) for o in result.observations] == [(None, "404")]


async def test_a_bad_sandbox_report_setting_is_refused(sandbox):
    fake = sandbox.vendors["sparrow"]
    with pytest.raises(ValueError):
        fake.set_report(method="PUT")
    with pytest.raises(ValueError):
        fake.set_report(path="report")
    with pytest.raises(ValueError):
        fake.set_report(prefix="intlsms")
    assert fake.report_variant() == ("GET", "compose", "delivery")  # unchanged


async def test_the_campaign_prefix_is_served_and_used_when_configured(sandbox):
    """The page's response section: /campaign/report/:uuid/delivered (and .../failed)."""
    sb = sandbox
    async with aiohttp.ClientSession() as http:
        refs = await one_batch(sb, http)
        await wait_delivered(sb, refs)
        sb.vendors["sparrow"].set_report(prefix="campaign", path="delivered")
        assert sb.vendor_config("sparrow")["report_prefix"] == "campaign"
        assert sb.vendors["sparrow"].report_variant() == ("GET", "campaign", "delivered")
        start = sb.request_count
        result, seen = await poll(sb, http, cfg_of(sb), refs)
        prefixes = [r["path"].split("/report/")[0].rsplit("/", 1)[-1] for r in sb.requests
                    if r["seq"] > start and "/report/" in r["path"]]
        assert prefixes == ["campaign", "campaign"]
        assert seen == [("GET", "delivered", 200), ("GET", "failed", 200)]
        assert result.account_error is None and [o.state for o in result.observations] == [State.delivered] * 2

        # the tracker left at compose/: the router has no such route, the adapter names the setting
        result, seen = await poll(sb, http, cfg_of(sb, report_prefix="compose"), refs)
        assert seen == [("GET", "delivered", 404), ("GET", "failed", 404)]
        assert (result.observations, result.transient_error) == ([], None)
        assert result.account_error.code == "http_404" and "report_prefix" in result.account_error.reason

        # and the other way round: the sandbox back at compose/, the tracker asking campaign/
        sb.vendors["sparrow"].set_report(path="delivered")
        result, seen = await poll(sb, http, cfg_of(sb, report_prefix="campaign"), refs)
        assert seen == [("GET", "delivered", 404), ("GET", "failed", 404)]
        assert result.account_error.code == "http_404" and result.observations == []
        result, seen = await poll(sb, http, cfg_of(sb), refs)
        assert result.account_error is None and [o.state for o in result.observations] == [State.delivered] * 2


async def test_the_poller_opens_the_circuit_on_a_wrong_report_call(sandbox, pool, db_dsn):
    """Through the real poller: the sandbox serves POST, the tracker sends GET (the default)."""
    sandbox.vendors["sparrow"].set_report(method="POST")
    config = make_config(sandbox, db_dsn, circuit_failures=1, circuit_reset_s=60.0,
                         sparrow={"report_method": "GET"})
    await send(sandbox, pool, config, "sparrow", numbers(4, "97798"))
    p = await start_poller(config, pool)
    try:
        worker = p.workers["sparrow"]

        async def opened() -> bool:
            return worker.health.circuit.state == "open"

        await wait_until(opened, 10.0)
        reports = [r for r in sandbox.requests if "/compose/report/" in r["path"]]
        assert reports and {(r["method"], r["status"]) for r in reports} == {("GET", 405)}
    finally:
        await p.stop()
    async with pool.acquire() as conn:  # visible where an operator looks (vendor_health)
        errors = [r["last_error"] for r in await conn.fetch(
            "SELECT last_error FROM tracker.poll_stats WHERE vendor = 'sparrow' AND last_error IS NOT NULL")]
        assert errors and all("http_405" in e and "report_method" in e for e in errors)
    async with pool.acquire() as conn:  # no message was given a state by it
        assert await conn.fetchval("SELECT count(*) FROM tracker.messages WHERE vendor = 'sparrow'"
                                   " AND state NOT IN ('accepted', 'submitted')") == 0


async def wait_delivered(sb: Sandbox, refs: list[MessageRef]) -> None:
    for _ in range(250):
        truth = sb.truth()
        if all(truth[("sparrow", r.vendor_ref, r.recipient)]["current"] == "delivered" for r in refs):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the sandbox never delivered")
