"""Helpers for the polling tests: a tracker configuration pointing at a running sandbox, sends
through the sandbox's client taken in by the real intake, and waiting on the database."""
from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable

import orjson

from tests.sinks_support import toml_value
from tracker import intake
from tracker.app import Tracker
from tracker.config_types import VENDORS, Config, DatabaseConfig, HttpConfig, VendorConfig
from tracker.poller.engine import Poller
from tracker.sandbox import Sandbox, send_many

# Poll schedule for tests: seconds, not minutes.
FAST_POLLS = dict(first_poll_s=0.3, max_poll_interval_s=1.0, tracking_window_s=4.0,
                  deadline_margin_s=1.0, rate_limit_per_s=500.0, concurrency=8,
                  request_timeout_s=2.0, batch_size=50, circuit_failures=5, circuit_reset_s=1.0)


def vendor_config(sandbox: Sandbox, vendor: str, **overrides: Any) -> VendorConfig:
    values = {**FAST_POLLS, **sandbox.vendor_config(vendor), **overrides}
    return VendorConfig.from_keys(vendor, **values)


def make_config(sandbox: Sandbox, dsn: str | None = None, **overrides: Any) -> Config:
    """`overrides`: poll settings for every vendor, or `<vendor>={...}` for one."""
    common = {k: v for k, v in overrides.items() if k not in VENDORS}
    return Config(
        database=DatabaseConfig(dsn=dsn),
        http=HttpConfig(listen="127.0.0.1:0"),
        vendors={v: vendor_config(sandbox, v, **{**common, **overrides.get(v, {})})
                 for v in VENDORS},
    )


def with_vendor(config: Config, vendor: str, **changes: Any) -> Config:
    vendors = dict(config.vendors)
    vendors[vendor] = dataclasses.replace(vendors[vendor], **changes)
    return dataclasses.replace(config, vendors=vendors)


def tracker_on(config: Config, pool) -> Tracker:
    """A Tracker object on an existing pool, not started: what a Poller needs of it."""
    t = Tracker(config)
    t.pool = pool
    return t


def poller_on(config: Config, pool, **given: Any) -> Poller:
    """A Poller wired as the daemon wires it (its supervisor, sweeps and lock helper), on an
    existing pool; `given`: clock, transport."""
    t = tracker_on(config, pool)
    return Poller(config, lambda: pool, t.supervisor, every=t.every, exclusive=t.exclusive, **given)


async def start_poller(config: Config, pool, **given: Any) -> Poller:
    p = poller_on(config, pool, **given)
    await p.start()
    return p


async def send(sandbox: Sandbox, pool, config: Config, vendor: str, numbers: list[str],
               *, bulk: bool = True, chunk: int = 500) -> int:
    """Send through the sandbox and take the calls in through the real intake."""
    calls = []
    for i in range(0, len(numbers), chunk if bulk else len(numbers) or 1):
        calls += await send_many(sandbox, vendor, numbers[i:i + chunk], bulk=bulk, concurrency=16)
    async with pool.acquire() as conn:
        await conn.executemany(
            "INSERT INTO tracker.submissions (vendor, request, response) VALUES ($1, $2::jsonb, $3::jsonb)",
            [(c.vendor, orjson.dumps(c.request).decode(), orjson.dumps(c.response).decode())
             for c in calls])
        made = 0
        while True:
            r = await intake.take_in(conn, config, 50)
            made += r.messages
            assert r.refused == 0, "intake refused a sandbox send"
            if r.rows == 0:
                return made


def write_daemon_config(path: Path, dsn: str, sandbox: Sandbox, polls: dict[str, Any],
                        vendors: Iterable[str], **per_vendor: Any) -> None:
    """A `tracker run` configuration file: the sandbox's `vendors`, each with `polls` and
    `per_vendor` settings, its log in JSON (the tests read its lines)."""
    lines = ["[database]", f"dsn = {toml_value(dsn)}", "pool_min = 1", "pool_max = 6",
             "[http]", 'listen = "127.0.0.1:0"', "[intake]", "sweep_interval_s = 0.5",
             "[log]", 'level = "info"', 'format = "json"']
    for vendor in vendors:
        lines.append(f"[vendors.{vendor}]")
        for k, v in {**sandbox.vendor_config(vendor), **polls, **per_vendor}.items():
            lines.append(f"{k} = {toml_value(v)}")
    path.write_text("\n".join(lines) + "\n")


def numbers(n: int, prefix: str = "63917", start: int = 0) -> list[str]:
    return [f"{prefix}{i:07d}" for i in range(start, start + n)]


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float, step: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(step)


async def all_final(pool, vendor: str | None = None) -> bool:
    async with pool.acquire() as conn:
        left = await conn.fetchval(
            "SELECT count(*) FROM tracker.messages WHERE state < 'unknown'"
            " AND ($1::text IS NULL OR vendor = $1)", vendor)
    return left == 0


async def db_states(pool) -> dict[tuple[str, str, str | None], str]:
    """(vendor, vendor_ref, recipient for Sparrow else None) -> state, like Sandbox.truth()."""
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT vendor, vendor_ref, recipient_key, state FROM tracker.messages")
    return {(r["vendor"], r["vendor_ref"], r["recipient_key"] or None): r["state"] for r in rows}


def status_requests(sandbox: Sandbox, vendor: str) -> list[dict]:
    """The sandbox's log of status calls (not sends, logins or lists) of one vendor."""
    marks = {"sparksender": "/getStatus/", "engagespark": "/messages/",
             "sparrow": "/compose/report/"}
    out = []
    for r in sandbox.requests:
        if r["vendor"] != vendor or marks[vendor] not in r["path"]:
            continue
        if vendor == "engagespark" and r["path"].rstrip("/").endswith("/messages"):
            continue  # the list endpoint
        out.append(r)
    return out
