"""GET /status for vendors disabled while messages are still in flight: nothing polls those
messages any more, so they go stuck; their card shows them, marked disabled, and agrees with
tracker.stuck_messages (the page had counted only enabled vendors: 0 in flight, 0 stuck, or no
card at all without figures for the last day)."""
from __future__ import annotations

import dataclasses
from datetime import timedelta

from tests.integration.test_status_page import serving, shown
from tests.status_support import add_messages, seed
from tracker.config_types import Config


def card(page: str, vendor: str) -> str:
    at = page.index(f'id="vendor-{vendor}"')
    return page[at:page.index("</section>", at)]


async def test_a_disabled_vendors_messages_in_flight_and_stuck_are_shown(pool):
    async with pool.acquire() as conn:
        await seed(conn)  # Skycore: 5 accepted 3 h ago, silent since (its day's figures exist)
        # Sparrow: 2 sent 30 h ago and silent: no figures for the last day, only messages in flight
        await add_messages(conn, "sparrow", 2, timedelta(hours=30), "sent", None, tag="old")
        truth = {r["vendor"]: r["n"] for r in await conn.fetch(
            "SELECT vendor, count(*) AS n FROM tracker.stuck_messages GROUP BY vendor")}
    assert truth == {"skycore": 5, "sparrow": 2}
    off = {"skycore", "sparrow", "twilio"}  # Twilio: disabled, nothing of it at all
    config = Config()
    config = dataclasses.replace(config, vendors={
        name: dataclasses.replace(v, enabled=name not in off) for name, v in config.vendors.items()})
    async with serving(pool, config) as (session, url):
        async with session.get(url) as r:
            page = await r.text()
    for vendor in ("skycore", "sparrow"):
        figures = shown(page, vendor)
        assert (figures["in_flight"], figures["stuck"]) == (str(truth[vendor]),) * 2, vendor
        assert 'class="b mute">disabled</span>' in card(page, vendor)
    assert 'id="vendor-twilio"' not in page
    assert "disabled</span>" not in card(page, "sparksender")
    assert shown(page, "sparksender")["in_flight"] == "1"
