"""Postback ingestion (docs/postbacks.md): `POST|GET /postbacks/{vendor}/{token}`.

A request is checked (vendor pushes and is enabled, source network, token in constant time,
content type, size), parsed by the vendor's adapter (unreadable: 400, nothing stored), then
stored raw by a group commit (commit.py); 200 is answered only after that commit. A small
batch written while no other write is in flight is applied through the reducer in the same
transaction; any other batch is handed, with what the handlers parsed, to the apply worker
(worker.py), which applies it and marks its rows processed. Whatever was not applied (a crash,
the database lost in between) stays an unprocessed row, which the worker's sweep (at start,
every few seconds, after a failure; on any replica) parses again from the stored request and
applies. The worker runs under the supervisor (tracker.supervisor) as component `postbacks`: a
bug there is logged, counted and the worker starts again; its progress is a batch applied or a
sweep done. Answers:

    200 stored        400 unreadable (body, query, a content type or encoding the vendor never
                      sends), or refused by the database
    404 source not in allow_networks (as a wrong token)
    404 unknown vendor, vendor that does not push, wrong or missing token (all alike)
    405 other method  413 body over http.max_body_bytes
    503 database unavailable, timed out, overloaded or stopping (the vendor retries)
"""
from __future__ import annotations

import asyncio
import contextlib
import time

import asyncpg
import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from tracker import metrics
from tracker.adapters.base import ParseError, PostbackRequest
from tracker.config_types import VENDORS
from tracker.db import DB_ERRORS, is_outage, sessions
from tracker.db import queries as q
from tracker.logging import get_logger, register_secret, scrub
from tracker.postbacks import core
from tracker.postbacks.commit import GroupCommit, Refused, Unavailable
from tracker.postbacks.worker import APPLIERS, ApplyWorker
from tracker.start_error import database_start_error
from tracker.throttle import Throttle
from tracker.db import clock as db_clock

log = get_logger("tracker.postbacks")

ROUTE = "/postbacks/{path:.*}"
# A vendor that changed its payload, or a signature setting gone wrong, refuses every postback:
# a warning per vendor and reason a minute, saying how many were left out meanwhile
# (tracker_postbacks_total counts each).
_refusals = Throttle()
WRITERS = 2  # group commit batches written at a time (a small one also applied)


# The group commit's writers' and the apply worker's connections: 200 only after a durable commit;
# generic plans, because their statements take batches of ids and keys found by index whatever
# the values (queries: CLAIM_AND_INSERT_OBSERVATIONS, WRITE_MESSAGES), so they are planned once
# per connection. Left to choose, PostgreSQL planned the claim anew for every batch, which took
# as long as running it (0.5 ms; docs/performance.md). Named, so that pg_stat_activity tells
# them apart from the daemon's main pool. A message's lock is waited for a second at most: held
# longer (another session's open transaction), it held a writer until the request's timeout and
# every postback of the batch was answered 503; now the batch is stored unapplied and the worker
# applies the rest around the held message (tracker.postbacks.worker).
SESSION_SETTINGS = {"synchronous_commit": "on", "plan_cache_mode": "force_generic_plan",
                    "application_name": "tracker postbacks", "lock_timeout": "1s",
                    **sessions.SERVER_KEEPALIVE}
CONNECTIONS = WRITERS + APPLIERS

OK = 200, {"status": "ok"}
_OK_BODY = orjson.dumps(OK[1])


def _route(request: web.Request) -> tuple[str, str]:
    """(vendor, token) of the request's path; ("", "") where it names no such pair."""
    parts = request.match_info["path"].removesuffix("/").split("/")  # a trailing / is fine
    return (parts[0], parts[1]) if len(parts) == 2 else ("", "")


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


