"""A slow but healthy vendor: a claim whose requests, made one after another as its share of the
concurrency allows, would take longer than its lease. Past the lease the vendor's other loop (or
another replica) takes the messages over and the claim's answers are thrown away; once, every
claim of a vendor answering in 6 s (within its 10 s timeout) did so, and no answer was ever
written. A claim now sends nothing it could not have answered and written within its lease: the
rest is handed back, due at once, and what was answered is written.

Real PostgreSQL; the vendor's slowness is played at the transport seam (MockTransport) on a
ManualClock, so nothing waits; the database's lease runs out when the clock says it would."""
from __future__ import annotations

from tests.integration.test_poller_in_process import (Vendors, answers_lost, config, make_due,
                                                      make_messages, messages)
from tests.polling_support import poller_on
from tracker.poller import schedule
from tracker.poller.clock import ManualClock
from tracker.poller.transport import MockTransport

LATENCY_S = 0.9  # every status call answers this late: within its 1 s timeout, a healthy vendor


async def test_a_slow_vendor_s_answers_are_written_and_the_rest_handed_back(pool):
    clock = ManualClock()
    vendors = Vendors(clock)  # every message delivered
    # Concurrency 1: 20 calls of 0.9 s take 18 s, and the lease is 10 s.
    cfg = config(request_timeout_s=1.0, concurrency=1, circuit_failures=1000)
    await make_messages(pool, cfg, "sparksender", 20)
    taken_over = []
    ends = {}  # a lease (its lease_until) -> the clock's time it ends at

    async def answer(req):
        sent_at = clock.monotonic()
        async with pool.acquire() as conn:
            lease = await conn.fetchrow(
                "SELECT max(lease_until) AS until, extract(epoch FROM max(lease_until) - now()) AS left"
                " FROM tracker.messages WHERE lease_owner = $1", w.owner)
            if lease["until"] is not None:  # (None: taken over already)
                ends.setdefault(lease["until"], sent_at + float(lease["left"]))
            await clock.sleep(LATENCY_S)  # the vendor thinks (the clock moves, nothing waits)
            if clock.monotonic() >= ends.get(lease["until"], float("inf")):
                # The lease is over: the vendor's other loop claims the messages, as it would.
                taken_over.append(await conn.execute(
                    "UPDATE tracker.messages SET lease_owner = 'other-loop',"
                    " lease_until = now() + interval '1 minute' WHERE lease_owner = $1", w.owner))
        return vendors(req)

    w = poller_on(cfg, pool, clock=clock, transport=lambda _: MockTransport(answer)).worker("sparksender")
    lost_before = answers_lost("sparksender")
    try:
        await w.tick()
        rows = await messages(pool, "sparksender")
        answered = [r for r in rows if r["state"] == "delivered"]
        # What was asked was answered within the lease and written; nothing was taken over.
        assert taken_over == [] and answers_lost("sparksender") == lost_before
        assert len(answered) == len(vendors.log) and all(r["poll_count"] == 1 for r in answered)
        # None was asked whose answer could have come after the lease (less the write's time).
        lease = schedule.lease_s(cfg.vendors["sparksender"], cfg.vendors["sparksender"].batch_size)
        assert max(t for t, _ in vendors.log) <= lease - schedule.WRITE_MARGIN_S
        # The rest: handed back unpolled, free and due at once.
        rest = [r for r in rows if r["state"] != "delivered"]
        assert rest and all(r["poll_count"] == 0 and r["lease_owner"] is None for r in rest)
        assert all(r["next_poll_at"] <= clock.now() for r in rest)

        for _ in range(5):  # the next claims take the rest
            if all(r["state"] == "delivered" for r in await messages(pool, "sparksender")):
                break
            await make_due(pool)  # (the clock ran ahead of the database's)
            await w.tick()
        rows = await messages(pool, "sparksender")
        assert {r["state"] for r in rows} == {"delivered"} and {r["poll_count"] for r in rows} == {1}
        assert len(vendors.log) == 20  # each message asked once: no answer thrown away
    finally:
        await w.close()
