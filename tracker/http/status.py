"""GET /status on the operations listener (DESIGN §4): a human status page (tracker.http.status_page
renders it). Every figure behind it is a bounded lookup: the rollups of sql/009 (a few rows per
vendor and hour or route and day), partial indexes for what is in flight and stuck, refused at
intake and unmapped (counted up to a cap), the small poller and consumer tables; in one
read-only transaction without JIT. The tracker's own readiness is /readyz's (ops.readiness),
with what the supervisor knows of its components. What was gathered is reused for CACHE_S
seconds, and requests arriving while it is gathered wait for that one gathering.

With `http.status_token` set the page asks for it (`?token=` or `Authorization: Bearer`),
compared in constant time; without it the page is open to whoever reaches the ops listener.
"""
from __future__ import annotations

import asyncio
import hmac
import time
from datetime import datetime, timedelta
from urllib.parse import quote

import asyncpg
from aiohttp import web

from tracker.config_types import VendorConfig
from tracker.db import DB_ERRORS
from tracker.db import clock as db_clock
from tracker.db import queries as q
from tracker.http import ops  # readiness (ops imports this module too: used at call time)
from tracker.http.status_data import ComponentStatus, StatusData, TrackerStatus, UnmappedCode, VendorStatus
from tracker.http.status_format import esc
from tracker.http.status_page import render
from tracker.logging import get_logger, scrub
from tracker import metrics
from tracker.metrics import REGISTRY
from tracker.postbacks.core import networks, request_client
from tracker.throttle import Throttle
from tracker.retention import SWEPT

_refusals = Throttle()
log = get_logger("tracker.status")

CACHE_S = 5.0
COUNT_CAP = 100_000  # in flight and waiting rows are counted up to this many (index-only)
STUCK_CAP = 10_000  # stuck ones up to this many (each is read: 10,000 is plenty to page someone)
TOP_ROUTES = 12
REFUSED_CAP = 10_000  # refused rows walked back through their index, one probe each
UNMAPPED_CODES_SHOWN = 200
UNMAPPED_CODES_COUNTED = 20  # per vendor: the codes its card lists, each with its reports ...
UNMAPPED_COUNT_CAP = 100  # ... counted up to this many (each is read, for when it came: a cold
# cache reads each from disk, and 5 vendors x 20 codes x 1,000 could pass the 3 s statement_timeout)
HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the token may be in the URL
    # No script, no fetch, no frame: styles inline, charts inline SVG; and never shown inside
    # another site's frame (default-src does not cover that)
    "Content-Security-Policy": ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                                "frame-ancestors 'none'"),
}


def authorized(request: web.Request, token: str | None) -> bool:
    if not token:
        return True
    given = request.query.get("token")
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        given = auth[7:].strip()
    # headers and query arrive decoded with surrogateescape: bytes that are not UTF-8 compare
    # as the bytes they were (a plain encode() raised, and the page answered 500)
    return given is not None and hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                                                     token.encode())


class StatusPage:
    def __init__(self, tracker) -> None:
        self.tracker = tracker
        self.trusted_proxies = networks(tracker.config.http.trusted_proxies)
        self.cached: tuple[float, StatusData] | None = None
        self.gathering: asyncio.Task | None = None

    async def handle(self, request: web.Request) -> web.Response:
        token = self.tracker.config.http.status_token
        if not authorized(request, token):
            # anyone who reaches the listener can send these: counted, a line a minute
            metrics.status_refused.inc()
            if (left_out := _refusals.allow("status")) is not None:
                log.info("status page refused: missing or wrong token", left_out=left_out,
                         peer=request_client(request.remote, request.headers, self.trusted_proxies))
            return web.Response(status=401, text="401: the status page needs its token (?token=...)\n",
                                headers={"WWW-Authenticate": 'Bearer realm="tracker status"', **HEADERS})
        try:
            data = await self.data()
        except DB_ERRORS as e:
            reason = scrub(f"{type(e).__name__}: {e}")[:300]
            log.warning("status page: database unavailable", error=reason)
            return web.Response(status=503, content_type="text/html", headers=HEADERS,
                                text=f"<!doctype html><title>status: unavailable</title><h1>Database "
                                     f"unavailable</h1><p>{esc(reason)}</p>")
        url = "/status" + (f"?token={quote(request.query['token'], safe='')}" if "token" in request.query else "")
        return web.Response(text=render(data, url), content_type="text/html", headers=HEADERS)

    async def data(self) -> StatusData:
        if self.cached and time.monotonic() - self.cached[0] < CACHE_S:
            return self.cached[1]
        if self.gathering is None or self.gathering.done():
            self.gathering = asyncio.create_task(self._gather_and_keep())
        return await asyncio.shield(self.gathering)  # one request leaving does not cancel it

    async def _gather_and_keep(self) -> StatusData:
        data = await gather(self.tracker)
        self.cached = (time.monotonic(), data)
        return data


