"""Helpers for the sink tests: a real webhook receiver that checks every delivery with the
`standardwebhooks` package (as a receiver would), configurations, and events made through the
real reducer. A nats-server of our own, and what its stream holds: tests.nats_support."""
from __future__ import annotations

import asyncio
import base64
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import orjson
from aiohttp import web
from standardwebhooks import Webhook

from tracker.adapters.base import Observation
from tracker.config_types import (VENDORS, Config, DatabaseConfig, HttpConfig, NatsSinkConfig,
                                  SinksConfig, VendorConfig, WebhookSinkConfig)
from tracker.core.states import State
from tracker.db import reducer


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass
class Delivery:
    id: str
    body: bytes
    data: dict
    headers: dict
    at: float  # time.monotonic() when it arrived
    verified: bool
    status: int = 0


Answer = Callable[[Delivery], "int | tuple[int, dict]"]


@dataclass
class Receiver:
    """POST / on 127.0.0.1:0. `answer` decides each status (default 200). Every request is kept,
    with whether each of `secrets` verified it (all must)."""

    secrets: list[str]
    answer: Answer = field(default=lambda d: 200)
    requests: list[Delivery] = field(default_factory=list)
    delay_s: float = 0.0  # a slow receiver: wait this long before answering
    answer_body: bytes = b""  # the body of every answer

    async def start(self) -> "Receiver":
        app = web.Application()
        app.router.add_post("/hooks/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/hooks/sms?token=receiver-token-123"
        return self

    async def stop(self) -> None:
        await self.runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        verified = True
        for s in self.secrets:
            try:
                Webhook(s).verify(body, headers, json_parse=False)
            except Exception:  # noqa: BLE001 - any failure to verify counts
                verified = False
        d = Delivery(headers.get("webhook-id", ""), body, orjson.loads(body) if body else {}, headers,
                     time.monotonic(), verified)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        answer = self.answer(d)
        status, extra = answer if isinstance(answer, tuple) else (answer, {})
        d.status = status
        self.requests.append(d)
        return web.Response(status=status, headers=extra, body=self.answer_body)

    def delivered(self) -> list[Delivery]:
        return [d for d in self.requests if 200 <= d.status < 300]

    def delivered_ids(self) -> set[int]:
        return {int(d.id) for d in self.delivered()}


def config(dsn: str, *, webhooks: dict[str, dict] | None = None, nats: dict[str, dict] | None = None,
           poll_interval_s: float = 0.5, vendors: tuple[str, ...] = ()) -> Config:
    """Vendors off but `vendors` (without a base_url: nothing polled), sinks as given."""
    return Config(
        database=DatabaseConfig(dsn=dsn, pool_min=1, pool_max=10),
        http=HttpConfig(listen="127.0.0.1:0"),
        vendors={v: VendorConfig(name=v, enabled=v in vendors) for v in VENDORS},
        sinks=SinksConfig(
            webhooks={n: WebhookSinkConfig(name=n, **w) for n, w in (webhooks or {}).items()},
            nats={n: NatsSinkConfig(name=n, **c) for n, c in (nats or {}).items()},
            poll_interval_s=poll_interval_s))


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(path: Path, dsn: str, *, webhooks: dict[str, dict] | None = None,
                 nats: dict[str, dict] | None = None, poll_interval_s: float = 0.5) -> Path:
    """The same as `config`, as a file for `tracker run` and `tracker sinks`."""
    lines = ["[database]", f"dsn = {toml_value(dsn)}", "pool_min = 1", "pool_max = 8",
             "[http]", 'listen = "127.0.0.1:0"', "[log]", 'level = "info"', 'format = "json"',
             "[sinks]", f"poll_interval_s = {poll_interval_s}"]
    for v in VENDORS:
        lines += [f"[vendors.{v}]", "enabled = false"]
    for kind, sinks in (("webhooks", webhooks or {}), ("nats", nats or {})):
        for name, values in sinks.items():
            lines.append(f"[sinks.{kind}.{name}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


async def make_messages(pool, refs: list[str], vendor: str = "sparksender") -> None:
    await pool.execute("INSERT INTO tracker.messages (vendor, vendor_ref, recipient)"
                       " SELECT $1, r, '1555' || r FROM unnest($2::text[]) r", vendor, refs)


async def report(pool, refs: list[str], state: State, vendor: str = "sparksender") -> None:
    """One report per message through the real reducer: a transition each, if it is news."""
    obs = [Observation(vendor=vendor, vendor_ref=r, recipient=None, state=state, code=state.name)
           for r in refs]
    async with pool.acquire() as conn, conn.transaction():
        await reducer.apply(conn, "poll", obs)


async def all_published(pool) -> bool:
    """Every transition has its delivery position (the publisher has caught up)."""
    return not await pool.fetchval("SELECT count(*) FROM tracker.transitions WHERE pos IS NULL")


async def events(pool) -> list[dict]:
    """Every transition, in delivery-position order where published, else event id."""
    rows = await pool.fetch("SELECT t.event_id, t.message_id, t.pos, t.to_state::text, m.vendor_ref"
                            " FROM tracker.transitions t JOIN tracker.messages m ON m.id = t.message_id"
                            " ORDER BY t.pos NULLS LAST, t.event_id")
    return [dict(r) for r in rows]


async def wait_until(check: Callable[[], Awaitable[bool] | bool], timeout: float, what: str,
                     step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ok = check()
        if asyncio.iscoroutine(ok):
            ok = await ok
        if ok:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(step)


async def behind(pool, n: int, sink: str = "bus") -> bool:
    return await pool.fetchval("SELECT events_behind FROM tracker.sink_status WHERE sink = $1", sink) == n


async def error_mentions(pool, text: str, sink: str = "bus") -> bool:
    error = await pool.fetchval("SELECT last_error FROM tracker.sinks WHERE name = $1", sink)
    return error is not None and text in error


def in_order_per_message(deliveries: list[Delivery], pos_of: dict[int, int]) -> bool:
    """Per message, what arrived (duplicates included) never goes back in delivery position."""
    last: dict[int, int] = {}
    for d in deliveries:
        mid, pos = d.data["data"]["message_id"], pos_of[int(d.id)]
        if pos < last.get(mid, 0):
            return False
        last[mid] = pos
    return True
