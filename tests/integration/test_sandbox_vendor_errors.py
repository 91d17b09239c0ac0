"""The fakes' own error shapes and refusals, judged against the vendors' pages and the adapters:

- the fault knobs (throttle, rate limit, 5xx) answer in each vendor's documented error shape
  (Twilio's error object, engageSPARK's response structure, Sparrow's envelope), and the adapters
  still read those answers on status and login calls as transient by their HTTP status;
- a send call a fake refuses leaves each number it named in the truth as `rejected`, keyed
  (vendor, None, digits) as the tracker keys the message the adapter makes of it, and a number
  without digits, which the tracker skips, is left out of the truth;
- codes the adapters map and the fakes now produce: Twilio 30002 / 30009, Spark Sender's
  per-country 206 / 212 / 213."""
from __future__ import annotations

import asyncio
import base64
import collections
from datetime import datetime, timezone
from typing import Any

import aiohttp
import orjson
import pytest

from tracker import adapters
from tracker.adapters.base import NO_REF
from tracker.adapters.datatypes import HttpResponse, LoginResult, MessageRef
from tracker.sandbox import Sandbox, send_many

FAST = {"time_scale": 0.01, "sent_after_s": 2.0, "latency": "fixed", "latency_s": 10.0}
NOW = datetime.now(timezone.utc)


@pytest.fixture
async def http() -> Any:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        yield s


