"""The sandbox's vendors push their postbacks (with duplicates, out of order, garbled first
attempts for Skycore, which retries) to a running tracker over loopback; every message ends in the
state the sandbox's ground truth says, through one clean chain of transitions.

The tracker here has no vendor base_url, so nothing is polled: every state past the send
response comes from a postback."""
from __future__ import annotations

import asyncio
from typing import Callable

import orjson
import pytest

from tests.postbacks_support import config_for, postback_url, running
from tracker import adapters
from tracker.db import reducer
from tracker.sandbox import Sandbox, send_many

FAST = dict(time_scale=0.002, latency_max_s=250.0, duplicate_share=0.3, out_of_order_share=0.3)
PUSHED = {  # vendor -> states its postbacks can tell
    "skycore": {"sent", "delivered", "failed", "rejected", "expired"},
    "engagespark": {"delivered", "failed", "rejected", "expired"},  # receipts only
    "sparrow": {"delivered", "read", "expired"},
}


async def eventually(check: Callable[[], object], timeout: float = 20.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        result = await check()
        if not result or loop.time() > end:
            return result
        await asyncio.sleep(0.1)


async def submit(pool, calls) -> None:
    await pool.executemany(
        "INSERT INTO tracker.submissions (vendor, request, response) VALUES ($1, $2::jsonb, $3::jsonb)",
        [(c.vendor, orjson.dumps(c.request).decode(), orjson.dumps(c.response).decode())
         for c in calls])


def expected_states(sb: Sandbox, vendor: str) -> dict[tuple[str, str], str]:
    """(vendor_ref, recipient key) -> the state the tracker should hold: the vendor's last real
    state where its postbacks can tell it (a carrier without receipts leaves it `sent`)."""
    adapter = adapters.get(vendor)
    out = {}
    for (v, ref, recipient), t in sb.truth().items():
        if v != vendor or ref is None:
            continue
        key = (adapter.normalize_ref(ref), recipient or "")
        if vendor == "engagespark" and t["last_real"] == "sent":  # no receipt: no push (NOTES)
            out[key] = "accepted"  # what its send response said
            continue
        assert t["last_real"] in PUSHED[vendor], t
        out[key] = t["last_real"]
    return out


async def mismatches(pool, sb: Sandbox, vendor: str) -> list:
    async with pool.acquire() as conn:
        await reducer.adopt_orphans(conn)  # what the daemon's orphan sweep does every 10 s
        rows = await conn.fetch("SELECT vendor_ref, recipient_key, state FROM tracker.messages"
                                " WHERE vendor = $1", vendor)
    have = {(r["vendor_ref"], r["recipient_key"]): r["state"] for r in rows}
    want = expected_states(sb, vendor)
    return sorted((k, have.get(k), w) for k, w in want.items() if have.get(k) != w)


async def assert_clean_chains(pool) -> None:
    rows = await pool.fetch(
        "SELECT message_id, array_agg(from_state::text ORDER BY event_id) AS f,"
        " array_agg(to_state::text ORDER BY event_id) AS t FROM tracker.transitions GROUP BY 1")
    for r in rows:
        assert r["f"][0] == "submitted" and r["f"][1:] == r["t"][:-1], r  # unbroken
        assert len(set(r["t"])) == len(r["t"]), r  # no state entered twice


@pytest.mark.parametrize("vendor,knobs", [
    ("skycore", {"postback_format": "v2", "malformed_share": 0.1}),
    ("skycore", {"postback_format": "v1", "malformed_share": 0.1}),
    ("sparrow", {"failed": 0.1, "rejected": 0.0, "no_receipt": 0.0}),
    ("engagespark", {}),
], ids=["skycore-v2-json", "skycore-v1-xml", "sparrow-dlr", "engagespark-push"])
async def test_sandbox_postbacks_end_in_the_true_states(db_dsn, vendor, knobs):
    numbers = [f"1555010{i:04d}" for i in range(60)]
    async with Sandbox({**FAST, **knobs}, seed=11) as sb, \
            running(config_for(db_dsn)) as (tr, base):
        url = postback_url(base, vendor)
        if vendor == "engagespark":  # clientPushURL, given with each send
            calls = await send_many(sb, vendor, numbers, client_push_url=url, concurrency=16)
        else:  # the account-wide URL
            sb.set_postback_url(vendor, url)
            calls = await send_many(sb, vendor, numbers, bulk=vendor == "sparrow", concurrency=16)
        await submit(tr.pool, calls)
        assert await eventually(lambda: mismatches(tr.pool, sb, vendor)) == []
        assert len(expected_states(sb, vendor)) == len(numbers)
        await assert_clean_chains(tr.pool)
        assert any(p["duplicate"] for p in sb.postbacks)
        if "malformed_share" in knobs:  # a garbled attempt was answered 400, and the retry stored
            assert {p["status"] for p in sb.postbacks if p["malformed"]} == {400}
        stored = await tr.pool.fetchval("SELECT count(*) FROM tracker.postbacks")
        assert stored == sum(1 for p in sb.postbacks if p["status"] == 200)
        if vendor == "sparrow":
            kinds = await tr.pool.fetchval(
                "SELECT count(*) FROM tracker.postbacks WHERE body LIKE '%batch_complete%'")
            assert kinds == 1


async def test_postbacks_before_the_submission_then_one_clean_chain(db_dsn):
    """The vendor's postbacks all arrive before the sender inserts its submission rows (by
    vendor_ref and recipient); once intake takes them in, the waiting reports apply."""
    numbers = [f"1555020{i:04d}" for i in range(40)]
    async with Sandbox({**FAST, "no_receipt": 0.0}, seed=5) as sb, \
            running(config_for(db_dsn)) as (tr, base):
        sb.set_postback_url("skycore", postback_url(base, "skycore"))
        calls = await send_many(sb, "skycore", numbers, concurrency=16)

        async def postbacks_pending():
            settled = all(t["settled"] for t in sb.truth().values())
            return not settled or sb.pending_postbacks() > 0 or await tr.pool.fetchval(
                "SELECT count(*) FROM tracker.postbacks WHERE processed_at IS NULL")
        assert not await eventually(postbacks_pending)
        orphans = await tr.pool.fetchval("SELECT count(*) FROM tracker.observations WHERE message_id IS NULL")
        assert orphans >= 2 * len(numbers)  # sent + the outcome, each waiting
        assert await tr.pool.fetchval("SELECT count(*) FROM tracker.messages") == 0

        await tr.pool.executemany(
            "INSERT INTO tracker.submissions (vendor, vendor_ref, recipient) VALUES ('skycore', $1, $2)",
            [(c.response["tracking-id"], c.response["to"]) for c in calls])
        assert await eventually(lambda: mismatches(tr.pool, sb, "skycore")) == []
        assert await tr.pool.fetchval(
            "SELECT count(*) FROM tracker.observations WHERE message_id IS NULL") == 0
        await assert_clean_chains(tr.pool)
        chains = await tr.pool.fetch("SELECT array_agg(to_state::text ORDER BY event_id) AS t"
                                     " FROM tracker.transitions GROUP BY message_id")
        assert len(chains) == len(numbers)
        for c in chains:  # submitted -> sent -> outcome, in rank order within the adopting batch
            assert c["t"][0] == "sent" and len(c["t"]) == 2, c
