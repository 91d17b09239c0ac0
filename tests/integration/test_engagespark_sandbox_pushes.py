"""The engageSPARK sandbox over loopback, against the vendor's pages (NOTES.md):

- clientPushURL: "whenever we receive a delivery receipt we POST to this URL": one push per
  receipt, none for a message whose carrier never sends one;
- the vendor "retries failed hand-offs" and puts the problem in `error` ("read it when
  deliveredToTelco is false"): a retry is deliveredToTelco false, `error` set, done false, then
  the final outcome; the adapter reads it through its hand-off error path (not an outcome);
- the ground truth stays what the adapter reads in the end."""
from __future__ import annotations

from datetime import datetime, timezone

import aiohttp
import orjson

from tests.integration.test_sandbox import (PH, Receiver, es_in_state, es_status, eventually, http, only,  # noqa: F401
                                            sandbox, settle)
from tracker.adapters import engagespark as es
from tracker.adapters.base import HttpResponse, MessageRef
from tracker.core.states import State
from tracker.sandbox import send_many


def now() -> datetime:
    return datetime.now(timezone.utc)


async def test_no_receipt_means_no_push_and_outcomes_push_once(http: aiohttp.ClientSession) -> None:
    knobs = {**only("no_receipt"), "no_receipt": 0.5, "failed": 0.5}
    async with Receiver() as rx, sandbox(knobs) as sb:
        calls = await send_many(sb, "engagespark", [f"6391712{i:05d}" for i in range(12)],
                                client_push_url=rx.url("es"))
        refs = {c.response["messageId"] for c in calls}
        await settle(sb)
        truth = {k[1]: t for k, t in sb.truth().items() if k[0] == "engagespark"}
        receipts = {r for r in refs if truth[r]["fate"] != "no_receipt"}
        silent = refs - receipts
        assert receipts and silent  # both kinds were drawn
        await eventually(lambda: len(rx.hits) >= len(receipts))
        await eventually(lambda: sb.pending_postbacks() == 0)  # every push out: none is still to come
        pushed = rx.bodies("es")
        assert sorted(p["id"] for p in pushed) == sorted(receipts)  # one each, none for `silent`
        for p in pushed:
            assert (p["deliveredToTelco"], p["deliveredToPhone"], p["done"]) == (True, "failed", True)
            assert p["deliveryError"] == truth[p["id"]]["code"]
            [o] = es.parse_postback("POST", "application/json", {}, orjson.dumps(p), now())
            assert o.state == State[truth[p["id"]]["final"]]
        for ref in silent:  # polled, the message is with the telco and the vendor is done
            _, obj = await es_status(http, sb, ref)
            assert (obj["deliveredToTelco"], obj["deliveredToPhone"], obj["done"]) == (True, "unknown", True)
            assert (truth[ref]["final"], truth[ref]["last_real"]) == ("unknown", "sent")


async def test_a_retried_hand_off_is_an_error_with_the_telco_not_holding_it(http: aiohttp.ClientSession) -> None:
    async with Receiver() as rx, sandbox(only("rejected", temp_failure=1.0)) as sb:
        ref = await es_in_state(sb, rx, PH[1], "retrying")
        status, obj = await es_status(http, sb, ref)
        assert status == 200
        assert (obj["deliveredToTelco"], obj["deliveredToPhone"], obj["error"], obj["deliveryError"],
                obj["done"]) == (False, "unknown", "network error", "", False)
        # the adapter's hand-off error path: code "error", the words kept, no outcome yet, even
        # with the deadline long past (done false: the vendor still retries)
        body = orjson.dumps(obj)
        ref_row = MessageRef(ref, PH[1], deadline=datetime(2000, 1, 1, tzinfo=timezone.utc))
        [o] = es.parse_status([HttpResponse(200, {}, body)], [ref_row], now()).observations
        assert (o.state, o.code, o.text, o.failure) == (State.accepted, "error", "network error", None)
        assert sb.truth()[("engagespark", ref, None)]["current"] == "sent"  # the truth: not an outcome
        await settle(sb)
        _, obj = await es_status(http, sb, ref)
        assert (obj["deliveredToTelco"], obj["error"], obj["done"]) == (True, "", True)
        await eventually(lambda: len(rx.hits) >= 1 and sb.pending_postbacks() == 0)
        [pushed] = rx.bodies("es")  # only the receipt; the retry was not pushed
        [o] = es.parse_postback("POST", "application/json", {}, orjson.dumps(pushed), now())
        t = sb.truth()[("engagespark", ref, None)]
        assert (o.state, o.code) == (State.rejected, t["code"]) and t["final"] == "rejected"


async def test_a_telcos_temporary_failure_is_a_receipt_pushed_and_no_outcome_while_the_vendor_retries(
        http: aiohttp.ClientSession) -> None:
    """NOTES: "a failure before that deadline is not final", and `done` "not true means the vendor
    is still retrying": a telco's receipt of a temporary failure (deliveredToPhone failed,
    deliveryError set, done false) is pushed, as every receipt, and read as `sent` with the
    telco's words; the outcome that follows is the message's."""
    async with Receiver() as rx, sandbox(only("delivered", telco_retry=1.0)) as sb:
        ref = await es_in_state(sb, rx, PH[2], "telco_retrying")
        _, obj = await es_status(http, sb, ref)
        assert (obj["deliveredToTelco"], obj["deliveredToPhone"], obj["deliveryError"], obj["error"],
                obj["done"]) == (True, "failed", "contact absent - temporary", "", False)
        assert sb.truth()[("engagespark", ref, None)]["current"] == "sent"
        # not an outcome even with the deadline long past: done false says the vendor retries
        ref_row = MessageRef(ref, PH[2], deadline=datetime(2000, 1, 1, tzinfo=timezone.utc))
        [o] = es.parse_status([HttpResponse(200, {}, orjson.dumps(obj))], [ref_row], now()).observations
        assert (o.state, o.code, o.failure) == (State.sent, "contact absent - temporary", None)
        await settle(sb)
        await eventually(lambda: len(rx.hits) >= 2)
        first, last = rx.bodies("es")  # both receipts, in order
        [a] = es.parse_postback("POST", "application/json", {}, orjson.dumps(first), now())
        [b] = es.parse_postback("POST", "application/json", {}, orjson.dumps(last), now())
        assert (a.state, a.code, first["done"]) == (State.sent, "contact absent - temporary", False)
        assert (b.state, last["done"], last["deliveryError"]) == (State.delivered, True, "")
        assert sb.truth()[("engagespark", ref, None)]["final"] == "delivered"