async def gather(tracker) -> StatusData:
    cfg = tracker.config
    now = db_clock.now()
    # the rollup's windows start at a clock hour (vendor_figures_since truncates): say which
    hour_from = (now - timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    day_from = (now - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    configured = list(cfg.vendors.values())
    enabled = [v.name for v in configured if v.enabled]
    problems = await ops.readiness(tracker)  # what /readyz says, on a connection of its own
    async with tracker.pool.acquire() as conn, conn.transaction(readonly=True):
        await conn.execute(q.STATUS_LIMITS)
        looks = await conn.fetch(q.STATUS_IN_FLIGHT, COUNT_CAP, [v.name for v in configured],
                                 [v.expected_final_s for v in configured], STUCK_CAP,
                                 [v.enabled for v in configured])
        hour = {r["vendor"]: r for r in await conn.fetch(q.STATUS_VENDOR_FIGURES, hour_from)}
        day = {r["vendor"]: r for r in await conn.fetch(q.STATUS_VENDOR_FIGURES, day_from)}
        refused = {r["vendor"]: r for r in await conn.fetch(q.STATUS_REFUSED, hour_from, REFUSED_CAP)}
        health = {r["vendor"]: r for r in await conn.fetch(q.STATUS_POLL_HEALTH)}
        unmapped: dict[str, list[UnmappedCode]] = {}
        for r in await conn.fetch(q.STATUS_UNMAPPED_CODES, UNMAPPED_CODES_SHOWN, UNMAPPED_COUNT_CAP,
                                  UNMAPPED_CODES_COUNTED):
            unmapped.setdefault(r["vendor"], []).append(UnmappedCode(r["code"], r["reports"], r["last_seen_at"]))
        hourly = await conn.fetch(q.STATUS_HOURLY, now - timedelta(hours=23))
        waiting = await conn.fetchrow(q.COUNT_WAITING, COUNT_CAP)
        ages = await conn.fetchrow(q.OLDEST_WAITING)
        consumers = await conn.fetch(q.STATUS_CONSUMERS)
        replicas = await conn.fetch(q.STATUS_POLLING_REPLICAS)
        routes = await conn.fetch(q.STATUS_TOP_ROUTES, (now - timedelta(days=1)).date(), TOP_ROUTES)
        retention = await conn.fetch(q.STATUS_RETENTION, list(SWEPT))
        sinks, sinks_note = await _sinks(conn)
    counted = {r["vendor"]: r for r in looks}
    # a vendor disabled (or no longer configured) still has a card while it has figures or
    # messages in flight: those may be stuck, and nothing polls them any more
    names = enabled + sorted((set(hour) | set(day) | set(counted)) - set(enabled))
    by_name = {v.name: v for v in configured}
    vendors = [_vendor(name, enabled=name in enabled, cfg=by_name.get(name) or VendorConfig(name),
                       c=counted.get(name), hour=hour.get(name), day=day.get(name),
                       refused=refused.get(name), h=health.get(name), unmapped=unmapped.get(name, []),
                       chart=_chart(hourly, name, now))
               for name in names]
    return StatusData(now=now, vendors=vendors, hour_from=hour_from, day_from=day_from,
                      tracker=TrackerStatus(problems, _components(tracker.supervisor), list(replicas)),
                      intake_waiting=waiting["intake"], intake_oldest_s=ages["intake_s"],
                      postbacks_waiting=waiting["postbacks"], postbacks_oldest_s=ages["postbacks_s"],
                      consumers=list(consumers), sinks=sinks, sinks_note=sinks_note, routes=list(routes),
                      retention=list(retention), count_cap=COUNT_CAP, stall_s=cfg.health.intake_stall_s,
                      refused_elsewhere=[r for v, r in sorted(refused.items()) if v not in names],
                      postbacks_stall_s=cfg.health.postbacks_stall_s)


def _vendor(name: str, *, enabled: bool, cfg: VendorConfig, c, hour, day, refused, h,
            unmapped: list[UnmappedCode], chart) -> VendorStatus:
    """One vendor's card from its rows: c in flight and stuck, hour and day its figures, refused
    its refused rows, h its poll health (each None where the vendor has none)."""
    return VendorStatus(
        vendor=name, enabled=enabled,
        in_flight=c["in_flight"] if c else 0, stuck=c["stuck"] if c else 0,
        oldest_stuck_at=c["oldest_stuck_at"] if c else None,
        count_cap=COUNT_CAP, stuck_cap=STUCK_CAP, hour=hour, day=day,
        refused=refused["refused"] if refused else 0,
        # a walk that reached its cap leaves every vendor's count a lower bound: shown "≥"
        refused_cap=refused["refused"] if refused and refused["capped"] else REFUSED_CAP,
        last_refusal=refused["last_error"] if refused else None,
        last_refusal_at=refused["last_at"] if refused else None,
        circuit=h["circuit_state"] if h else None, circuit_since=h["circuit_since"] if h else None,
        circuit_reset_s=cfg.circuit_reset_s, polling_replicas=h["polling_replicas"] if h else 0,
        last_success_at=h["last_success_at"] if h else None,
        last_error=h["last_error"] if h else None, last_error_at=h["last_error_at"] if h else None,
        unmapped_codes=unmapped, unmapped_count_cap=UNMAPPED_COUNT_CAP, chart=chart)


def _components(supervisor) -> list[ComponentStatus]:
    """The components that have failed since this daemon started: the supervisor's count
    (tracker_component_failures_total), failures in a row (0: it made progress since) and the
    last error."""
    out = []
    for h in sorted(supervisor.components.values(), key=lambda h: h.name):
        failures = REGISTRY.get_sample_value("tracker_component_failures_total", {"component": h.name})
        if h.last_error or failures:
            out.append(ComponentStatus(h.name, int(failures or 0), h.failures_in_a_row, h.last_error))
    return out


async def _sinks(conn: asyncpg.Connection) -> tuple[list | None, str | None]:
    """The sinks' status (issue #13), when its view exists; its absence or failure is shown in
    the page, never fails it."""
    if not await conn.fetchval(q.SINK_STATUS_EXISTS):
        return None, "no sinks: tracker.sink_status does not exist in this database yet"
    try:
        async with conn.transaction():  # a savepoint: a failure here leaves the rest
            return [dict(r) for r in await conn.fetch(q.STATUS_SINKS)], None
    except asyncpg.PostgresError as e:
        log.warning("status page: sink status unreadable", error=str(e)[:300])
        return None, f"sink status unreadable: {type(e).__name__}: {e}"[:300]


def _chart(rows, vendor: str, now: datetime) -> list[tuple[datetime, int, float | None]]:
    """24 hourly points (hours without messages are zero), oldest first."""
    first = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    got = {r["hour"]: r for r in rows if r["vendor"] == vendor}
    points = []
    for i in range(24):
        at = first + timedelta(hours=i)
        r = got.get(at)
        total = int(r["total"]) if r else 0
        points.append((at, total, float(r["delivered_ratio"]) if r and r["delivered_ratio"] is not None else None))
    return points


def add_routes(app: web.Application, tracker) -> None:
    app.router.add_get("/status", StatusPage(tracker).handle)
