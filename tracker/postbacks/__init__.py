"""Postback ingestion (docs/postbacks.md): `POST|GET /postbacks/{vendor}/{token}`.

A request is checked (vendor pushes and is enabled, source network, token in constant time,
content type, size), parsed by the vendor's adapter (unreadable: 400, nothing stored), then
stored raw by a group commit; 200 is answered only after that commit. A worker then applies
what the handlers parsed through the reducer, marking the rows processed in the same
transaction. Whatever it could not apply (a crash, the database lost in between) stays an
unprocessed row, which the worker's sweep (at start, every few seconds, after a failure; on any
replica) parses again from the stored request and applies. The worker runs under the
supervisor (tracker.supervisor) as component `postbacks`: a bug there is logged, counted and
the worker starts again; its progress is a batch applied or a sweep done. Answers:

    200 stored        400 unreadable body    404 source not in allow_networks (as a wrong token)
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
from tracker.adapters.base import ParseError, PostbackRequest
from tracker.config_types import VENDORS
from tracker.db import queries as q
from tracker.logging import get_logger, register_secret
from tracker.postbacks import core
from tracker.postbacks.commit import GroupCommit, Unavailable
from tracker.postbacks.process import BatchFailed, Parsed, process_pending, process_received
from tracker.supervisor import beat

log = get_logger("tracker.postbacks")

ROUTE = "/postbacks/{path:.*}"
WORKER_BATCH = 500  # rows parsed again per sweep transaction
RECEIVED_BATCH = 1000  # rows applied per transaction with what their handlers parsed
WRITERS = 2  # group commit batches written at a time
APPLIERS = 2  # stored batches applied at a time: the worker, and one more while it is busy
SWEEP_S = 5.0  # the worker looks for rows left by others (a crash, another replica) this often
STOP_GRACE_S = 10.0  # stop(): time the worker gets to apply what was stored
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


# The group commit's writers' and the appliers' connections: 200 only after a durable commit;
# generic plans, because their statements take batches of ids and keys found by index whatever
# the values (queries: CLAIM_AND_INSERT_OBSERVATIONS, WRITE_MESSAGES), so they are planned once
# per connection. Left to choose, PostgreSQL planned the claim anew for every batch, which took
# as long as running it (0.5 ms; docs/performance.md).
SESSION_SETTINGS = {"synchronous_commit": "on", "plan_cache_mode": "force_generic_plan"}

OK = 200, {"status": "ok"}
_OK_BODY = orjson.dumps(OK[1])


def _answer(status: int, payload: dict) -> web.Response:
    body = _OK_BODY if payload is OK[1] else orjson.dumps(payload)
    return web.Response(status=status, body=body, content_type="application/json")


_counters: dict[tuple[str, int], object] = {}


def _count(vendor: str, status: int):
    """tracker_postbacks_total's child for (vendor, status), looked up once (labels() is not
    cheap, and this runs for every request)."""
    child = _counters.get((vendor, status))
    if child is None:
        label = vendor if vendor in VENDORS else "unknown"
        child = metrics.postbacks.labels(label, str(status))
        if len(_counters) < 1000:  # bounded: any path can name a vendor
            _counters[(vendor, status)] = child
    return child


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The postback path's own connections are handed back as they are: asyncpg rolls back an
    open transaction, and this code leaves no other session state (no SET, LISTEN or session
    lock), so the pool's reset round trip (RESET ALL, UNLISTEN *, ...) per use is saved."""


