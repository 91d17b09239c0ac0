"""The chaos suite counts every well-formed postback attempt a receiver did not answer 200
(bench/_chaos/checks.py: refused_postbacks): a tracker answering 503 or 400 to everything once
scored "lost 0". Attempts overlapping a deliberate outage of their receiver (its port, or every
receiver for a database outage) are counted apart. Judged here on the sandbox's real postback
log: Skycore pushing over loopback HTTP to a receiver that refuses everything."""
from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import AsyncIterator

import pytest
from aiohttp import web

from tracker.sandbox import Sandbox, send_many

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from _chaos.checks import Outage, refused_postbacks  # noqa: E402

KNOBS = {"time_scale": 0.001, "delivered": 1.0, "read": 0, "failed": 0, "expired": 0,
         "rejected": 0, "no_receipt": 0, "postback_retries": 2, "postback_retry_s": 10.0,
         "postback_interval_s": 0.0, "malformed_share": 0.5}


@pytest.fixture
async def refuser() -> AsyncIterator[int]:
    """A receiver that answers every postback 503 (a tracker whose database is down); its port."""
    async def down(_: web.Request) -> web.Response:
        return web.json_response({"error": "database unavailable"}, status=503)

    app = web.Application()
    app.router.add_post("/pb", down)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def test_attempts_not_answered_200_are_refused_unless_inside_an_outage(refuser) -> None:
    async with Sandbox(knobs=KNOBS, seed=4) as sb:
        sb.set_postback_url("skycore", f"http://127.0.0.1:{refuser}/pb")
        await send_many(sb, "skycore", [f"1415555{i:04d}" for i in range(4)])
        deadline = time.monotonic() + 10
        while sb.pending_postbacks() or not all(t["settled"] for t in sb.truth().values()):
            assert time.monotonic() < deadline, "the postbacks never all went out"
            await asyncio.sleep(0.02)
        log = list(sb.postbacks)
        garbled = sum(1 for e in log if e["malformed"])
        whole = len(log) - garbled
        assert garbled and whole and all(e["status"] == 503 for e in log)
        assert {e["to"] for e in log} == {f"127.0.0.1:{refuser}"}

        got = refused_postbacks(log, [])
        assert (got.refused, dict(got.by_answer), got.in_outage) == (whole, {"503": whole}, 0)
        first, last = min(e["t"] for e in log), max(e["t_end"] for e in log)
        # the receiver's own outage, or the database's (every receiver), covering every attempt
        for o in (Outage(first, last, port=refuser), Outage(first, None)):
            got = refused_postbacks(log, [o])
            assert (got.refused, got.in_outage) == (0, whole)
        # another receiver's outage, or one that ended before the first answer
        for o in (Outage(first, None, port=refuser + 1), Outage(first - 9, first - 1)):
            assert refused_postbacks(log, [o]).refused == whole
        # an outage over part of the run excuses exactly the attempts it overlaps
        mid = sorted(e["t"] for e in log)[len(log) // 2]
        inside = sum(1 for e in log if not e["malformed"] and e["t"] <= mid)
        assert refused_postbacks(log, [Outage(0.0, mid)]).in_outage == inside


async def test_attempts_with_no_url_are_not_the_receivers_refusals() -> None:
    async with Sandbox(knobs=KNOBS, seed=5) as sb:
        await send_many(sb, "skycore", ["14155550001"])  # no postback URL set
        deadline = time.monotonic() + 10
        while sb.pending_postbacks() or not sb.postbacks:
            assert time.monotonic() < deadline, "no postback attempt was logged"
            await asyncio.sleep(0.02)
        assert {e["error"] for e in sb.postbacks} == {"no postback url"}
        assert refused_postbacks(sb.postbacks, []).refused == 0


def test_inside_an_outage_only_a_503_or_no_answer_is_allowed() -> None:
    # A 4xx while the database is down tells the vendor never to retry: the postback is lost
    # (a read-only database once answered 400 "refuses to store"); it fails the scenario.
    def attempt(status: int | None) -> dict:
        return {"digest": "d", "malformed": False, "status": status, "error": None if status else "ClientOSError",
                "t": 10.0, "t_end": 10.1, "to": "127.0.0.1:8080"}

    log = [attempt(s) for s in (503, None, 400, 500, 404)]
    got = refused_postbacks(log, [Outage(9.0, 11.0)])
    assert (got.in_outage, dict(got.by_answer)) == (2, {"400": 1, "500": 1, "404": 1})
