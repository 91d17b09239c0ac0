"""The truth's `final` is the vendor's last word, whenever it comes. A tracker following the
contract cannot hear a poll-only vendor's receipt that comes after its tracking window closed
(the window ends in `unknown`, a final state, and polling stops): Sandbox.expected(window_s,
pushes) is what such a tracker ends with. Judged against the real poller and intake."""
from __future__ import annotations

from tests.polling_support import (all_final, db_states, make_config, numbers, send,
                                   start_poller, wait_until)
from tracker.sandbox import Sandbox, send_many

WINDOW_S = 2.5
# Vendor time at 0.01: sent after 0.01-0.03 s, the receipt 0.3 s (early) or 5 s (late) after.
KNOBS = {"time_scale": 0.01, "latency": "fixed", "latency_s": 30.0, "delivered": 1.0,
         "read": 0.0, "failed": 0.0, "expired": 0.0, "rejected": 0.0, "no_receipt": 0.0}


async def test_a_receipt_after_the_window_is_expected_unknown_unless_pushed(pool, db_dsn) -> None:
    async with Sandbox(knobs=KNOBS, seed=3) as sb:
        config = make_config(sb, db_dsn, tracking_window_s=WINDOW_S)
        await send(sb, pool, config, "sparksender", numbers(4))
        early = set(sb.truth())
        sb.set_knobs("sparksender", latency_s=500.0)
        await send(sb, pool, config, "sparksender", numbers(4, start=4))
        late = set(sb.truth()) - early
        assert len(late) == 4
        p = await start_poller(config, pool)
        try:
            async def done() -> bool:  # the tracker final everywhere, the vendor side too
                await p.sweep_windows()
                return await all_final(pool) and all(t["settled"] for t in sb.truth().values())

            await wait_until(done, 20.0)
        finally:
            await p.stop()
        states = await db_states(pool)
        truth = sb.truth()
        assert {truth[k]["final"] for k in truth} == {"delivered"}
        expected = sb.expected(WINDOW_S, pushes=False)
        assert expected == {k: "unknown" if k in late else "delivered" for k in truth}
        assert states == expected
        assert sb.expected(WINDOW_S) == expected  # Spark Sender has no postbacks to push


async def test_expected_reads_each_message_s_own_pushes() -> None:
    """Sparrow pushes delivered, seen and expired, never a carrier's rejection: a rejection
    after the window is unknown, a late delivery is heard; a refusal at send is rejected."""
    knobs = {**KNOBS, "latency_s": 500.0, "delivered": 0.0, "rejected": 1.0, "token_ttl_s": 1e6}
    async with Sandbox(knobs=knobs, seed=4) as sb:
        await send_many(sb, "sparrow", ["9779800000001", "9779800000002/"], bulk=True)
        sb.set_knobs("sparrow", rejected=0.0, delivered=1.0)
        await send_many(sb, "sparrow", ["9779800000003"], bulk=True)
        got = {k[2]: v for k, v in sb.expected(WINDOW_S).items()}
        assert got == {"9779800000001": "unknown", "9779800000002": "rejected",
                       "9779800000003": "delivered"}
        assert {k[2]: v for k, v in sb.expected(WINDOW_S, pushes=False).items()} == {
            "9779800000001": "unknown", "9779800000002": "rejected", "9779800000003": "unknown"}
