"""A vendor that refuses every postback (it changed its payload; a content type it never sent)
writes a warning per vendor and reason a minute, not one per request: at a million postbacks a
day that was a quarter of a gigabyte of log. The next line says how many were left out; the
metric counts every one."""
from __future__ import annotations

import structlog

from tests.postbacks_support import config_for, metric_value, postback_url, running, session
from tests.unit.test_throttle import Clock
from tracker import postbacks
from tracker.throttle import Throttle


async def post(s, url: str, body: bytes, ctype: str = "application/json") -> int:
    async with s.post(url, data=body, headers={"Content-Type": ctype}) as r:
        return r.status


async def test_refused_postbacks_are_logged_once_a_minute_per_vendor_and_reason(db_dsn, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(postbacks, "_refusals", Throttle(60.0, clock))
    series = 'tracker_postbacks_total{status="400",vendor="skycore"}'
    async with running(config_for(db_dsn)) as (tr, base), session() as s:
        url = postback_url(base, "skycore")
        before = await metric_value(base, series)
        with structlog.testing.capture_logs() as logs:
            assert [await post(s, url, b"{broken") for _ in range(5)] == [400] * 5
            assert [await post(s, url, b"{}", "text/html") for _ in range(3)] == [400] * 3
            clock.now += 60.0
            assert await post(s, url, b"{broken") == 400
        assert await metric_value(base, series) - before == 9  # every one counted
    lines = [(e["event"], e.get("left_out")) for e in logs if e["event"].startswith("postback ")]
    assert lines == [("postback unreadable", 0), ("postback refused", 0),
                     ("postback unreadable", 4)], lines
