"""Twilio's 30002 (the account suspended while the message was queued) polled: the circuit
opens and the account alert's counter moves, the claim's other messages are handed back
unchanged, and the failed message, final, is not asked again: once the account is back, a probe
closes the circuit for good. Real PostgreSQL; Twilio played at the transport seam
(MockTransport) on a ManualClock."""
from __future__ import annotations

from urllib.parse import urlsplit

import orjson

from tests.integration.test_poller_in_process import config, make_due, make_messages, messages
from tests.polling_support import poller_on
from tracker import metrics
from tracker.adapters.base import HttpResponse
from tracker.poller.clock import ManualClock
from tracker.poller.transport import MockTransport


def account_polls() -> float:
    return metrics.REGISTRY.get_sample_value(
        "tracker_polls_total", {"vendor": "twilio", "outcome": "account"}) or 0.0


async def test_a_message_failed_for_a_suspended_account_opens_the_circuit(pool):
    clock = ManualClock()
    cfg = config(concurrency=1, circuit_failures=1000)
    await make_messages(pool, cfg, "twilio", 3)
    suspended = {"1000"}  # its SID: failed with 30002; the others delivered
    asked: list[str] = []

    def twilio(req):
        sid = urlsplit(req.url).path.rsplit("/", 1)[-1].removesuffix(".json")
        asked.append(sid)
        body = ({"sid": sid, "status": "failed", "error_code": 30002,
                 "error_message": "Account suspended"} if sid in suspended
                else {"sid": sid, "status": "delivered"})
        return HttpResponse(200, {}, orjson.dumps(body))

    w = poller_on(cfg, pool, clock=clock, transport=lambda _: MockTransport(twilio)).worker("twilio")
    before = account_polls()
    try:
        await w.tick()
        assert asked == ["1000"] and w.health.is_open  # the first answer opened the circuit
        assert account_polls() == before + 1  # what the account alert reads
        by_ref = {r["vendor_ref"]: r for r in await messages(pool, "twilio")}
        assert (by_ref["1000"]["state"], by_ref["1000"]["failure_code"]) == ("failed", "30002")
        assert {by_ref[k]["state"] for k in ("1001", "1002")} == {"submitted"}  # handed back

        clock.advance(cfg.vendors["twilio"].circuit_reset_s)  # the probe, then the rest
        for _ in range(3):
            await make_due(pool)
            await w.tick()
        assert not w.health.is_open and sorted(asked) == ["1000", "1001", "1002"]  # not asked again
        assert {r["state"] for r in await messages(pool, "twilio")} == {"failed", "delivered"}
    finally:
        await w.close()
