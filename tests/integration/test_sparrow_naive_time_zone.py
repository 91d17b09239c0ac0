"""Sparrow's naive times over loopback: a sandbox that writes its `ts` in UTC, read by a tracker
whose `vendors.sparrow.naive_time_zone` is "+00:00", gives the true event times, through the
adapter (adapters.for_config), the real poller and the postback route; left at the default
(+05:45) the same answers read 5 h 45 min early. A replay reads with the configuration given."""
from __future__ import annotations

import asyncio
import io
from datetime import datetime, timedelta, timezone

import aiohttp
import pytest

from tests.integration.test_sparrow_report_variant import KNOBS, fetch, one_batch, wait_delivered
from tests.polling_support import make_config, numbers, send, start_poller, wait_until
from tests.postbacks_support import config_for, postback_url, running
from tracker import adapters, replay
from tracker.adapters.base import MessageRef
from tracker.config_types import VendorConfig
from tracker.core.states import State
from tracker.sandbox import Sandbox

OFF = timedelta(hours=5, minutes=45)
UTC = {"sparrow": {"naive_time_zone": "+00:00"}}  # the sandbox's setting, and the tracker's


@pytest.fixture
async def sandbox():
    sb = Sandbox(knobs=KNOBS, seed=7, credentials=UTC)
    await sb.start()
    yield sb
    await sb.stop()


def delivered_at(sb: Sandbox, ref: str, recipient: str) -> datetime:
    """When the sandbox delivered it (its ground truth)."""
    return datetime.fromisoformat(sb.truth()[("sparrow", ref, recipient)]["settles_at"])


def true_time(event_at: datetime, truth: datetime) -> bool:
    """`event_at` is the delivery's time as Sparrow writes it (to the second)."""
    return timedelta(0) <= truth - event_at < timedelta(seconds=1)


async def poll(http: aiohttp.ClientSession, cfg: VendorConfig, refs: list[MessageRef]):
    adapter = adapters.for_config("sparrow", cfg)
    now = datetime.now(timezone.utc)
    login = adapter.parse_login(await fetch(http, adapter.login_request(cfg)), now)
    reqs = adapter.status_requests(cfg, refs, login.token)
    return adapter.parse_status([await fetch(http, r) for r in reqs], refs, now)


async def test_a_poll_reads_the_sandboxs_utc_times_in_the_configured_zone(sandbox):
    sb = sandbox
    assert sb.vendor_config("sparrow")["naive_time_zone"] == "+00:00"  # handed on with the rest
    async with aiohttp.ClientSession() as http:
        refs = await one_batch(sb, http)
        await wait_delivered(sb, refs)
        configured = VendorConfig.from_keys("sparrow", **sb.vendor_config("sparrow"))
        result = await poll(http, configured, refs)
        assert [o.state for o in result.observations] == [State.delivered] * 2
        for o in result.observations:
            assert true_time(o.event_at, delivered_at(sb, o.vendor_ref, o.recipient)), o.event_at

        default = {k: v for k, v in sb.vendor_config("sparrow").items() if k != "naive_time_zone"}
        result = await poll(http, VendorConfig.from_keys("sparrow", **default), refs)
        for o in result.observations:  # read as Nepal time: 5 h 45 min early
            assert true_time(o.event_at + OFF, delivered_at(sb, o.vendor_ref, o.recipient)), o.event_at


async def test_the_poller_writes_the_true_event_times(sandbox, pool, db_dsn):
    config = make_config(sandbox, db_dsn)  # the sandbox's settings: naive_time_zone "+00:00"
    assert config.vendors["sparrow"].settings["naive_time_zone"] == "+00:00"
    await send(sandbox, pool, config, "sparrow", numbers(3, "97798"))
    p = await start_poller(config, pool)
    try:
        async def delivered() -> bool:
            return await pool.fetchval("SELECT count(*) FROM tracker.observations WHERE vendor = 'sparrow'"
                                       " AND source = 'poll' AND state = 'delivered'") == 3
        await wait_until(delivered, 15.0)
    finally:
        await p.stop()
    rows = await pool.fetch("SELECT vendor_ref, recipient_key, event_at FROM tracker.observations"
                            " WHERE vendor = 'sparrow' AND source = 'poll' AND state = 'delivered'")
    for r in rows:
        assert true_time(r["event_at"], delivered_at(sandbox, r["vendor_ref"], r["recipient_key"])), r


async def test_a_postback_and_its_replay_read_the_configured_zone(db_dsn):
    # No base_url: nothing is polled, every report is a DLR callback.
    config = config_for(db_dsn, **UTC)
    async with Sandbox({**KNOBS, "postback_retries": 0}, seed=3, credentials=UTC) as sb, \
            running(config) as (tr, base):
        sb.set_postback_url("sparrow", postback_url(base, "sparrow"))
        async with aiohttp.ClientSession() as http:
            refs = await one_batch(sb, http)

        async def found() -> list:
            rows = await tr.pool.fetch(
                "SELECT vendor_ref, recipient_key, event_at, postback_id FROM tracker.observations"
                " WHERE vendor = 'sparrow' AND source = 'postback' AND state = 'delivered' ORDER BY id")
            return rows if len(rows) >= len(refs) else []

        for _ in range(300):
            if rows := await found():
                break
            await asyncio.sleep(0.05)
        assert len(rows) == len(refs)
        for r in rows:
            assert true_time(r["event_at"], delivered_at(sb, r["vendor_ref"], r["recipient_key"])), r

        # A replay parses the stored rows with the configuration it is given: at +01:00 they
        # now say other times (appended beside the first, as any new reading is).
        other = config_for(db_dsn, sparrow={"naive_time_zone": "+01:00"})
        async with tr.pool.acquire() as conn:
            out = await replay.replay(conn, other, "sparrow", None, replay.Progress(0, io.StringIO()))
        assert out.observations == len(refs)
        late = (await found())[len(rows):]
        assert len(late) == len(refs) and [r["postback_id"] for r in late] == [r["postback_id"] for r in rows]
        for r in late:
            assert true_time(r["event_at"] + timedelta(hours=1), delivered_at(sb, r["vendor_ref"], r["recipient_key"])), r
