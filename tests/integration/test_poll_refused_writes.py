"""A claim's answers that PostgreSQL refuses to store (not an outage: the statement itself) are
written per message, and a message whose answer is still refused is written without its raw
payload (a marker says why), counted; never parked to be retried forever. Real PostgreSQL, the
vendors played by a MockTransport, time by a ManualClock."""
from __future__ import annotations

from urllib.parse import urlsplit

import orjson

from tests.faults_support import refusing
from tests.metrics_support import metric
from tests.integration.test_poller_in_process import answer, config, make_messages, messages
from tests.polling_support import poller_on
from tracker.poller.clock import ManualClock
from tracker.poller.transport import MockTransport

DELIVERED = {"deliveredToTelco": True, "deliveredToPhone": "confirmed", "done": True}


def worker(pool, cfg, handler):
    clock = ManualClock()
    return poller_on(cfg, pool, clock=clock, transport=lambda _: MockTransport(handler)).worker("engagespark")


def ref_of(req) -> str:
    return urlsplit(req.url).path.rstrip("/").rsplit("/", 1)[-1]


async def test_a_claim_past_jsonbs_limit_is_written_per_message_with_its_payloads(pool):
    # 9 answers of 30 MiB: one claim's reports are one jsonb document of 270 MiB, past
    # PostgreSQL's 256 MB (ProgramLimitExceededError); each message alone fits.
    cfg = config(circuit_failures=1000)
    await make_messages(pool, cfg, "engagespark", 9)
    pad = "x" * (30 * 1024 * 1024)
    calls = []

    def handler(req):
        calls.append(req)
        return answer({"id": ref_of(req), **DELIVERED, "message": pad})

    w = worker(pool, cfg, handler)
    try:
        assert await w.tick() == 0.0  # no error: nothing parked as if the database were away
    finally:
        await w.close()
    rows = await messages(pool, "engagespark")
    assert {r["state"] for r in rows} == {"delivered"}
    assert all(r["lease_owner"] is None for r in rows) and w.unwritten == []
    assert len(calls) == 9  # asked once each
    async with pool.acquire() as conn:
        kept = await conn.fetchval("SELECT count(*) FROM tracker.observations WHERE source = 'poll'"
                                   " AND length(raw->>'message') = $1", len(pad))
    assert kept == 9


async def test_an_answer_refused_alone_is_written_without_its_raw_payload_and_counted(pool):
    # What PostgreSQL refuses for one report alone (a payload past its limits) is played by a
    # trigger raising the same error class for a marked payload: real refusals, without a
    # 256 MB body.
    async with pool.acquire() as conn:
        await conn.execute(refusing("observations", "NEW.raw ? 'refuse_me'", "program_limit_exceeded",
                                    "payload too large")[0])
    cfg = config(circuit_failures=1000)
    await make_messages(pool, cfg, "engagespark", 3)
    refused = "1001"

    def handler(req):
        extra = {"refuse_me": True} if ref_of(req) == refused else {}
        return answer({"id": ref_of(req), **DELIVERED, **extra})

    dropped = metric("tracker_poll_answers_dropped_total", vendor="engagespark", dropped="raw payload")
    w = worker(pool, cfg, handler)
    try:
        assert await w.tick() == 0.0
        # Counted where a malformed answer is: a poll error with its reason; and on its own
        assert metric("tracker_poll_answers_dropped_total", vendor="engagespark",
                      dropped="raw payload") == dropped + 1
        assert w.health.stats.failed == 1
        assert "refused by the database" in w.health.stats.last_error
    finally:
        await w.close()
    rows = await messages(pool, "engagespark")
    assert {r["state"] for r in rows} == {"delivered"}  # the reading is kept
    assert all(r["lease_owner"] is None and r["poll_count"] == 1 for r in rows)
    async with pool.acquire() as conn:
        raws = dict(await conn.fetch("SELECT vendor_ref, raw FROM tracker.observations"
                                     " WHERE source = 'poll'"))
    assert orjson.loads(raws[refused]) == {
        "dropped": "refused by the database (ProgramLimitExceededError)"}
    assert all(orjson.loads(raws[ref])["id"] == ref for ref in ("1000", "1002"))
