"""The sandbox's fake vendors over real HTTP on loopback: send and status answers per vendor,
fates converging to the ground truth, the knobs, postbacks and their retries, the logs."""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import aiohttp
import orjson
import pytest
from aiohttp import web

from tracker.sandbox import VENDORS, Knobs, Sandbox, SendError, send_many

FAST = {"time_scale": 0.01, "sent_after_s": 2.0, "latency": "fixed", "latency_s": 10.0}
NO_FATES = {"delivered": 0.0, "read": 0.0, "failed": 0.0, "expired": 0.0, "rejected": 0.0,
            "no_receipt": 0.0, "temp_failure": 0.0, "telco_retry": 0.0}
PH = ["639171234567", "639171234568", "639171234569"]


def only(fate: str, **more: Any) -> dict[str, Any]:
    return {**FAST, **NO_FATES, fate: 1.0, **more}


@contextlib.asynccontextmanager
async def sandbox(knobs: dict[str, Any] | None = None, **kw: Any) -> AsyncIterator[Sandbox]:
    sb = Sandbox(knobs=knobs if knobs is not None else FAST, seed=kw.pop("seed", 7), **kw)
    await sb.start()
    try:
        yield sb
    finally:
        await sb.stop()


class Receiver:
    """A postback receiver; answers the scripted statuses in turn, then 200."""

    def __init__(self, statuses: list[int] | None = None, delay: float = 0.0) -> None:
        self.hits: list[tuple[float, str, str, bytes]] = []
        self.statuses = list(statuses or [])
        self.delay = delay
        self._runner: web.AppRunner | None = None
        self.base = ""

    async def _handle(self, request: web.Request) -> web.Response:
        self.hits.append((time.monotonic(), request.path, request.content_type,
                          await request.read()))
        status = self.statuses.pop(0) if self.statuses else 200
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(status=status, text="ok")

    async def __aenter__(self) -> "Receiver":
        app = web.Application()
        app.router.add_post("/pb/{name}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base = f"http://127.0.0.1:{self._runner.addresses[0][1]}/pb/"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def url(self, name: str) -> str:
        return self.base + name

    def bodies(self, name: str | None = None) -> list[Any]:
        return [orjson.loads(b) for _, p, _, b in self.hits if name is None or p.endswith(name)]


async def eventually(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def es_in_state(sb: Sandbox, rx: "Receiver", number: str, state: str) -> str:
    """An engageSPARK message sent (its pushes to `rx`), once in vendor-side `state`: its id."""
    [call] = await send_many(sb, "engagespark", [number], client_push_url=rx.url("es"))
    ref = call.response["messageId"]
    msg = sb.message("engagespark", ref)
    loop = asyncio.get_running_loop()
    await eventually(lambda: msg.state_at(loop.time())[0] == state)
    return ref


async def settle(sb: Sandbox, timeout: float = 5.0) -> None:
    await eventually(lambda: all(v["settled"] or v["fate"] == "no_receipt"
                                 for v in sb.truth().values()), timeout)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        yield s


async def get_json(http: aiohttp.ClientSession, method: str, url: str, **kw: Any
                   ) -> tuple[int, Any, Any]:
    async with http.request(method, url, **kw) as r:
        body = await r.read()
        try:
            return r.status, orjson.loads(body), r.headers
        except orjson.JSONDecodeError:
            return r.status, body, r.headers


# -- Spark Sender --------------------------------------------------------------------------

async def ss_status(http: aiohttp.ClientSession, sb: Sandbox, ref: str, **override: str) -> int:
    cfg = sb.vendor_config("sparksender")
    params = {"user_id": cfg["user_id"], "api_key": cfg["api_key"], "msg_id": ref, **override}
    _, body, _ = await get_json(http, "GET", cfg["base_url"] + "/api/getStatus/", params=params)
    return body["sms_status"]


async def test_sparksender_send_bulk_and_status(http: aiohttp.ClientSession) -> None:
    async with sandbox(only("delivered")) as sb:
        cfg = sb.vendor_config("sparksender")
        [call] = await send_many(sb, "sparksender", [PH[0]])
        assert call.response["status_code"] == 204 and call.response["msg_id"].isdigit()
        assert "api_key" not in call.request and call.request["recipient_contact_no"] == PH[0]
        ref = call.response["msg_id"]
        assert await ss_status(http, sb, ref) in (0, 4)  # pending / processing
        assert await ss_status(http, sb, "000" + ref) in (0, 4)  # leading zeros do not matter
        await eventually(lambda: sb.message("sparksender", ref).state_at(
            asyncio.get_running_loop().time())[0] == "sent")
        assert await ss_status(http, sb, ref) == 1
        await settle(sb)
        assert await ss_status(http, sb, ref) == 2
        assert await ss_status(http, sb, "999999") == 5
        assert await ss_status(http, sb, ref, api_key="wrong") == 6

        [bulk] = await send_many(sb, "sparksender", [PH[1], "58478", PH[2], "12"], bulk=True)
        success, unsuccess = bulk.response["success"], bulk.response["unsuccess"]
        assert [s["number"] for s in success[0]] == [PH[1], PH[2]]
        assert all(isinstance(s["msgId"], str) for s in success[0])
        assert unsuccess == [[{"number": "58478", "status": 203}, {"number": "12", "status": 203}]]
        assert sb.truth()[("sparksender", None, "58478")]["final"] == "rejected"
        assert sb.truth()[("sparksender", None, "12")]["code"] == "203"

        # GET with query parameters works too, with and without the trailing slash
        q = {"user_id": cfg["user_id"], "api_key": cfg["api_key"], "sender_id": "SparkDEMO",
             "message": "hi", "recipient_contact_no": PH[0]}
        for path in ("/api/send/", "/api/send"):
            _, body, _ = await get_json(http, "GET", cfg["base_url"] + path, params=q)
            assert body["status_code"] == 204
        for bad, code in (({"api_key": "x"}, 202), ({"sender_id": ""}, 211),
                          ({"recipient_contact_no": ""}, 207), ({"message": ""}, 209)):
            _, body, _ = await get_json(http, "POST", cfg["base_url"] + "/api/send/",
                                        data={**q, **bad})
            assert body == {"status_code": code}
        sb.set_knobs("sparksender", account="suspended")
        _, body, _ = await get_json(http, "POST", cfg["base_url"] + "/api/send/", data=q)
        assert body == {"status_code": 210}
        assert await ss_status(http, sb, ref) == 8
        sb.set_knobs("sparksender", account="ok", blocked_words=("casino",))
        _, body, _ = await get_json(http, "POST", cfg["base_url"] + "/api/send/",
                                    data={**q, "message": "Win at the Casino"})
        assert body == {"status_code": 216}


async def test_sparksender_failures_and_no_receipt(http: aiohttp.ClientSession) -> None:
    async with sandbox(only("expired")) as sb:
        [call] = await send_many(sb, "sparksender", [PH[0]])
        sb.set_knobs(**only("no_receipt"))
        [silent] = await send_many(sb, "sparksender", [PH[1]])
        await settle(sb)
        assert await ss_status(http, sb, call.response["msg_id"]) == 3
        assert await ss_status(http, sb, silent.response["msg_id"]) == 1  # sent, forever
        truth = sb.truth()
        assert truth[("sparksender", call.response["msg_id"], None)]["final"] == "failed"
        t = truth[("sparksender", silent.response["msg_id"], None)]
        assert (t["final"], t["last_real"], t["fate"]) == ("unknown", "sent", "no_receipt")


# -- engageSPARK ---------------------------------------------------------------------------

async def es_status(http: aiohttp.ClientSession, sb: Sandbox, ref: str) -> tuple[int, Any]:
    cfg = sb.vendor_config("engagespark")
    status, body, _ = await get_json(
        http, "GET", f"{cfg['base_url']}/v1/organizations/{cfg['org_id']}/messages/{ref}/",
        headers={"Authorization": f"Token {cfg['api_key']}"})
    return status, body


async def test_engagespark_sends_status_and_list(http: aiohttp.ClientSession) -> None:
    async with sandbox(only("delivered")) as sb:
        cfg = sb.vendor_config("engagespark")
        auth = {"Authorization": f"Token {cfg['api_key']}"}
        [bulk] = await send_many(sb, "engagespark", [PH[0], "12", PH[1]], bulk=True)
        r = bulk.response
        assert r["error"] == "" and r["acceptedMessages"] == 2 and r["estimate"] == "0.04"
        assert r["deliveryDeadline"].endswith("Z") and len(r["deliveryDeadline"]) == 30
        assert [m["error"] for m in r["messages"]] == ["", "invalid 'to' number", ""]
        assert r["messages"][2]["id"].endswith("-2")
        ref = r["messages"][0]["id"]
        status, obj = await es_status(http, sb, ref)
        assert status == 200 and obj["deliveredToTelco"] is False and obj["done"] is False
        await settle(sb)
        status, obj = await es_status(http, sb, ref)
        assert obj["deliveredToTelco"] is True and obj["deliveredToPhone"] == "confirmed"
        assert obj["done"] is True and obj["successPartCount"] == 1 and obj["successT"]
        assert obj["recipient"] == PH[0] and obj["id"] == ref
        assert (await es_status(http, sb, "SMS20190101T000000-1-1"))[0] == 404

        # old field names
        sb.set_knobs("engagespark", old_field_names=True)
        _, obj = await es_status(http, sb, ref)
        assert obj["deliveredToVendor"] is True and obj["deliveredByVendor"] is True
        assert "deliveredToTelco" not in obj

        # send to contact: by number, then by the contactId it got
        url = cfg["base_url"] + "/v1/sms/contact"
        body = {"orgId": int(cfg["org_id"]), "to": PH[2], "from": "engageSPARK", "message": "hi"}
        status, first, _ = await get_json(http, "POST", url, json=body, headers=auth)
        assert status == 200 and first["contactId"] > 0 and first["messageId"]
        body2 = {"orgId": int(cfg["org_id"]), "contactId": first["contactId"], "message": "hi"}
        status, second, _ = await get_json(http, "POST", url, json=body2, headers=auth)
        assert status == 200 and second["to"] == PH[2]
        status, bad, _ = await get_json(http, "POST", url, json={**body, "to": "abc"},
                                        headers=auth)
        assert status == 400 and bad["error"] == "invalid 'to' number" and bad["messageId"] == ""
        status, dup, _ = await get_json(http, "POST", url, json={**body, "clientDedup": "x1"},
                                        headers=auth)
        status, dup, _ = await get_json(http, "POST", url, json={**body, "clientDedup": "x1"},
                                        headers=auth)
        assert status == 409

        # list: cursor mode, paged mode, limits
        lurl = f"{cfg['base_url']}/v1/organizations/{cfg['org_id']}/messages/"
        status, page1, _ = await get_json(http, "GET", lurl, params={"limit": "2"}, headers=auth)
        assert status == 200 and len(page1["messages"]) == 2 and page1["hasNextPage"]
        assert page1["paged"] is False
        _, page2, _ = await get_json(http, "GET", lurl, headers=auth,
                                     params={"limit": "100", "after": page1["nextPage"]})
        assert len(page2["messages"]) == 3 and page2["hasNextPage"] is False  # 5 messages
        _, paged, _ = await get_json(http, "GET", lurl, headers=auth,
                                     params={"page": "2", "size": "3", "dir": "desc"})
        assert paged["paged"] is True and len(paged["messages"]) == 2
        assert paged["messages"][-1]["id"] == ref and paged["nextPage"] is None  # oldest last
        assert (await get_json(http, "GET", lurl, params={"limit": "101"}, headers=auth))[0] == 400
        assert (await get_json(http, "GET", lurl, params={"size": "1001"}, headers=auth))[0] == 400

        # auth and funds
        status, body, _ = await get_json(http, "GET", lurl, headers={"Authorization": "Token no"})
        assert (status, body) == (401, {"error": "Invalid Token"})
        sb.set_knobs("engagespark", account="no_funds")
        assert (await es_status(http, sb, ref))[0] == 402
        [broke] = await send_many(sb, "engagespark", [PH[0]])
        assert broke.response["errorCode"] == "insufficient_funds"


async def test_engagespark_temporary_failure_and_push(http: aiohttp.ClientSession) -> None:
    # A retried hand-off (NOTES: the vendor "retries failed hand-offs"; `error` is read "when
    # deliveredToTelco is false") is not a receipt: it is polled, never pushed.
    async with Receiver() as rx, sandbox(only("delivered", temp_failure=1.0)) as sb:
        ref = await es_in_state(sb, rx, PH[0], "retrying")
        _, obj = await es_status(http, sb, ref)
        assert (obj["deliveredToTelco"], obj["error"], obj["deliveryError"], obj["done"]) == (
            False, "network error", "", False)
        await settle(sb)
        _, obj = await es_status(http, sb, ref)
        assert obj["done"] is True and obj["deliveredToPhone"] == "confirmed"
        assert obj["deliveryError"] == "" and obj["error"] == ""
        await eventually(lambda: sb.pending_postbacks() == 0)  # every push out and answered
        pushed = rx.bodies("es")
        assert [(p["id"], p["deliveredToPhone"], p["done"]) for p in pushed] == [(ref, "confirmed", True)]


# -- Skycore -------------------------------------------------------------------------------

async def test_skycore_send_and_postbacks_v2_v1(http: aiohttp.ClientSession) -> None:
    async with Receiver() as rx, sandbox(only("delivered")) as sb:
        sb.set_postback_url("skycore", rx.url("sky"))
        [ok, bad] = await send_many(sb, "skycore", ["+10000000001", "123"])
        assert ok.response["status"] == "Success" and ok.response["to"] == "+10000000001"
        tid = ok.response["tracking-id"]
        assert len(tid) == 12 and tid.isalnum()
        assert ok.response["status-details"] == "SMS request accepted and queued for delivery"
        assert bad.response["status"] == "Failure" and bad.response["error-code"]
        await eventually(lambda: len(rx.hits) == 2)
        sent, done = rx.bodies()
        assert (sent["code"], sent["status"], done["code"], done["status"]) == (
            "N201", "Sent", "N202", "Delivered")
        for f in ("origin", "sent-as", "to", "from", "timestamp", "tracking-id", "campaign-ref",
                  "operator-id", "operator-name"):
            assert f in done
        assert done["to"] == "10000000001" and done["tracking-id"] == tid
        cfg = sb.vendor_config("skycore")
        status, body, _ = await get_json(http, "POST", cfg["base_url"], json={
            "action": "sendsms", "to": "1", "from": "1", "message-text": "x"},
            headers={"x-api-key": "nope"})
        assert body["status"] == "Failure" and body["error-code"] == "E103"
        status, body, _ = await get_json(http, "POST", cfg["base_url"] + "/", data=b"{",
                                         headers={"x-api-key": cfg["api_key"]})
        assert body["error-code"] == "E100"

        sb.set_knobs("skycore", **only("expired", postback_format="v1"))
        [v1] = await send_many(sb, "skycore", [PH[0]])
        await eventually(lambda: len(rx.hits) == 4)
        xml = [h[3].decode() for h in rx.hits[2:]]
        assert rx.hits[3][2] == "application/xml"
        assert "<CODE>N201</CODE>" in xml[0] and "<STATUS>Message Sent</STATUS>" in xml[0]
        assert "<CODE>E202</CODE><STATUS>Message Sent/Expired</STATUS>" in xml[1]
        assert f"<TRACKINGID>{v1.response['tracking-id']}</TRACKINGID>" in xml[1]
        assert sb.truth()[("skycore", v1.response["tracking-id"], None)]["final"] == "expired"


async def test_skycore_postback_retry_and_cap() -> None:
    knobs = only("no_receipt", time_scale=0.001)  # retry 300 s -> 0.3 s
    async with Receiver(statuses=[500, 500]) as rx, sandbox(knobs) as sb:
        sb.set_postback_url("skycore", rx.url("sky"))
        [call] = await send_many(sb, "skycore", [PH[0]])
        await eventually(lambda: len(rx.hits) == 3)
        await eventually(lambda: sb.pending_postbacks() == 0)  # none left to send
        assert len(rx.hits) == 3  # 200 on the third: no more
        assert len({h[3] for h in rx.hits}) == 1  # the same postback each time
        gaps = [b[0] - a[0] for a, b in zip(rx.hits, rx.hits[1:])]
        assert all(0.28 <= g < 1.0 for g in gaps), gaps
        assert [p["attempt"] for p in sb.postbacks] == [0, 1, 2]
        assert [p["status"] for p in sb.postbacks] == [500, 500, 200]
    knobs = only("no_receipt", time_scale=0.001, postback_retry_s=50.0)
    async with Receiver(statuses=[503] * 10) as rx, sandbox(knobs) as sb:
        sb.set_postback_url("skycore", rx.url("sky"))
        await send_many(sb, "skycore", [PH[0]])
        await eventually(lambda: len(rx.hits) == 6)
        await eventually(lambda: sb.pending_postbacks() == 0)  # none left to send
        assert len(rx.hits) == 6  # first attempt + 5 retries


async def test_duplicate_out_of_order_and_malformed_postbacks() -> None:
    knobs = only("delivered", duplicate_share=1.0, out_of_order_share=1.0)
    async with Receiver() as rx, sandbox(knobs) as sb:
        sb.set_postback_url("skycore", rx.url("sky"))
        await send_many(sb, "skycore", [PH[0]])
        # the sandbox records a postback once its answer is in: after the receiver counted it
        await eventually(lambda: len(rx.hits) == 4 and len(sb.postbacks) == 4)
        codes = [b["code"] for b in rx.bodies()]
        assert codes == ["N202", "N202", "N201", "N201"]
        assert [p["duplicate"] for p in sb.postbacks] == [False, True, False, True]
    knobs = only("delivered", malformed_share=1.0, time_scale=0.001)
    async with Receiver(statuses=[400, 400]) as rx, sandbox(knobs) as sb:
        sb.set_postback_url("skycore", rx.url("sky"))
        await send_many(sb, "skycore", [PH[0]])
        await eventually(lambda: len(rx.hits) == 4)
        bodies = sorted((h[3] for h in rx.hits), key=len)
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(bodies[0])
        assert {orjson.loads(b)["code"] for b in bodies[2:]} == {"N201", "N202"}


async def test_postback_log_names_the_exact_bytes_sent() -> None:
    """Each attempt's `digest` is the SHA-256 of the body as sent (garbled or not), so that a
    receiver's stored copy can be matched to the attempt it answered."""
    import hashlib

    knobs = only("delivered", malformed_share=1.0, duplicate_share=1.0, time_scale=0.001)
    async with Receiver(statuses=[400, 400]) as rx, sandbox(knobs) as sb:
        sb.set_postback_url("skycore", rx.url("sky"))
        await send_many(sb, "skycore", [PH[0]])
        await eventually(lambda: len(rx.hits) >= 6 and sb.pending_postbacks() == 0)
        body_of = {hashlib.sha256(h[3]).hexdigest(): h[3] for h in rx.hits}
        assert sorted(p["digest"] for p in sb.postbacks) == sorted(
            hashlib.sha256(h[3]).hexdigest() for h in rx.hits)
        garbled = [body_of[p["digest"]] for p in sb.postbacks if p["malformed"]]
        assert len(garbled) == 2  # the two first attempts (duplicates go out whole)
        for body in garbled:
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(body)


# -- Sparrow -------------------------------------------------------------------------------

async def test_sparrow_login_compose_reports_callbacks(http: aiohttp.ClientSession) -> None:
    async with Receiver() as rx, sandbox(only("read", token_ttl_s=30.0)) as sb:
        sb.set_postback_url("sparrow", rx.url("sparrow"))
        cfg = sb.vendor_config("sparrow")
        login = cfg["base_url"] + "/v1/autho/apitoken/login/"
        status, body, _ = await get_json(http, "POST", login, json={
            "api_token": cfg["api_token"], "partner_token": cfg["partner_token"]})
        assert status == 200 and body["result"] == "00" and body["data"]["message"] == "Success"
        assert body["data"]["expires_on"].endswith("+05:45")
        token = body["data"]["token"]
        assert token.count(".") == 2
        status, bad, _ = await get_json(http, "POST", login, json={
            "api_token": "x", "partner_token": cfg["partner_token"]})
        assert status == 401 and bad["data"]["errors"] == "Invalid API Token"
        status, bad, _ = await get_json(http, "POST", login, json={
            "api_token": cfg["api_token"], "partner_token": "x"})
        assert bad["data"]["errors"] == "Invalid Partner Token"

        auth = {"Authorization": f"Bearer {token}"}
        compose = {"data": {"text": "hi", "msg_type": "plain"}, "session": {
            "sender_name": "Co", "tag": ["t"],
            "recipients": ["+977-980-000-0001", "+977 (980) 0000002", "abc", "+977-980-000-0001"]}}
        status, body, _ = await get_json(http, "POST", cfg["base_url"] + "/v1/intlsms/compose/",
                                         json=compose, headers=auth)
        assert status == 200 and (body["result"], body["status"]) == ("00", "OK")
        batch = body["data"]["batch_id"]
        assert body["data"]["valid_recipients"] == 2
        assert body["data"]["invalid_recipients"] == ["abc"]
        report = f"{cfg['base_url']}/v1/intlsms/compose/report/{batch}"
        await eventually(lambda: len(rx.hits) >= 5)  # batch_complete + 2 x (00, 01)
        _, agg, _ = await get_json(http, "GET", report + "/", headers=auth)
        assert (agg["data"]["accepted"], agg["data"]["rejected"], agg["data"]["total"]) == (2, 1, 3)
        assert agg["data"]["status"] == "dispatched"
        await settle(sb)
        wrong, _, _ = await get_json(http, "POST", report + "/delivery/", headers=auth)
        assert wrong == 405  # only the configured report call (GET by default) is served
        _, dlv, _ = await get_json(http, "GET", report + "/delivery/", headers=auth)
        seen = dlv["data"]["records"]["seen"]
        assert sorted(r["to"] for r in seen) == ["9779800000001", "9779800000002"]
        assert len(seen[0]["ts"]) == 19 and dlv["data"]["records"]["delivered"] == []
        _, failed, _ = await get_json(http, "GET", report + "/failed", headers=auth)
        assert failed["data"]["records"]["rejected"][0]["to"] == "abc"
        sb.set_knobs("sparrow", bare_records=True)
        _, dlv, _ = await get_json(http, "GET", report + "/delivery", headers=auth)
        assert sorted(dlv["data"]["records"]["seen"]) == ["9779800000001", "9779800000002"]
        assert (await get_json(http, "GET", report.replace(batch[:8], "00000000") + "/",
                               headers=auth))[0] == 404

        bodies = rx.bodies()
        complete = [b for b in bodies if b["dlr_type"] == "batch_complete"]
        assert complete == [{"dlr_type": "batch_complete", "dlr_data": {
            "uuid": batch, "status": "dispatched", "accepted_count": "2", "rejected_count": "1",
            "rejected_numbers": ["abc"]}}]
        instant = [d for b in bodies if b["dlr_type"] == "instant" for d in b["dlr_data"]]
        assert sorted((d["to"], d["status"]) for d in instant) == [
            ("9779800000001", "00"), ("9779800000001", "01"),
            ("9779800000002", "00"), ("9779800000002", "01")]
        assert {d["id"] for d in instant} == {batch}
        truth = sb.truth()
        assert truth[("sparrow", batch, "9779800000001")]["final"] == "read"
        # "abc" is refused, but without digits it names no message the tracker can have
        # (docs/vendors.md: skipped), so the truth leaves it out
        assert not [k for k in truth if k[2] == "abc"]

        # the token expires (30 s scaled by 0.01 = 0.3 s)
        await asyncio.sleep(0.35)
        status, body, _ = await get_json(http, "GET", report + "/", headers=auth)
        assert status == 401 and body["data"]["errors"] == "Token Expired"


# -- fates converge to the truth ------------------------------------------------------------

SS = {0: "accepted", 4: "accepted", 1: "sent", 2: "delivered", 3: "failed"}


def es_state(o: dict[str, Any]) -> str:
    if not o["deliveredToTelco"]:
        return "accepted"
    if o["deliveredToPhone"] == "confirmed":
        return "delivered"
    if o["deliveredToPhone"] == "failed" and o["done"]:
        err = o["deliveryError"]
        return ("expired" if err == "expired" else "failed" if err in (
            "unreachable", "contact absent - permanent", "contact absent - temporary")
            else "rejected")
    return "sent"


async def test_fates_converge_to_truth(http: aiohttp.ClientSession) -> None:
    knobs = {**FAST, "latency": "uniform", "latency_s": 30.0, "temp_failure": 0.3}
    numbers = [f"6391700{i:05d}" for i in range(40)]
    async with Receiver() as rx, sandbox(knobs, seed=11) as sb:
        sb.set_postback_url("skycore", rx.url("sky"))
        sb.set_postback_url("sparrow", rx.url("sparrow"))
        ss = await send_many(sb, "sparksender", numbers, bulk=True)
        await send_many(sb, "engagespark", numbers, bulk=True)
        sk = await send_many(sb, "skycore", numbers)
        sp = await send_many(sb, "sparrow", numbers, bulk=True)
        await settle(sb)
        truth = sb.truth()
        assert len(truth) == 160
        fates = {v["fate"] for v in truth.values()}
        assert {"delivered", "failed", "no_receipt"} <= fates

        def expect(key: tuple[str, str | None, str | None]) -> str:
            t = truth[key]
            return t["last_real"]

        for s in ss[0].response["success"][0]:
            got = SS[await ss_status(http, sb, s["msgId"])]
            assert got == expect(("sparksender", s["msgId"], None))
        cfg = sb.vendor_config("engagespark")
        lurl = f"{cfg['base_url']}/v1/organizations/{cfg['org_id']}/messages/"
        _, listing, _ = await get_json(http, "GET", lurl, params={"page": "1", "size": "1000"},
                                       headers={"Authorization": f"Token {cfg['api_key']}"})
        assert len(listing["messages"]) == 40
        for o in listing["messages"]:
            assert es_state(o) == expect(("engagespark", o["id"], None))
        refs = {c.response["tracking-id"] for c in sk}
        await eventually(lambda: sb.pending_postbacks("skycore") == 0)
        last: dict[str, str] = {}
        for b in rx.bodies("sky"):
            last[b["tracking-id"]] = {"N201": "sent", "N202": "delivered", "E201": "failed",
                                      "E202": "rejected"}[b["code"]]
        assert set(last) == refs
        for ref, state in last.items():
            assert state == expect(("skycore", ref, None))
        batch = sp[0].response["data"]["batch_id"]
        cfg = sb.vendor_config("sparrow")
        async with http.post(cfg["base_url"] + "/v1/autho/apitoken/login/", json={
                "api_token": cfg["api_token"], "partner_token": cfg["partner_token"]}) as r:
            token = (await r.json())["data"]["token"]
        got: dict[str, str] = {}
        for part, names in (("delivery", {"delivered": "delivered", "seen": "read"}),
                            ("failed", {"rejected": "rejected", "expired": "expired"})):
            _, rep, _ = await get_json(
                http, "GET", f"{cfg['base_url']}/v1/intlsms/compose/report/{batch}/{part}/",
                headers={"Authorization": f"Bearer {token}"})
            for name, state in names.items():
                for rec in rep["data"]["records"][name]:
                    got[rec["to"]] = state
        for n in numbers:
            assert got.get(n, "sent") == expect(("sparrow", batch, n))


async def test_a_twilio_sms_is_never_read(http: aiohttp.ClientSession) -> None:
    # `read` is WhatsApp's and RCS's (docs/vendors.md): an SMS, all the fake sends, ends
    # `delivered` in the Message resource and in the truth, whatever the `read` knob asks for.
    async with sandbox(only("read")) as sb:
        sent = await send_many(sb, "twilio", ["14155550101", "14155550102", "14155550103"])
        await settle(sb)
        assert {(v["fate"], v["final"]) for v in sb.truth().values()} == {("delivered", "delivered")}
        cfg = sb.vendor_config("twilio")
        auth = {"Authorization": aiohttp.encode_basic_auth(cfg["account_sid"], cfg["auth_token"])}
        for call in sent:
            url = f"{cfg['base_url']}/2010-04-01/Accounts/{cfg['account_sid']}/Messages/{call.response['sid']}.json"
            status, resource, _ = await get_json(http, "GET", url, headers=auth)
            assert (status, resource["status"]) == (200, "delivered")


async def test_same_seed_same_fates() -> None:
    async def run() -> list[str]:
        async with sandbox({**FAST, "latency": "lognormal"}, seed=3) as sb:
            await send_many(sb, "sparksender", [f"63917{i:07d}" for i in range(30)], bulk=True)
            return [v["fate"] + v["code"] for v in sb.truth().values()]
    assert await run() == await run()


# -- transport and account knobs -------------------------------------------------------------

async def test_throttle_rate_limit_5xx_slow_malformed(http: aiohttp.ClientSession) -> None:
    async with sandbox({**FAST, "throttle_share": 1.0, "retry_after_s": 7}) as sb:
        url = sb.base_url("engagespark") + "/v1/organizations/1234/messages/"
        status, _, headers = await get_json(http, "GET", url)
        assert status == 429 and headers["Retry-After"] == "7"
        assert sb.requests[-1]["status"] == 429
    async with sandbox({**FAST, "rate_limit_per_s": 5.0}) as sb:
        cfg = sb.vendor_config("engagespark")
        url = f"{cfg['base_url']}/v1/organizations/{cfg['org_id']}/messages/"
        auth = {"Authorization": f"Token {cfg['api_key']}"}
        results = [await get_json(http, "GET", url, headers=auth) for _ in range(12)]
        statuses = [r[0] for r in results]
        assert 5 <= statuses.count(200) <= 8 and statuses.count(429) >= 4
        assert all(int(r[2]["Retry-After"]) >= 1 for r in results if r[0] == 429)
        # other vendors have their own budget
        assert (await get_json(http, "POST", sb.base_url("skycore") + "/"))[0] == 200
    async with sandbox({**FAST, "server_error_share": 1.0}) as sb:
        status, _, _ = await get_json(http, "GET", sb.base_url("sparksender") + "/api/getStatus/")
        assert status in (500, 502, 503)
        with pytest.raises(SendError):
            await send_many(sb, "skycore", [PH[0]], attempts=2)
        assert sb.truth() == {}
    async with sandbox({**FAST, "slow_share": 1.0, "slow_delay_s": 0.5}) as sb:
        timeout = aiohttp.ClientTimeout(total=0.1)
        with pytest.raises(asyncio.TimeoutError):
            await get_json(http, "GET", sb.base_url("sparksender") + "/api/getStatus/",
                           timeout=timeout)
    async with sandbox({**FAST, "answer_delay_s": 0.3}) as sb:
        began = time.monotonic()
        status, _, _ = await get_json(http, "GET", sb.base_url("sparksender") + "/api/getStatus/")
        assert status == 200 and time.monotonic() - began >= 0.3
        # Set back to nothing, a delay longer than the deadline no longer applies (the
        # deadline is for the answer to come, not a measure of speed).
        sb.set_knobs(None, answer_delay_s=60.0)
        sb.set_knobs(None, answer_delay_s=0.0)
        status, _, _ = await asyncio.wait_for(
            get_json(http, "GET", sb.base_url("sparksender") + "/api/getStatus/"), 10)
        assert status == 200
    async with sandbox(only("delivered", malformed_share=1.0)) as sb:
        [call] = await send_many(sb, "sparksender", [PH[0]])  # sends are never garbled
        cfg = sb.vendor_config("sparksender")
        for _ in range(5):
            _, body, _ = await get_json(http, "GET", cfg["base_url"] + "/api/getStatus/", params={
                "user_id": cfg["user_id"], "api_key": cfg["api_key"],
                "msg_id": call.response["msg_id"]})
            assert isinstance(body, bytes)  # not JSON
        polls = [r for r in sb.requests if "/getStatus/" in r["path"]]
        assert len(polls) == 5 and all(r["garbled"] in ("truncated", "html", "empty")
                                       for r in polls)
        assert [r["garbled"] for r in sb.requests if "/getStatus/" not in r["path"]] == [None]


async def test_bad_credentials_everywhere(http: aiohttp.ClientSession) -> None:
    async with sandbox({**FAST, "bad_credentials": True}) as sb:
        [ss] = await send_many(sb, "sparksender", [PH[0]])
        assert ss.response == {"status_code": 202}
        [es] = await send_many(sb, "engagespark", [PH[0]])
        assert es.response == {"error": "Invalid Token"}
        [sk] = await send_many(sb, "skycore", [PH[0]])
        assert sk.response["status"] == "Failure"
        with pytest.raises(SendError, match="login refused"):
            await send_many(sb, "sparrow", [PH[0]])
        assert sb.truth() == {}


# -- truth, logs, admin routes, lifecycle, CLI ------------------------------------------------

async def test_truth_and_logs_over_http(http: aiohttp.ClientSession) -> None:
    async with sandbox(only("delivered")) as sb:
        await send_many(sb, "sparksender", [PH[0], PH[1]], bulk=True)
        await send_many(sb, "sparrow", [PH[0]])
        _, truth, _ = await get_json(http, "GET", sb.url + "/_sandbox/truth")
        rows = truth["truth"]
        assert len(rows) == 3 and {r["vendor"] for r in rows} == {"sparksender", "sparrow"}
        assert {r["final"] for r in rows} == {"delivered"}
        assert [r["recipient"] for r in rows if r["vendor"] == "sparrow"] == [PH[0]]
        _, reqs, _ = await get_json(http, "GET", sb.url + "/_sandbox/requests")
        assert [r["path"] for r in reqs["requests"]] == [
            "/sparksender/api/bulkSMS/", "/sparrow/v1/autho/apitoken/login/",
            "/sparrow/v1/intlsms/compose/"]
        assert len(reqs["requests"][0]["refs"]) == 2 and reqs["requests"][0]["status"] == 200
        _, later, _ = await get_json(http, "GET", sb.url + "/_sandbox/requests?since=2")
        assert [r["seq"] for r in later["requests"]] == [3]
        dumped = orjson.dumps([truth, reqs, list(sb.requests)])
        for creds in sb.credentials.values():
            for key, secret in creds.items():
                if key not in ("user_id", "org_id"):
                    assert secret.encode() not in dumped

        status, knobs, _ = await get_json(http, "POST", sb.url + "/_sandbox/knobs", json={
            "slow_delay_s": 2.0, "vendors": {"skycore": {"postback_format": "v1"}}})
        assert status == 200 and knobs["vendors"]["skycore"]["postback_format"] == "v1"
        assert sb.get_knobs("sparrow").slow_delay_s == 2.0
        assert sb.get_knobs("sparrow").postback_format == "v2"
        status, err, _ = await get_json(http, "POST", sb.url + "/_sandbox/knobs",
                                        json={"no_such_knob": 1})
        assert status == 400 and "no_such_knob" in err["error"]
        status, _, _ = await get_json(http, "POST", sb.url + "/_sandbox/postback_url",
                                      json={"vendor": "skycore", "url": "http://example.com/x"})
        assert status == 400
        with pytest.raises(ValueError):
            sb.set_knobs(time_scale=0)


async def test_logs_over_http_say_retry_after_and_pending_postbacks(
        http: aiohttp.ClientSession) -> None:
    async with Receiver() as rx, sandbox(only("delivered", time_scale=1.0)) as sb:
        sb.set_knobs("sparksender", throttle_share=1.0, retry_after_s=7)
        cfg = sb.vendor_config("sparksender")
        status, _, headers = await get_json(http, "GET", cfg["base_url"] + "/api/getStatus/",
                                            params={"msg_id": "1"})
        assert status == 429 and headers["Retry-After"] == "7"
        _, reqs, _ = await get_json(http, "GET", sb.url + "/_sandbox/requests")
        assert [(r["status"], r["retry_after"]) for r in reqs["requests"]] == [(429, "7")]
        sb.set_knobs("sparksender", throttle_share=0.0)
        await get_json(http, "GET", cfg["base_url"] + "/api/getStatus/", params={"msg_id": "1"})
        assert sb.requests[-1]["status"] == 200 and sb.requests[-1]["retry_after"] is None

        sb.set_postback_url("skycore", rx.url("sky"))  # sent in 2 s, delivered 20 s later
        await send_many(sb, "skycore", [PH[0]])
        _, pbs, _ = await get_json(http, "GET", sb.url + "/_sandbox/postbacks")
        assert (pbs["total"], pbs["pending"], pbs["postbacks"]) == (0, 2, [])


async def test_stop_leaves_no_tasks() -> None:
    before = set(asyncio.all_tasks())
    async with Receiver() as rx:
        sb = Sandbox(knobs=only("delivered", time_scale=1.0, latency_s=3600.0))
        await sb.start()
        sb.set_postback_url("skycore", rx.url("sky"))
        await send_many(sb, "skycore", PH)
        await send_many(sb, "engagespark", [PH[0]], client_push_url=rx.url("es"))
        assert sb.pending_postbacks() > 0
        await sb.stop()
    leftover = {t for t in asyncio.all_tasks() - before if not t.done()}
    leftover.discard(asyncio.current_task())
    assert not [t for t in leftover if "sandbox" in t.get_name()]
    assert sb.pending_postbacks() == 0


def test_knobs_validate() -> None:
    two = Knobs().with_changes({"postback_retries": 2})
    assert two.postback("skycore", "postback_retries") == 2
    assert Knobs().postback("skycore", "postback_retries") == 5
    assert Knobs().with_changes({"malformed_kinds": ["nul"]}).as_dict()["malformed_kinds"] == ["nul"]
    for bad in ({"delivered": -1}, {"latency": "zipf"}, {"account": "broke"},
                {"throttle_share": 2}, {"time_scale": "fast"}, {"malformed_kinds": []},
                {"malformed_kinds": ["gibberish"]}, {"answer_delay_s": -0.1}):
        with pytest.raises(ValueError):
            Knobs().with_changes(bad)
    with pytest.raises(ValueError):
        Sandbox(vendor_knobs={"nosuch": {}})


async def test_cli_prints_urls_and_stops_on_sigterm() -> None:
    root = Path(__file__).resolve().parents[2]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tracker.sandbox", "--port", "0", "--knobs", '{"time_scale": 0.5}',
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(root)})
    try:
        assert proc.stdout is not None
        lines: list[bytes] = []
        for _ in range(200):  # up to the unindented closing brace
            lines.append(await asyncio.wait_for(proc.stdout.readline(), 10))
            if lines[-1].rstrip() == b"}" or not lines[-1]:
                break
        info = orjson.loads(b"".join(lines))
        assert set(info["vendors"]) == set(VENDORS)
        assert info["vendors"]["sparrow"]["base_url"].endswith("/sparrow")
        assert info["vendors"]["engagespark"]["org_id"]
        async with aiohttp.ClientSession() as s:
            async with s.get(info["url"] + "/_sandbox/knobs") as r:
                assert (await r.json())["vendors"]["skycore"]["time_scale"] == 0.5
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
