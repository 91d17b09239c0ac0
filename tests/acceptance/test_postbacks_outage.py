"""The database stops in the middle of a stream of postbacks: while it is down they are answered
503 (the vendor retries); once it is back, every postback that was answered 200 is stored and
applied. The test runs its own embedded cluster so that it can stop and start it."""
from __future__ import annotations

import asyncio
import collections
import os
import shutil
import tempfile
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.metrics_support import failures
from tests.postbacks_support import config_for, postback_url, running, session, settle
from tests.sinks_support import all_published, wait_until
from tracker.db.embedded import EmbeddedPostgres


@pytest.fixture
async def cluster():
    tmp = tempfile.mkdtemp(prefix="tracker-outage-")
    os.chmod(tmp, 0o755)  # the cluster may run as the postgres user
    pg = EmbeddedPostgres(Path(tmp) / "pg", fast=True)
    await asyncio.to_thread(pg.start)
    try:
        yield pg
    finally:
        await asyncio.to_thread(pg.stop)
        shutil.rmtree(tmp, ignore_errors=True)


def body(ref: str) -> bytes:
    return orjson.dumps({"origin": "SMS_MT", "code": "N202", "status": "Delivered",
                         "to": "15550100000", "tracking-id": ref,
                         "timestamp": "2024-05-01T12:00:00+00:00"})


async def test_database_stopped_mid_stream(cluster):
    publisher_failures = failures("publisher")
    answers: dict[str, int | str] = {}
    phase = {"now": "before"}
    by_phase: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    done = asyncio.Event()

    async with running(config_for(cluster.dsn)) as (tr, base), session() as s:
        url = postback_url(base, "skycore")
        await tr.pool.execute(  # the messages the postbacks report on: each makes a transition
            "INSERT INTO tracker.messages (vendor, vendor_ref, recipient, state)"
            " SELECT 'skycore', 'o' || i || '-' || n, '15550100000', 'sent'"
            " FROM generate_series(0, 7) i, generate_series(0, 4999) n")

        async def vendor(i: int) -> None:
            n = 0
            while not done.is_set():
                ref, n = f"o{i}-{n}", n + 1
                try:
                    async with s.post(url, data=body(ref), headers={"Content-Type": "application/json"},
                                      timeout=aiohttp.ClientTimeout(total=15)) as r:
                        answers[ref] = r.status
                except Exception as e:  # noqa: BLE001 - a vendor sees no answer: it retries
                    answers[ref] = type(e).__name__
                by_phase[phase["now"]][answers[ref]] += 1
                await asyncio.sleep(0.005)

        vendors = [asyncio.create_task(vendor(i)) for i in range(8)]
        # Each phase ends on what it is there to show, within a deadline.
        await wait_until(lambda: by_phase["before"][200] > 20, 15, "postbacks answered 200 before the outage")
        phase["now"] = "down"
        await asyncio.to_thread(cluster.stop)
        await wait_until(lambda: by_phase["down"][503] > 0, 15, "a postback answered 503 while the database is down")
        await asyncio.to_thread(cluster.start)  # same data directory, same port
        phase["now"] = "after"
        await wait_until(lambda: by_phase["after"][200] > 20, 30, "postbacks answered 200 after the restart")
        done.set()
        await asyncio.gather(*vendors)

        await settle(tr.pool, timeout=30)
        # The publisher's connection (kept between publications) died with the database: it
        # takes another and publishes what was applied, without a notification to wake it.
        await wait_until(lambda: all_published(tr.pool), 10, "every transition published after the outage")
        assert failures("publisher") == publisher_failures  # an outage handled, not a crash
        rows = await tr.pool.fetch("SELECT body, processed_at, error FROM tracker.postbacks")
        stored = collections.Counter(orjson.loads(bytes(r["body"]))["tracking-id"] for r in rows)
        applied = {r["vendor_ref"] for r in await tr.pool.fetch(
            "SELECT vendor_ref FROM tracker.observations WHERE source = 'postback'")}
        transitions = await tr.pool.fetchval("SELECT count(*) FROM tracker.transitions")

    ok = {ref for ref, status in answers.items() if status == 200}
    print({p: dict(c) for p, c in by_phase.items()}, "stored", len(stored))
    assert by_phase["before"][200] > 20 and by_phase["after"][200] > 20
    assert by_phase["down"][503] > 0
    assert set(by_phase["down"]) <= {200, 503}  # nothing else, and never a 5xx but 503
    assert ok <= set(stored)  # every 200 was stored ...
    assert ok <= applied  # ... and applied (and published: all_published above)
    assert transitions > 0
    assert all(r["processed_at"] is not None and r["error"] is None for r in rows)
    # a 503 may still have been stored (committed as the connection died): a duplicate if the
    # vendor retries, which the reducer absorbs
    assert set(stored) - ok <= {ref for ref, st in answers.items() if st != 200}
