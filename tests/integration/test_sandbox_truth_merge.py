"""One Sparrow compose may name a number twice under the same digits: once valid, once mistyped
("+9779800000001" and "9779800000001/"). The vendor accepts the first and refuses the second,
both under (batch, 9779800000001), and reports both. The truth must be the highest state either
reports (it was the refusal, recorded last), and the adapter must keep both reports."""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone

import aiohttp

from tests.integration.test_adapters_vs_sandbox import fetch
from tracker import adapters
from tracker.adapters.base import MessageRef
from tracker.config_types import VendorConfig
from tracker.core.states import State
from tracker.sandbox import Sandbox, send_many

KNOBS = {"time_scale": 0.001, "delivered": 1.0, "read": 0, "failed": 0, "expired": 0,
         "rejected": 0, "no_receipt": 0, "token_ttl_s": 1e7}
NUMBER = "9779800000001"


async def compose(sb: Sandbox, http: aiohttp.ClientSession, recipients: list[str]):
    [call] = await send_many(sb, "sparrow", recipients, bulk=True, session=http)
    assert call.response["result"] == "00", call.response
    return call


async def settled(sb: Sandbox, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(t["settled"] for t in sb.truth().values()):
        assert time.monotonic() < deadline, "the vendor side never settled"
        await asyncio.sleep(0.02)


async def test_truth_keeps_the_highest_state_of_a_key_accepted_and_refused() -> None:
    async with Sandbox(knobs=KNOBS, seed=1) as sb, aiohttp.ClientSession() as http:
        call = await compose(sb, http, ["+" + NUMBER, NUMBER + "/"])
        batch = call.response["data"]["batch_id"]
        assert call.response["data"]["invalid_recipients"] == [NUMBER + "/"]
        await settled(sb)
        key = ("sparrow", batch, NUMBER)
        truth = sb.truth()[key]
        # what the vendor says about the key: its report calls, read by the adapter
        a, t = adapters.get("sparrow"), datetime.now(timezone.utc)
        vc = VendorConfig.from_keys("sparrow", **sb.vendor_config("sparrow"))
        token = a.parse_login(await fetch(http, a.login_request(vc)), t).token
        ref = MessageRef(batch, NUMBER)
        answers = [await fetch(http, r) for r in a.status_requests(vc, [ref], token)]
        received = [o.state for o in a.parse_status(answers, [ref], t).observations
                    if o.recipient == NUMBER and o.state is not None]
        assert set(received) == {State.delivered, State.rejected}
        assert truth["final"] == max(received).name == "delivered"
        assert (truth["fate"], truth["timelines"], truth["settled"]) == ("delivered", 2, True)
        assert sb.message("sparrow", batch, NUMBER).fate == "delivered"  # the accepted one


async def test_parse_send_keeps_both_reports_of_a_key() -> None:
    async with Sandbox(knobs=KNOBS, seed=2) as sb, aiohttp.ClientSession() as http:
        both = await compose(sb, http, ["+" + NUMBER, NUMBER + "/", "+9779800000002"])
        only_bad = await compose(sb, http, ["+9779800000003", "9779800000004/"])
        parse = adapters.get("sparrow").parse_send
        t = datetime.now(timezone.utc)
        reports = sorted((o.recipient, o.state.name)
                         for o in parse(both.response, both.request, t).observations)
        assert reports == [(NUMBER, "accepted"), (NUMBER, "rejected"),
                           ("9779800000002", "accepted")]
        # a number named only in its refused form makes no accepted report
        reports = sorted((o.recipient, o.state.name)
                         for o in parse(only_bad.response, only_bad.request, t).observations)
        assert reports == [("9779800000003", "accepted"), ("9779800000004", "rejected")]
