"""engageSPARK's list endpoint failing (not an account error): the messages the pages did not
show are asked for one by one, and list mode rests for `circuit_reset_s`. Real PostgreSQL, the
vendor played by a MockTransport, time by a ManualClock."""
from __future__ import annotations

from urllib.parse import urlsplit

from tests.integration.test_poller_in_process import (Vendors, answer, config, make_due, make_messages,
                                                      messages)
from tests.polling_support import poller_on
from tracker.poller.clock import ManualClock
from tracker.poller.transport import MockTransport


def is_list(req) -> bool:
    return urlsplit(req.url).path.endswith("/messages/")


async def test_a_failing_list_endpoint_falls_back_to_per_message_polls_for_a_while(pool):
    clock = ManualClock()
    vendors = Vendors(clock)
    vendors.engagespark_body = {"deliveredToTelco": True}  # sent, not final: polled again
    cfg = config(list_poll_min=3, circuit_failures=1000, circuit_reset_s=30.0)
    await make_messages(pool, cfg, "engagespark", 6)

    def handler(req):
        if is_list(req):
            vendors.log.append((clock.monotonic(), req))
            return answer({"error": "bad request"}, 400)
        return vendors(req)

    w = poller_on(cfg, pool, clock=clock, transport=lambda _: MockTransport(handler)).worker("engagespark")
    try:
        def calls():
            lists = sum(is_list(r) for _, r in vendors.log)
            return lists, len(vendors.log) - lists

        await w.tick()
        assert calls() == (1, 6)  # the list failed: each message asked on its own
        assert {r["state"] for r in await messages(pool, "engagespark")} == {"sent"}
        await make_due(pool)
        await w.tick()
        assert calls() == (1, 12)  # list mode rests: no second list call yet
        clock.advance(30.0)
        await make_due(pool)
        await w.tick()
        assert calls() == (2, 18)  # tried again after the rest, and fell back again
    finally:
        await w.close()
    assert all(r["poll_count"] == 3 and r["lease_owner"] is None
               for r in await messages(pool, "engagespark"))