async def call(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> HttpResponse:
    async with http.request(method, url, **kw) as r:
        return HttpResponse(r.status, dict(r.headers), await r.read())


def twilio_auth(cfg: dict[str, str]) -> dict[str, str]:
    basic = base64.b64encode(f"{cfg['account_sid']}:{cfg['auth_token']}".encode()).decode()
    return {"Authorization": f"Basic {basic}"}


def twilio_url(cfg: dict[str, str], tail: str) -> str:
    return f"{cfg['base_url']}/2010-04-01/Accounts/{cfg['account_sid']}/{tail}"


async def sparrow_token(http: aiohttp.ClientSession, sb: Sandbox) -> str:
    cfg = sb.vendor_config("sparrow")
    resp = await call(http, "POST", cfg["base_url"] + "/v1/autho/apitoken/login/", json={
        "api_token": cfg["api_token"], "partner_token": cfg["partner_token"]})
    return orjson.loads(resp.body)["data"]["token"]


async def fault_answers(http: aiohttp.ClientSession, sb: Sandbox) -> dict[str, dict[int, list[HttpResponse]]]:
    """Per vendor and status: answers to its send and status calls under the knobs now set."""
    out: dict[str, dict[int, list[HttpResponse]]] = collections.defaultdict(
        lambda: collections.defaultdict(list))
    tw, es = sb.vendor_config("twilio"), sb.vendor_config("engagespark")
    es_auth = {"Authorization": f"Token {es['api_key']}"}
    sp = sb.vendor_config("sparrow")
    calls = {
        "twilio": [("POST", twilio_url(tw, "Messages.json"), {"data": {"To": "+14155550100"}}),
                   ("GET", twilio_url(tw, "Messages/SM" + "0" * 32 + ".json"), {})],
        "engagespark": [("POST", es["base_url"] + "/v1/messaging/sms/phonenumbers", {"json": {}}),
                        ("POST", es["base_url"] + "/v1/sms/phonenumber", {"json": {}}),
                        ("GET", f"{es['base_url']}/v1/organizations/{es['org_id']}/messages/1/", {})],
        "sparrow": [("POST", sp["base_url"] + "/v1/autho/apitoken/login/", {"json": {}}),
                    ("GET", sp["base_url"] + "/v1/intlsms/compose/report/x/", {})],
        "skycore": [("POST", sb.base_url("skycore") + "/", {"json": {}})],
        "sparksender": [("GET", sb.base_url("sparksender") + "/api/getStatus/", {})],
    }
    for vendor, todo in calls.items():
        for method, url, kw in todo:
            for _ in range(12):
                resp = await call(http, method, url, headers={**twilio_auth(tw), **es_auth}, **kw)
                out[vendor][resp.status].append(resp)
    return out


def body(resp: HttpResponse) -> Any:
    return orjson.loads(resp.body)


async def test_fault_answers_in_each_vendors_own_shape(http: aiohttp.ClientSession) -> None:
    async with Sandbox(knobs={**FAST, "throttle_share": 1.0, "retry_after_s": 3}, seed=5) as sb:
        got = await fault_answers(http, sb)
    for vendor, by in got.items():
        assert set(by) == {429}, vendor
        assert all(r.headers["Retry-After"] == "3" for r in by[429])
    assert {orjson.dumps(body(r)) for r in got["twilio"][429]} == {orjson.dumps({
        "code": 20429, "message": "Too Many Requests", "status": 429,
        "more_info": "https://www.twilio.com/docs/errors/20429"})}
    es = [body(r) for r in got["engagespark"][429]]
    assert es[0] == {"error": "too many requests", "estimateMicro": 0, "estimate": "0.00",
                     "acceptedMessages": 0, "deliveryDeadline": "", "messages": []}  # bulk
    assert es[12]["error"] == "too many requests" and es[12]["messageId"] == ""  # single
    assert set(es[12]) == {"error", "messageId", "estimateParts", "estimateMicro", "estimate",
                           "deliveryDeadline", "contactId", "to", "message"}
    assert es[24] == {"error": "too many requests", "errorCode": "too_many_requests",
                      "context": {}}  # a status call: as its 400s
    assert {orjson.dumps(body(r)) for r in got["sparrow"][429]} == {orjson.dumps({
        "data": {"errors": "Too Many Requests"}, "meta": {}, "result": "429",
        "status": "TOO_MANY_REQUESTS"})}
    for vendor in ("skycore", "sparksender"):  # their pages document no HTTP errors at all
        assert {orjson.dumps(body(r)) for r in got[vendor][429]} == {b'{"error":"Too Many Requests"}'}

    async with Sandbox(knobs={**FAST, "server_error_share": 1.0}, seed=5) as sb:
        got = await fault_answers(http, sb)
    for vendor, by in got.items():
        assert {500, 502, 503} <= set(by), vendor
        for status in (500, 502, 503):
            assert all("Retry-After" not in r.headers for r in by[status])
    assert {body(r)["code"] for s in (500, 503) for r in got["twilio"][s]} == {20500, 20503}
    assert all(body(r) == {"code": 20000 + r.status, "message": {
        500: "Internal Server Error", 503: "Service Unavailable"}[r.status], "status": r.status,
        "more_info": f"https://www.twilio.com/docs/errors/{20000 + r.status}"}
        for s in (500, 503) for r in got["twilio"][s])
    assert {body(r)["error"] for r in got["engagespark"][500]} == {"internal service error"}
    assert {orjson.dumps(body(r)) for r in got["sparrow"][500]} == {orjson.dumps({
        "data": {"errors": "Internal Server Error"}, "meta": {}, "result": "500",
        "status": "SERVER_ERROR"})}
    # a 502 is a gateway's page everywhere; so is every 5xx where the page documents none
    html = {(v, s) for v, by in got.items() for s in (500, 502, 503)
            for r in by[s] if r.body.startswith(b"<html>")}
    assert html == {("twilio", 502), ("engagespark", 502), ("engagespark", 503),
                    ("sparrow", 502), ("sparrow", 503), ("skycore", 500), ("skycore", 502),
                    ("skycore", 503), ("sparksender", 500), ("sparksender", 502),
                    ("sparksender", 503)}


async def test_adapters_read_fault_answers_as_transient(http: aiohttp.ClientSession) -> None:
    """Status and login calls: a 429 or 5xx in the vendor's shape is transient by its HTTP status,
    with the 429's Retry-After, never an observation or an account error."""
    ref = [MessageRef("SM" + "0" * 32, "14155550100")]
    for knobs in ({"throttle_share": 1.0, "retry_after_s": 4}, {"server_error_share": 1.0}):
        async with Sandbox(knobs={**FAST, **knobs}, seed=9) as sb:
            got = await fault_answers(http, sb)
        for vendor in ("twilio", "engagespark", "sparksender", "sparrow"):
            for status, answers in got[vendor].items():
                for resp in answers:
                    adapter = adapters.get(vendor)
                    if vendor == "sparrow":
                        res: Any = adapter.parse_login(resp, NOW)
                        assert isinstance(res, LoginResult) and res.token is None
                    else:
                        res = adapter.parse_status([resp], ref, NOW)
                        assert res.observations == []
                    assert res.account_error is None, (vendor, status)
                    assert res.transient_error == f"HTTP {status}", (vendor, status)
                    assert (res.retry_after_s == 4.0) == (status == 429), (vendor, status)
        # the twilio send answers say what Twilio's codes say (docs/vendors.md, send responses)
        for status, answers in got["twilio"].items():
            if status in (429, 500, 503):
                res = adapters.get("twilio").parse_send(answers[0], {"To": "+14155550100"}, NOW)
                [o] = res.observations
                assert (o.vendor_ref, o.recipient, o.state.name) == (
                    NO_REF, "14155550100", "rejected" if status == 429 else "unknown")


def truth_keys(sb: Sandbox) -> dict[tuple[str, str | None, str | None], tuple[str, str]]:
    return {k: (t["final"], t["code"]) for k, t in sb.truth().items()}


def adapter_keys(vendor: str, response: Any, request: Any) -> set[tuple[str, None, str | None]]:
    """What the tracker makes of a refused send: (vendor, None, digits) per message without an id
    (tracker/intake/rows.py `_bounded` keys it by row, the recipient its digits)."""
    res = adapters.get(vendor).parse_send(response, request, NOW)
    assert res.account_error is None
    assert all(o.vendor_ref == NO_REF and (o.state is None or o.state.name == "rejected")
               for o in res.observations)
    return {(vendor, None, o.recipient) for o in res.observations if o.recipient}


async def test_refused_sends_leave_each_number_rejected_in_truth(http: aiohttp.ClientSession) -> None:
    async with Sandbox(knobs=FAST, seed=3) as sb:
        tw = sb.vendor_config("twilio")
        for form, code in (({"To": "+1 415-555-0111", "From": "+15005550006", "Body": " "}, "21602"),
                           ({"To": "+14155550112", "Body": "hi"}, "21604")):
            resp = await call(http, "POST", twilio_url(tw, "Messages.json"), data=form,
                              headers=twilio_auth(tw))
            assert (resp.status, body(resp)["code"]) == (400, int(code))
            keys = adapter_keys("twilio", body(resp), form)
            assert keys == {("twilio", None, form["To"].replace(" ", "").replace("-", "")[1:])}
            assert truth_keys(sb)[keys.pop()] == ("rejected", code)

        sky = sb.vendor_config("skycore")
        req = {"action": "sendsms", "to": "+10000000001", "from": "abc!", "message-text": "hi"}
        resp = await call(http, "POST", sky["base_url"] + "/", json=req,
                          headers={"x-api-key": sky["api_key"]})
        assert body(resp)["error-code"] == "E111"
        assert adapter_keys("skycore", body(resp), req) == {("skycore", None, "10000000001")}
        assert truth_keys(sb)[("skycore", None, "10000000001")] == ("rejected", "E111")

        sp = sb.vendor_config("sparrow")
        token = await sparrow_token(http, sb)
        req = {"data": {"text": "", "msg_type": "plain"},
               "session": {"sender_name": "X", "tag": [],
                           "recipients": ["+977-9800000001", 9779800000002, "N/A", "9779800000001"]}}
        resp = await call(http, "POST", sp["base_url"] + "/v1/intlsms/compose/", json=req,
                          headers={"Authorization": f"Bearer {token}"})
        assert (resp.status, body(resp)["result"]) == (400, "11")
        keys = adapter_keys("sparrow", body(resp), req)
        assert keys == {("sparrow", None, "9779800000001"), ("sparrow", None, "9779800000002")}
        assert all(truth_keys(sb)[k] == ("rejected", "11") for k in keys)
        # every key the truth holds is one the tracker has: nothing for "N/A"
        assert len(sb.truth()) == 5
        assert sb.expected(60.0) == {k: "rejected" for k in sb.truth()}


async def test_digitless_numbers_are_not_in_the_truth(http: aiohttp.ClientSession) -> None:
    """A refused number with no digits names no message the tracker can have (it skips it): no
    truth key; one with digits is keyed by its digits alone, a '+' dropped, for every vendor."""
    async with Sandbox(knobs=FAST, seed=3) as sb:
        for vendor, bulk in (("sparrow", True), ("sparksender", True), ("sparksender", False),
                             ("engagespark", True), ("engagespark", False), ("skycore", False),
                             ("twilio", False)):
            valid = "9779800000001" if vendor == "sparrow" else "94711111111"
            numbers = [valid, "abc", "+abc"] if bulk else ["+abc"]
            await send_many(sb, vendor, numbers, bulk=bulk, session=http)
        # Twilio's own form: To "+abc", and a number with digits among letters
        tw = sb.vendor_config("twilio")
        for to in ("+abc", "+1 (415) x"):
            await call(http, "POST", twilio_url(tw, "Messages.json"), headers=twilio_auth(tw),
                       data={"To": to, "From": "+15005550006", "Body": "hi"})
        keys = list(sb.truth())
    assert all(k[2] is None or k[2].isdigit() for k in keys), keys
    assert ("twilio", None, "1415") in keys
    assert not [k for k in keys if k[1] is None and k[0] != "twilio"]


async def test_twilio_account_suspended_and_missing_segment(http: aiohttp.ClientSession) -> None:
    knobs = {**FAST, "delivered": 0.0, "read": 0.0, "expired": 0.0, "rejected": 0.0,
             "no_receipt": 0.0, "failed": 1.0}
    async with Sandbox(knobs=knobs, seed=11) as sb:
        numbers = [f"1415555{i:04d}" for i in range(120)]
        calls = await send_many(sb, "twilio", numbers, session=http)
        msgs = [sb.message("twilio", c.response["sid"]) for c in calls]
        codes = collections.Counter(m.code for m in msgs)
        assert set(codes) == {"30001", "30002", "30003", "30008", "30009"}
        assert codes["30002"] + codes["30009"] < 0.35 * len(msgs)  # the small shares
        tw = sb.vendor_config("twilio")
        suspended = next(m for m in msgs if m.code == "30002")
        segment = next(m for m in msgs if m.code == "30009")
        seen: dict[str, set[str]] = {"30002": set(), "30009": set()}
        for _ in range(400):
            for m in (suspended, segment):
                resp = await call(http, "GET", twilio_url(tw, f"Messages/{m.ref}.json"),
                                  headers=twilio_auth(tw))
                seen[m.code].add(body(resp)["status"])
            if "failed" in seen["30002"] and "undelivered" in seen["30009"]:
                break
            await asyncio.sleep(0.01)
        # 30002: the account was suspended before Twilio sent it: never `sent`, ends `failed`
        assert seen["30002"] <= {"queued", "sending", "failed"} and "failed" in seen["30002"]
        assert "undelivered" in seen["30009"]
        resp = await call(http, "GET", twilio_url(tw, f"Messages/{suspended.ref}.json"),
                          headers=twilio_auth(tw))
        res = adapters.get("twilio").parse_status([resp], [MessageRef(suspended.ref)], NOW)
        assert [(o.state.name, o.code) for o in res.observations] == [("failed", "30002")]
        assert body(resp)["error_message"] == "Account suspended"
        resp = await call(http, "GET", twilio_url(tw, f"Messages/{segment.ref}.json"),
                          headers=twilio_auth(tw))
        res = adapters.get("twilio").parse_status([resp], [MessageRef(segment.ref)], NOW)
        assert [(o.state.name, o.code) for o in res.observations] == [("failed", "30009")]
        truth = sb.truth()
        assert truth[("twilio", suspended.ref, None)]["final"] == "failed"


async def test_twilio_default_fate_shares_unchanged() -> None:
    """The new codes are drawn within `failed`: the fates' default shares stay the knobs'."""
    from tracker.sandbox.knobs import Knobs
    from tracker.sandbox.truth import plan
    from tracker.sandbox.twilio import Twilio
    knobs = Knobs(seed=1)
    fates = collections.Counter(
        plan("twilio", f"SM{i}", "14155550100", knobs=knobs, now=0.0, wall=NOW,
             fate_map=Twilio.FATE_MAP, codes=Twilio.CODES)[0].fate for i in range(20000))
    shares = {f: n / 20000 for f, n in fates.items()}
    assert abs(shares["delivered"] - 0.85) < 0.015 and abs(shares["failed"] - 0.05) < 0.007


async def test_sparksender_per_country_refusals(http: aiohttp.ClientSession) -> None:
    """206, 212 and 213 (the page's per-country codes, both calls) for the sandbox's countries
    850, 500 and 672: single and bulk, each number rejected in the truth as the adapter reads it."""
    numbers = {"8501234567": "206", "5001234567": "212", "67212345678": "213"}
    async with Sandbox(knobs=FAST, seed=3) as sb:
        calls = await send_many(sb, "sparksender", ["94711111111", *numbers], bulk=True, session=http)
        [bulk] = calls
        assert bulk.response["unsuccess"] == [[{"number": n, "status": int(c)}
                                               for n, c in numbers.items()]]
        assert len(bulk.response["success"][0]) == 1
        res = adapters.get("sparksender").parse_send(bulk.response, bulk.request, NOW)
        got = {o.recipient: (o.state.name, o.code) for o in res.observations if o.vendor_ref == NO_REF}
        assert got == {n: ("rejected", c) for n, c in numbers.items()}
        truth = sb.truth()
        assert {k[2]: (t["final"], t["code"]) for k, t in truth.items() if k[1] is None} == got
    async with Sandbox(knobs=FAST, seed=3) as sb:
        for number, code in numbers.items():
            [single] = await send_many(sb, "sparksender", ["+" + number], session=http)
            assert single.response == {"status_code": int(code)}
            assert sb.truth()[("sparksender", None, number)]["final"] == "rejected"
