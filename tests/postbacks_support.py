"""Helpers for the postback tests: a configuration with tokens, a running Tracker, a client."""
from __future__ import annotations

import contextlib
import dataclasses

import aiohttp

from tracker.app import Tracker
from tracker.config_types import VENDORS, Config, DatabaseConfig, HttpConfig, VendorConfig

TOKENS = {v: f"tok-{v}-5f3a9c1e7b" for v in VENDORS}


def config_for(dsn: str, sandbox=None, http: dict | None = None, **vendor_changes) -> Config:
    """Every vendor with a postback token; the sandbox's URLs and credentials when given."""
    vendors = {}
    for v in VENDORS:
        extra = dict(sandbox.vendor_config(v)) if sandbox is not None else {}
        extra.update(vendor_changes.get(v, {}))
        vendors[v] = VendorConfig.from_keys(v, postback_token=TOKENS[v], **extra)
    return Config(database=DatabaseConfig(dsn=dsn, pool_min=1, pool_max=10),
                  http=HttpConfig(listen="127.0.0.1:0", **(http or {})), vendors=vendors)


@contextlib.asynccontextmanager
async def running(config: Config):
    """A started Tracker; yields (tracker, base URL of its postback listener)."""
    tracker = Tracker(config)
    await tracker.start()
    try:
        host, port = tracker.listen_addresses["listen"]
        yield tracker, f"http://{host}:{port}"
    finally:
        await tracker.stop()


def postback_url(base: str, vendor: str, token: str | None = None) -> str:
    return f"{base}/postbacks/{vendor}/{TOKENS.get(vendor, 'x') if token is None else token}"


async def settle(pool, timeout: float = 10.0) -> None:
    """Wait until the worker has applied every stored postback."""
    import asyncio

    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if not await pool.fetchval("SELECT count(*) FROM tracker.postbacks WHERE processed_at IS NULL"):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("postbacks left unprocessed")


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))


def replace_http(config: Config, **changes) -> Config:
    return dataclasses.replace(config, http=dataclasses.replace(config.http, **changes))


async def readyz(s: aiohttp.ClientSession, base: str) -> tuple[int, dict]:
    """A running tracker's /readyz: (status, body)."""
    async with s.get(base + "/readyz") as r:
        return r.status, await r.json()


def named(body: dict, component: str) -> list[str]:
    """The reasons /readyz gives for `component`."""
    return [p["reason"] for p in body.get("problems", []) if p["component"] == component]


async def metric_value(base: str, series: str) -> float:
    """One series' value from GET /metrics (``name{label="..."}`` as the text exposition writes
    it; 0 when it is not there yet), as an operator's scraper reads it."""
    async with aiohttp.ClientSession() as s, s.get(f"{base}/metrics") as r:
        text = await r.text()
    return next((float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                 if line.startswith(series + " ")), 0.0)
