"""engageSPARK's list pages are read with each claimed message's ref, as its status answers are:
a failure without `done` is final once the deadline stored at intake (else 24 h from
submission) has passed, not left open until the tracking window ends it `unknown`. Real
PostgreSQL, the vendor played by a MockTransport, time by a ManualClock."""
from __future__ import annotations

from tests.integration.test_poller_in_process import answer, config, make_messages, messages
from tests.polling_support import poller_on
from tracker.poller.clock import ManualClock
from tracker.poller.transport import MockTransport


async def test_list_entries_are_final_past_the_stored_deadline_or_a_day_after_submission(pool):
    cfg = config(list_poll_min=3, circuit_failures=1000)
    await make_messages(pool, cfg, "engagespark", 3)
    async with pool.acquire() as conn:  # 1000: deadline passed; 1001: none, sent 30 h ago; 1002: to come
        await conn.execute("""
            UPDATE tracker.messages SET
                vendor_deadline = CASE vendor_ref WHEN '1000' THEN now() - interval '1 minute'
                                                  WHEN '1002' THEN now() + interval '1 hour' END,
                submitted_at = CASE vendor_ref WHEN '1001' THEN now() - interval '30 hours'
                                               ELSE submitted_at END
            WHERE vendor = 'engagespark'""")
    entries = [{"id": ref, "deliveredToTelco": False, "deliveryError": "no route"}
               for ref in ("1000", "1001", "1002")]
    calls = []

    def handler(req):
        calls.append(req.url)
        return answer({"messages": entries, "hasNextPage": False})

    w = poller_on(cfg, pool, clock=ManualClock(),
                  transport=lambda _: MockTransport(handler)).worker("engagespark")
    try:
        await w.tick()
    finally:
        await w.close()
    assert len(calls) == 1 and calls[0].endswith("/messages/")  # one list page, no status call
    states = {r["vendor_ref"]: r["state"] for r in await messages(pool, "engagespark")}
    assert states == {"1000": "rejected", "1001": "rejected", "1002": "accepted"}