class Postbacks:
    """The daemon component: routes, group commit and the apply worker."""

    def __init__(self, tracker) -> None:
        self.tracker = tracker
        self.config = tracker.config
        self.routes = core.routes_from(self.config)
        self.trusted_proxies = core.networks(self.config.http.trusted_proxies)
        for vc in self.config.vendors.values():
            register_secret(vc.postback_token)
        self.max_body = self.config.http.max_body_bytes
        self.pool: asyncpg.Pool | None = None  # the postback path's own connections
        self.own_pool = False
        self.commit: GroupCommit | None = None
        self.worker: asyncio.Task | None = None
        self.appliers: list[asyncio.Task] = []
        self.received: list[Parsed] = []  # stored, to apply with what the handler parsed
        self.wake = asyncio.Event()
        self.wake_more = asyncio.Event()  # the other appliers'
        self.stopping = False
        self.publisher = None  # the daemon's (tracker.events), found at start

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        http = self.config.http
        # The daemon's publisher, woken at once when an applied batch made transitions (the
        # writers' NOTIFY would take a hop more); without one, the NOTIFY wakes whoever publishes.
        self.publisher = next((c for c in getattr(self.tracker, "components", ())
                               if type(c).__name__ == "Publisher"), None)
        dsn = getattr(self.tracker, "dsn", None)
        if dsn:  # the group commit's writers and the apply worker: connections of their own
            self.pool = await asyncpg.create_pool(
                dsn, min_size=1, max_size=WRITERS + APPLIERS, reset=_keep_session,
                server_settings=SESSION_SETTINGS)
            self.own_pool = True
        else:
            self.pool = self.tracker.pool
        self.commit = GroupCommit(self.pool, max_items=http.group_commit_max,
                                  max_wait_s=http.group_commit_ms / 1000.0, writers=WRITERS)
        self.commit.start()
        self.stopping = False
        self.worker = self.tracker.supervisor.spawn("postbacks", self._work,
                                                    stopping=lambda: self.stopping)
        self.appliers = [self.tracker.supervisor.spawn(f"postbacks:apply:{i}", self._apply_more,
                                                       stopping=lambda: self.stopping)
                         for i in range(1, APPLIERS)]
        log.info("postbacks ready", vendors=sorted(self.routes))

    async def stop(self) -> None:
        """Answer what is in flight (stored: 200, else 503), let the worker apply what was
        stored, then stop it; rows it has not applied stay unprocessed for the next start."""
        if self.commit is not None:
            await self.commit.stop()
        self.stopping = True
        self.wake.set()
        self.wake_more.set()
        if self.worker is not None:
            await self.tracker.supervisor.stop_tasks([self.worker, *self.appliers], STOP_GRACE_S)
            self.worker, self.appliers = None, []
        if self.own_pool and self.pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pool.close(), 5)
            self.pool, self.own_pool = None, False

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("POST", ROUTE, self.handle)
        app.router.add_route("GET", ROUTE, self.handle)

    # --- HTTP ----------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        parts = request.match_info["path"].removesuffix("/").split("/")  # a trailing / is fine
        vendor, token = (parts[0], parts[1]) if len(parts) == 2 else ("", "")
        status, payload = await self._receive(request, vendor, token)
        _count(vendor, status).inc()
        metrics.postback_seconds.observe(time.perf_counter() - started)
        return _answer(status, payload)

    async def _receive(self, request: web.Request, vendor: str, token: str) -> tuple[int, dict]:
        ctype = request.headers.get("Content-Type", "")
        remote = core.client_address(request.remote, request.headers.get("X-Forwarded-For"),
                                     self.trusted_proxies)
        # A content type says nothing without a body (some clients label an empty GET too).
        refusal = core.admit(self.routes, vendor, token, remote,
                             ctype if request.body_exists else "")
        if refusal is None and request.content_length is not None and request.content_length > self.max_body:
            refusal = core.TOO_LARGE
        if refusal is None:
            body, refusal = await self._read(request)
        if refusal is None and self.routes[vendor].verify is not None:
            # a vendor that signs its postbacks: checked before anything is parsed
            refusal = core.authenticate(self.routes[vendor], PostbackRequest(
                request.method, str(request.url), request.headers, body))
        if refusal is not None:
            if refusal.status != 404:
                log.warning("postback refused", vendor=vendor, status=refusal.status,
                            reason=refusal.error, source=remote, content_type=ctype[:100])
            return refusal.status, {"error": refusal.error}
        ip = core.source_ip(remote)
        raw = core.RawPostback(vendor, request.method, ctype, request.query_string, body,
                               ip and ip.compressed, datetime.now(timezone.utc))
        try:
            found = core.parse(raw)
        except ParseError as e:
            log.warning("postback unreadable", vendor=vendor, error=str(e), source=remote)
            return 400, {"error": str(e)}
        try:
            postback_id = await self.commit.store(raw)
        except Unavailable:
            return core.UNAVAILABLE.status, {"error": core.UNAVAILABLE.error}
        self.received.append(Parsed(postback_id, raw.received_at, found))
        if len(self.received) == 1:  # the worker applies at once when idle (woken by the
            self.wake.set()  # commit, not a timer); while it applies, the next batch grows,
            self.wake_more.set()  # or another applier takes it
        return OK

    async def _read(self, request: web.Request) -> tuple[bytes, core.Refusal | None]:
        """The body, or why not: over the limit (also without a Content-Length), or broken."""
        chunks, size = [], 0
        try:
            length = request.content_length
            if length is not None:  # checked against the limit already
                return (await request.content.readexactly(length) if length else b""), None
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
        loop = asyncio.get_running_loop()
        backoff, sweep_at = 0.5, 0.0  # sweep at once: rows a crash may have left
        while not (self.stopping and not self.received):
            self.wake.clear()
            try:
                with beat().working():  # progress: a batch applied, or a sweep done
                    async with self.pool.acquire() as conn:
                        if self.received:  # what was stored while the last batch applied
                            items = self.received[:RECEIVED_BATCH]
                            self.received = self.received[RECEIVED_BATCH:]
                            await self._apply_received(conn, items)
                            continue
                        if loop.time() >= sweep_at and not self.stopping:
                            if await self._apply_some(conn) >= WORKER_BATCH:
                                continue  # more waiting
                            sweep_at = loop.time() + SWEEP_S
                backoff = 0.5
            except Exception as e:
                # What was taken from `received` is still an unprocessed row: the sweep gets it
                # (at once when the supervisor starts the worker again after a bug).
                if not _transient(e):
                    raise
                sweep_at = 0.0
                log.warning("postback worker: database unavailable; will retry",
                            error=type(e).__name__)
                if self.stopping:
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if self.stopping:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), max(0.0, sweep_at - loop.time()))

    async def _apply_more(self) -> None:
        """Another applier: it applies what was stored while the worker applies a batch, so
        that a batch waits less for the one before it. Only the worker sweeps: a batch this
        one fails to apply stays unprocessed rows, and the worker's sweep applies them."""
        while not (self.stopping and not self.received):
            self.wake_more.clear()
            if not self.received:
                if self.stopping:
                    return
                await self.wake_more.wait()
                continue
            items = self.received[:RECEIVED_BATCH]
            self.received = self.received[RECEIVED_BATCH:]
            try:
                with beat().working():
                    async with self.pool.acquire() as conn:
                        await self._apply_received(conn, items)
            except Exception as e:
                if not _transient(e):
                    raise
                log.warning("postback applier: database unavailable; the sweep will apply",
                            error=type(e).__name__)
                if self.stopping:
                    return
                await asyncio.sleep(0.5)

    async def _apply_received(self, conn: asyncpg.Connection, items: list[Parsed]) -> None:
        try:
            out = await process_received(conn, self.config, items)
        except BatchFailed as e:
            if _transient(e) or conn.is_closed():
                raise
            await self._one_by_one(conn, e)  # from the stored rows, parsed again
            return
        if out.transitions and self.publisher is not None:
            self.publisher.wake.set()  # committed: publish now (the NOTIFY would take a hop more)
        if out.rows:
            log.debug("postbacks applied", rows=out.rows, observations=out.observations,
                      transitions=out.transitions)

    async def _apply_some(self, conn: asyncpg.Connection) -> int:
        """One batch; when the database refuses a batch for what it holds, the rows one by
        one, and a row refused alone is set aside with its error (tracker.postback_problems)."""
        try:
            out = await process_pending(conn, self.config, WORKER_BATCH)
        except BatchFailed as e:
            if _transient(e) or conn.is_closed():
                raise
            await self._one_by_one(conn, e)
            return 0
        if out.rows:
            log.debug("postbacks applied", rows=out.rows, observations=out.observations,
                      transitions=out.transitions, unreadable=out.unreadable)
        return out.rows

    async def _one_by_one(self, conn: asyncpg.Connection, failed: BatchFailed) -> None:
        log.warning("postback batch refused; applying its rows one by one",
                    rows=len(failed.ids), error=type(failed.__cause__).__name__)
        for pid in failed.ids:
            try:
                await process_pending(conn, self.config, 1, [pid])
            except BatchFailed as one:
                if _transient(one) or conn.is_closed():
                    raise
                reason = f"not applied: {type(one.__cause__).__name__}: {one.__cause__}"[:500]
                await conn.execute(q.FAIL_POSTBACK, pid, reason)
                log.error("postback set aside", postback_id=pid, error=reason)
