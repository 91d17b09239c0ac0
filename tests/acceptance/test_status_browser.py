"""/status as a person sees it: the running daemon serves it on its operations listener, Debian's
chromium renders it headless (no script runs: the page has none), and the rendered DOM shows each
vendor's figures from a known data set. The screenshot is kept under the test's output
(TRACKER_STATUS_SCREENSHOT=path also copies it there, e.g. docs/status-page.png). Where the
layout itself is the question (does a long error fit a phone's card?), the test asks the
rendered page through chromium's DevTools protocol, the page still running no script of its own."""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import struct
import tempfile
from pathlib import Path

import aiohttp
import pytest

from tests.integration.test_status_page import serving, shows
from tests.postbacks_support import config_for, replace_http, running
from tests.status_support import HOSTILE_CODE, expected_cards, seed

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]
# Skipped on a developer's machine without chromium; never under CI (CI set, as .ci/run sets
# it): there the test runs and fails if the browser is missing.
pytestmark = pytest.mark.skipif(BROWSER is None and not os.environ.get("CI"),
                                reason="chromium is not installed (.ci/run installs it)")


async def browse(url: str, *args: str, timeout: float = 90.0) -> bytes:
    """Run chromium once with a profile of its own; its stdout."""
    profile = tempfile.mkdtemp(prefix="tracker-chromium-")
    try:
        proc = await asyncio.create_subprocess_exec(
            BROWSER, *FLAGS, f"--user-data-dir={profile}", *args, url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError(f"chromium did not finish within {timeout} s") from None
        assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
        return out
    finally:
        shutil.rmtree(profile, ignore_errors=True)


async def measure(url: str, expression: str, width: int, height: int, timeout: float = 60.0):
    """The value of a JavaScript expression in the page as chromium lays it out in a window of
    that size (DevTools Runtime.evaluate: the page's own CSP allows no script, and needs none)."""
    profile = tempfile.mkdtemp(prefix="tracker-chromium-")
    proc = await asyncio.create_subprocess_exec(
        BROWSER, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
        f"--window-size={width},{height}", url,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(timeout):
            while b"DevTools listening on ws://" not in (line := await proc.stderr.readline()):
                assert line, "chromium ended without its DevTools address"
            port = int(line.split(b"ws://", 1)[1].split(b"/", 1)[0].rsplit(b":", 1)[1])
            asyncio.ensure_future(proc.stderr.read())  # drained, so that chromium never blocks
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/json/list") as r:
                    target = next(t for t in await r.json() if t["type"] == "page")
                async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                    calls = iter(range(1, 1_000_000))

                    async def call(method: str, **params):
                        n = next(calls)
                        await ws.send_str(json.dumps({"id": n, "method": method, "params": params}))
                        async for msg in ws:
                            answer = json.loads(msg.data)
                            if answer.get("id") == n:
                                return answer["result"]

                    async def evaluate(expr: str):
                        return (await call("Runtime.evaluate", expression=expr, returnByValue=True))["result"]["value"]

                    # a phone's width (a headless window is never narrower than 500 px)
                    await call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                               deviceScaleFactor=1, mobile=True)
                    while await evaluate("document.readyState + ' ' + location.href") != f"complete {url}":
                        await asyncio.sleep(0.1)
                    return await evaluate(expression)
    finally:
        proc.kill()
        await proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", head[16:24])


async def test_status_page_in_a_headless_browser(db_dsn, tmp_path):
    config = replace_http(config_for(db_dsn), ops_listen="127.0.0.1:0")
    async with running(config) as (tracker, _):
        async with tracker.pool.acquire() as conn:
            await seed(conn, backlog=False)  # the daemon's intake would take a waiting row in
        host, port = tracker.listen_addresses["ops_listen"]
        url = f"http://{host}:{port}/status"
        dom = (await browse(url, "--dump-dom")).decode()
        png = tmp_path / "status-page.png"
        await browse(url, f"--screenshot={png}", "--window-size=1280,2000")
        phone = tmp_path / "status-page-phone.png"
        await browse(url, f"--screenshot={phone}", "--window-size=390,2400")
    for vendor, figures in expected_cards().items():
        assert shows(dom, vendor, figures), vendor
    assert "circuit open" in dom and "5 stuck" in dom
    assert HOSTILE_CODE not in dom and "&lt;script&gt;" in dom
    assert len(re.findall(r"<svg", dom)) == len(expected_cards())
    assert png_size(png) == (1280, 2000) and png.stat().st_size > 20_000
    assert png_size(phone)[0] == 390
    keep = os.environ.get("TRACKER_STATUS_SCREENSHOT")
    if keep:
        shutil.copyfile(png, keep)
        if os.environ.get("TRACKER_STATUS_SCREENSHOT_PHONE"):
            shutil.copyfile(phone, os.environ["TRACKER_STATUS_SCREENSHOT_PHONE"])


# How far the pipeline card scrolls sideways, and where the sink's last error ends beside it.
SINK_ERROR_FITS = """(() => {
    const card = document.getElementById('pipeline');
    const error = card.querySelector('table.sinks tr.detail .wrap');
    return {scrolls: card.scrollWidth - card.clientWidth,
            error_right: error.getBoundingClientRect().right, card_right: card.getBoundingClientRect().right};
})()"""


async def test_a_sinks_long_error_is_read_on_a_phone_without_scrolling(pool):
    long_error = "webhook failed: https://billing.example.com/" + "very-long-path-segment/" * 12 + " 500"
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO tracker.sinks (name, kind, consumer, last_success_at, last_error, last_error_at)"
            " VALUES ('billing', 'webhook', 'sink:billing', now(), $1, now())", long_error)
        await conn.execute(
            "INSERT INTO tracker.sink_deliveries (sink, event_id, pos, message_id, recorded_at, body, status)"
            " SELECT 'billing', g, g, g, now(), '\\x7b7d', 'dead' FROM generate_series(1, 1200) g")
    async with serving(pool) as (_session, url):
        got = await measure(url, SINK_ERROR_FITS, 390, 2400)
    assert got["scrolls"] <= 0, got
    assert got["error_right"] <= got["card_right"], got