async def _warm(conn: asyncpg.Connection) -> None:
    """Each new connection of the postback path runs its statements once, on nothing, in a
    transaction rolled back: asyncpg prepares them and looks up their types, the backend
    plans them and loads the tables and indexes, before a postback waits for any of that (the
    first batches on new connections took 50-90 ms: docs/performance.md, session 15). An
    outage here is one to connect: asyncpg drops the connection and the batch that wanted it is
    answered 503 (at start, the daemon does not start). Anything else (a table locked by another
    session past lock_timeout, a privilege or a column the database refuses) leaves the
    connection cold, logged: the daemon starts and stores postbacks, and what the statements
    meet is met, counted and shown where they run. It stopped the start with a traceback,
    restarted every 2 s for as long as the lock was held."""
    await sessions.init(conn)  # a silent peer noticed, the ids moved (tracker.db.sessions)
    tx = conn.transaction()
    await tx.start()
    try:
        for columns in (q.POSTBACK_COLUMNS, q.APPLIED_POSTBACK_COLUMNS):
            await conn.copy_records_to_table("postbacks", schema_name="tracker", columns=columns,
                                             records=[])
        await conn.fetch(q.INSERT_OBSERVATIONS, "[]", "postback")
        await conn.fetch(q.CLAIM_AND_INSERT_OBSERVATIONS, "[]", "postback", [])
        await conn.execute(q.WRITE_MESSAGES, "[]", [], "[]")
    except asyncpg.PostgresError as e:
        if is_outage(e):
            raise
        log.warning("postback connection not warmed: its first batches will be slower",
                    error=f"{type(e).__name__}: {scrub(str(e))[:200]}")
    finally:
        await tx.rollback()


