"""Postback ingestion (DESIGN §4): `POST|GET /postbacks/{vendor}/{token}`.

A request is checked (vendor pushes and is enabled, source network, token in constant time,
content type, size), parsed by the vendor's adapter (unreadable: 400, nothing stored), then
stored raw by a group commit; 200 is answered only after that commit. A worker then parses the
stored rows again and applies them through the reducer, marking them processed in the same
transaction: a crash between the two leaves unprocessed rows that the next start (of any
replica) applies. Answers:

    200 stored        400 unreadable body    403 source not in allow_networks
    404 unknown vendor, vendor that does not push, wrong or missing token (all alike)
    405 other method  413 body over http.max_body_bytes   415 content type the vendor never sends
    503 database unavailable, timed out, overloaded or stopping (the vendor retries)
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime, timezone

import asyncpg
import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from tracker import metrics
from tracker.adapters.base import ParseError
from tracker.config_types import VENDORS
from tracker.db import queries as q
from tracker.logging import get_logger, register_secret
from tracker.postbacks import core
from tracker.postbacks.commit import GroupCommit, Unavailable
from tracker.postbacks.process import BatchFailed, process_pending

log = get_logger("tracker.postbacks")

ROUTE = "/postbacks/{path:.*}"
WORKER_BATCH = 500
SWEEP_S = 5.0  # the worker looks for rows left by others (a crash, another replica) this often
TRANSIENT = (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
             asyncpg.InternalClientError,  # e.g. a connection that died mid-operation
             asyncpg.exceptions.OperatorInterventionError,
             asyncpg.exceptions.InsufficientResourcesError,
             asyncpg.exceptions.TransactionRollbackError)


def _transient(e: BaseException | None) -> bool:
    """A failure of the database connection or server (retry later), not of the data."""
    seen = 0
    while e is not None and seen < 10:
        if isinstance(e, TRANSIENT) and not isinstance(e, asyncpg.exceptions.DataError):
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


def _answer(status: int, payload: dict) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")


class Postbacks:
    """The daemon component: routes, group commit and the apply worker."""

    def __init__(self, tracker) -> None:
        self.tracker = tracker
        self.config = tracker.config
        self.routes = core.routes_from(self.config)
        for vc in self.config.vendors.values():
            register_secret(vc.postback_token)
        self.max_body = self.config.http.max_body_bytes
        self.commit: GroupCommit | None = None
        self.worker: asyncio.Task | None = None
        self.wake = asyncio.Event()
        self.stopping = False

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        http = self.config.http
        self.commit = GroupCommit(self.tracker.pool, max_items=http.group_commit_max,
                                  max_wait_s=http.group_commit_ms / 1000.0, on_commit=self.wake.set)
        self.commit.start()
        self.stopping = False
        self.worker = asyncio.create_task(self._work(), name="postbacks-worker")
        log.info("postbacks ready", vendors=sorted(self.routes))

    async def stop(self) -> None:
        """Answer what is in flight (stored: 200, else 503), then stop the worker; rows it has
        not applied stay unprocessed for the next start."""
        if self.commit is not None:
            await self.commit.stop()
        self.stopping = True
        self.wake.set()
        if self.worker is not None:
            try:
                await asyncio.wait_for(self.worker, 10)
            except TimeoutError:
                log.warning("postback worker did not finish in time; its batch rolls back")
            self.worker = None

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("POST", ROUTE, self.handle)
        app.router.add_route("GET", ROUTE, self.handle)

    # --- HTTP ----------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        parts = request.match_info["path"].split("/")
        vendor, token = (parts[0], parts[1]) if len(parts) == 2 else ("", "")
        status, payload = await self._receive(request, vendor, token)
        label = vendor if vendor in VENDORS else "unknown"
        metrics.postbacks.labels(label, str(status)).inc()
        metrics.postback_seconds.observe(time.perf_counter() - started)
        return _answer(status, payload)

    async def _receive(self, request: web.Request, vendor: str, token: str) -> tuple[int, dict]:
        ctype = request.headers.get("Content-Type", "")
        # A content type says nothing without a body (some clients label an empty GET too).
        refusal = core.admit(self.routes, vendor, token, request.remote,
                             ctype if request.body_exists else "")
        if refusal is None and request.content_length is not None and request.content_length > self.max_body:
            refusal = core.TOO_LARGE
        if refusal is None:
            body, refusal = await self._read(request)
        if refusal is not None:
            if refusal.status != 404:
                log.warning("postback refused", vendor=vendor, status=refusal.status,
                            reason=refusal.error, source=request.remote, content_type=ctype[:100])
            return refusal.status, {"error": refusal.error}
        ip = core.source_ip(request.remote)
        raw = core.RawPostback(vendor, request.method, ctype, request.query_string, body,
                               str(ip) if ip else None, datetime.now(timezone.utc))
        try:
            core.parse(raw)  # the worker parses again from the stored row; this is the 400
        except ParseError as e:
            log.warning("postback unreadable", vendor=vendor, error=str(e), source=request.remote)
            return 400, {"error": str(e)}
        try:
            await self.commit.store(raw)
        except Unavailable:
            return core.UNAVAILABLE.status, {"error": core.UNAVAILABLE.error}
        return 200, {"status": "ok"}

    async def _read(self, request: web.Request) -> tuple[bytes, core.Refusal | None]:
        """The body, or why not: over the limit (also without a Content-Length), or broken."""
        chunks, size = [], 0
        try:
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > self.max_body:
                    return b"", core.TOO_LARGE
                chunks.append(chunk)
        except (HttpProcessingError, ConnectionError, asyncio.IncompleteReadError):
            return b"", core.BROKEN_BODY
        return b"".join(chunks), None

    # --- the apply worker ----------------------------------------------------------------------

    async def _work(self) -> None:
        backoff = 0.5
        while not self.stopping:
            self.wake.clear()
            try:
                async with self.tracker.pool.acquire() as conn:
                    done = await self._apply_some(conn)
                backoff = 0.5
                if done >= WORKER_BATCH:
                    continue  # more waiting
            except Exception as e:
                if not _transient(e):
                    log.exception("postback worker failed")
                else:
                    log.warning("postback worker: database unavailable; will retry",
                                error=type(e).__name__)
                self.wake.clear()  # a commit that succeeds means the database is back
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), SWEEP_S)

    async def _apply_some(self, conn: asyncpg.Connection) -> int:
        """One batch; when the database refuses a batch for what it holds, the rows one by
        one, and a row refused alone is set aside with its error (tracker.postback_problems)."""
        try:
            out = await process_pending(conn, self.config, WORKER_BATCH)
        except BatchFailed as e:
            if _transient(e) or conn.is_closed():
                raise
            log.warning("postback batch refused; applying its rows one by one",
                        rows=len(e.ids), error=type(e.__cause__).__name__)
            for pid in e.ids:
                try:
                    await process_pending(conn, self.config, 1, [pid])
                except BatchFailed as one:
                    if _transient(one) or conn.is_closed():
                        raise
                    reason = f"not applied: {type(one.__cause__).__name__}: {one.__cause__}"[:500]
                    await conn.execute(q.FAIL_POSTBACK, pid, reason)
                    log.error("postback set aside", postback_id=pid, error=reason)
            return 0
        if out.rows:
            log.debug("postbacks applied", rows=out.rows, observations=out.observations,
                      transitions=out.transitions, unreadable=out.unreadable)
        return out.rows