class Postbacks:
    """The daemon component: routes, group commit and the apply worker."""

    def __init__(self, tracker) -> None:
        self.tracker = tracker
        self.config = tracker.config
        self.routes = core.routes_from(self.config)
        self.trusted_proxies = core.networks(self.config.http.trusted_proxies)
        for vc in self.config.vendors.values():
            register_secret(vc.postback_token, sent=True)
            register_secret(vc.previous_postback_token, sent=True)
        self.max_body = self.config.http.max_body_bytes
        self.pool: asyncpg.Pool | None = None  # the postback path's own connections
        self.own_pool = False
        self.commit: GroupCommit | None = None
        self.worker: ApplyWorker | None = None
        self.publisher = None  # the daemon's (tracker.events), found at start

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        http = self.config.http
        # The daemon's publisher, woken at once when an applied batch made transitions (the
        # writers' NOTIFY would take a hop more); without one, the NOTIFY wakes whoever publishes.
        self.publisher = next((c for c in getattr(self.tracker, "components", ())
                               if type(c).__name__ == "Publisher"), None)
        dsn = getattr(self.tracker, "dsn", None)
        if dsn:  # the group commit's writers and the apply worker: connections of their own,
            # made now and kept while idle. A new backend's first batches (its caches, the first
            # plans, asyncpg's type lookups) took 60-90 ms; with asyncpg's default (an idle
            # connection closed after 300 s), the first burst after every quiet 5 minutes paid
            # that again (docs/performance.md, session 14).
            try:
                self.pool = await asyncpg.create_pool(
                    dsn, min_size=CONNECTIONS, max_size=CONNECTIONS, init=_warm, reset=_keep_session,
                    server_settings=SESSION_SETTINGS, max_inactive_connection_lifetime=0)
            except DB_ERRORS as e:  # one line naming the setting, as the main pool's (not a traceback)
                db = self.config.database
                raise database_start_error(e, db.dsn, db.state_dir) from None
            self.own_pool = True
        else:
            self.pool = self.tracker.pool
        self.worker = ApplyWorker(self.tracker.supervisor, self.config, self.pool, self.publisher)
        self.worker.start()
        self.commit = GroupCommit(self.pool, self.worker, max_items=http.group_commit_max,
                                  max_wait_s=http.group_commit_ms / 1000.0, writers=WRITERS)
        self.commit.start(self.tracker.supervisor.spawn)
        log.info("postbacks ready", vendors=sorted(self.routes),
                 previous_token_accepted=sorted(v for v in self.routes
                                                if self.config.vendors[v].previous_secrets()))

    async def stop(self) -> None:
        """Answer what is in flight (stored: 200, else 503), let the worker apply what was
        stored, then stop it; rows it has not applied stay unprocessed for the next start."""
        try:
            if self.commit is not None:
                await self.commit.stop()
        finally:  # the worker and the pool stop whatever the writer loop's end was
            if self.worker is not None:
                await self.worker.stop()
                self.worker = None
            if self.own_pool and self.pool is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.pool.close(), 5)
                self.pool, self.own_pool = None, False

    def close_connections(self) -> None:
        """Its own connections closed at once (Tracker's stop, the database not answering)."""
        if self.own_pool and self.pool is not None:
            self.pool.terminate()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("POST", ROUTE, self.handle, expect_handler=self._expect)
        app.router.add_route("GET", ROUTE, self.handle)

    # --- HTTP ----------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        vendor, token = _route(request)
        status, payload = await self._receive(request, vendor, token)
        _count(vendor, status).inc()
        metrics.postback_seconds.observe(time.perf_counter() - started)
        return _answer(status, payload)

    async def _expect(self, request: web.Request) -> web.Response | None:
        """`Expect: 100-continue`: the body is invited only when it would be read. A request
        refused before its body (vendor, token, address, content type or length) is answered
        at once: aiohttp's own handler invited 50 MB for a 413 or a wrong token's 404."""
        if self._refused_unread(request, *_route(request))[0] is not None:
            return await self.handle(request)  # the refusal, counted and logged as any
        if request.headers.get("Expect", "").lower() != "100-continue":
            return web.Response(status=417, text="417: only Expect: 100-continue is understood\n")
        if request.version >= (1, 1):
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # as aiohttp does
        return None

    def _refused_unread(self, request: web.Request, vendor: str,
                        token: str) -> tuple[core.Refusal | None, str | None, str]:
        """Why the request is refused before its body is read (None: it is read), with the
        client's address and the content type."""
        ctype = request.headers.get("Content-Type", "")
        remote = core.request_client(request.remote, request.headers, self.trusted_proxies)
        # A content type says nothing without a body (some clients label an empty GET too).
        refusal = core.admit(self.routes, vendor, token, remote,
                             ctype if request.body_exists else "")
        if refusal is None:
            refusal = core.encoding_refused(request.headers.getall("Content-Encoding", ()))
        if refusal is None and request.content_length is not None and request.content_length > self.max_body:
            refusal = core.TOO_LARGE
        return refusal, remote, ctype

    async def _receive(self, request: web.Request, vendor: str, token: str) -> tuple[int, dict]:
        refusal, remote, ctype = self._refused_unread(request, vendor, token)
        if refusal is None:
            route = self.routes[vendor]
            if route.previous_digest is not None and core.previous_token(route, token):
                metrics.postbacks_previous_token.labels(vendor).inc()
            body, refusal = await self._read(request)
        if refusal is None and self.routes[vendor].verify is not None:
            # a vendor that signs its postbacks: checked before anything is parsed
            # the URL from the raw request target, escapes as sent: Twilio signs the URL exactly
            # as it was given (a URL rebuilt by yarl may normalize them, as a mocked one did)
            url = f"{request.scheme}://{request.host}{request.raw_path}"
            refusal, by_previous = core.authenticate(self.routes[vendor], PostbackRequest(
                request.method, url, request.headers, body))
            if by_previous:  # signed with a secret being rotated out (Twilio's previous_...)
                metrics.postbacks_previous_token.labels(vendor).inc()
        if refusal is not None:
            # 404s are not logged: anyone can send them (counted, as every refusal)
            if refusal.status != 404 and (left_out := _refusals.allow((vendor, refusal.error))) is not None:
                log.warning("postback refused", vendor=vendor, status=refusal.status,
                            reason=refusal.error, source=remote, content_type=ctype[:100],
                            left_out=left_out)
            return refusal.status, {"error": refusal.error}
        ip = core.source_ip(remote)
        raw = core.RawPostback(vendor, request.method, ctype, request.rel_url.raw_query_string,
                               body, ip and ip.compressed, db_clock.now())
        try:
            found = core.parse(raw, self.config.vendors.get(vendor))
        except ParseError as e:
            if (left_out := _refusals.allow((vendor, "unreadable"))) is not None:
                log.warning("postback unreadable", vendor=vendor, error=str(e), source=remote,
                            left_out=left_out)
            return 400, {"error": str(e)}
        try:
            await self.commit.store(raw.as_stored(), found)
        except Unavailable:
            return core.UNAVAILABLE.status, {"error": core.UNAVAILABLE.error}
        except Refused as e:
            log.warning("postback refused by the database", vendor=vendor, error=str(e), source=remote)
            return 400, {"error": f"the database refuses to store this postback ({e})"}
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
