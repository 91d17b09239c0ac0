"""`tracker run`: the daemon. A thin shell that wires the database, the components, the HTTP
listeners, the intake loop, the periodic sweeps and the systemd watchdog together under one
supervisor (tracker.supervisor): parts start in this order and stop in reverse on SIGTERM (tracker.run), so
that claiming stops first, in-flight work finishes or is handed back, and the database goes
last; every background task is supervised."""
from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from functools import partial
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable, Protocol

import asyncpg
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from tracker import metrics, retention, sweep_clock, systemd
from tracker.config import redact_dsn
from tracker.config_types import Config
from tracker.db import DB_ERRORS
from tracker.db import clock, keeper, sessions
from tracker.db import queries as q
from tracker.db.embedded import EmbeddedError, EmbeddedPostgres
from tracker.db.migrate import migrate
from tracker.db.state_dir import StateDirError
from tracker.http import connections, ops
from tracker.http.drain import Drain
from tracker.http.middleware import count_router_refusals, cut_slow_bodies, server_name
from tracker.intake.loops import IntakeLoops
from tracker.logging import get_logger
from tracker.start_error import StartError, database_start_error
from tracker.supervisor import Part, Supervisor

log = get_logger("tracker.app")

HTTP_SHUTDOWN_S = 10.0  # stop(): time in-flight requests get to be answered
STOP_DATABASE_WAIT_S = 45.0  # stop(): then what still waits on the database is let go (unit: 90 s)


class Host(Protocol):
    """What a component of the daemon (Postbacks, Poller) uses of it."""

    config: Config
    pool: asyncpg.Pool
    supervisor: Supervisor
    scheduler: AsyncIOScheduler

    def every(self, name: str, seconds: float, sweep: Callable[[], Awaitable[None]]) -> None: ...

    async def exclusive(self, name: str, job: Callable[[asyncpg.Connection], Awaitable]) -> bool: ...


class Tracker:
    def __init__(self, config: Config):
        self.config = config
        self.embedded: EmbeddedPostgres | None = None
        self.pool: asyncpg.Pool | None = None
        self.dsn: str | None = None
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self.supervisor = Supervisor(config.health)
        self.heads = ops.HeadClock()  # how long the same submission row has headed the queue
        self.stopping = asyncio.Event()
        self.ready = False  # READY=1 sent: a stop drains first (http.drain_s)
        self.drain = Drain(config.http.drain_s)
        self.listen_addresses: dict[str, tuple[str, int]] = {}
        # Parts with their own lifecycle: each has `async start()`, `async stop()` and may have
        # `add_routes(app)` for the postback listener.
        self.components: list = self._components()
        self.intake = IntakeLoops(self)  # started after the listeners, stopped before them

    def _components(self) -> list:
        from tracker.events import Publisher
        from tracker.poller.engine import Poller
        from tracker.postbacks import Postbacks
        from tracker.sinks.component import Sinks
        from tracker.upkeep import Upkeep

        return [
            Publisher(self),
            Postbacks(self),
            Poller(self.config, lambda: self.pool, self.supervisor, every=self.every,
                   exclusive=self.exclusive),
            Upkeep(self),  # sweeps: orphans, backlog, delivery rollup, consumer lag, retention
            Sinks(self),  # started last, stopped first: events out (tracker.sinks)
        ]

    # --- start / stop --------------------------------------------------------------------------

    async def start(self) -> None:
        logging.getLogger("apscheduler").setLevel(logging.WARNING)  # one line per job run is noise
        sweep_clock.quiet_skipped_runs()
        metrics.at_zero(self.config.vendors, retention.SWEPT,
                        ("listen", "ops_listen") if self.config.http.ops_listen else ("listen",))
        http = self.config.http
        main, ops_app = self._apps()
        for key, address in (("http.listen", http.listen), ("http.ops_listen", http.ops_listen)):
            if address and (why := connections.taken(address)):
                raise StartError(key, address, why)  # before the embedded cluster is made
        parts: list[tuple[str, Part]] = []
        if not self.config.database.dsn:
            parts.append(("embedded database", self._embedded_database))
        parts.append(("database", self._database))
        parts += [(type(c).__name__.lower(), _lifecycle(c)) for c in self.components]
        parts.append(("http.listen", self._listener("http.listen", http.listen, main)))
        if ops_app is not main:
            parts.append(("http.ops_listen", self._listener("http.ops_listen", http.ops_listen, ops_app)))
        parts += [("intake", _lifecycle(self.intake)), ("sweeps", self._sweeps),
                  ("watchdog", self._watchdog)]
        try:
            for name, part in parts:
                await self.supervisor.start(name, part)
        except BaseException:
            await self.supervisor.stop()  # what did start, in reverse
            raise
        # What startup made (modules, configuration, pools) lives as long as the daemon: frozen
        # out of the collector's sight, a full collection does not walk it again (pauses of
        # 20 ms under load, each delaying every request in flight: docs/performance.md). Its
        # garbage is collected first, so that only live objects are frozen.
        gc.collect()
        gc.freeze()
        systemd.notify("READY=1")
        self.ready = True
        log.info("tracker ready", **{k: f"{h}:{p}" for k, (h, p) in self.listen_addresses.items()})

    async def stop(self) -> None:
        """Stop claiming new work, let in-flight work finish or roll back, then close."""
        systemd.notify("STOPPING=1")
        log.info("tracker stopping")
        self.stopping.set()
        if self.ready:
            await self.drain.run()  # everything still runs; /readyz says we are going
        for c in self.components:  # claiming stops first: the poller's part stops late
            getattr(c, "stop_claiming", lambda: None)()
        closing = asyncio.get_running_loop().call_later(STOP_DATABASE_WAIT_S, self._close_connections)
        try:
            await self.supervisor.stop()
        finally:
            closing.cancel()
        log.info("tracker stopped")

    def _close_connections(self) -> None:
        """The stop has waited long: what still waits on the database (a write whose cancel
        waits for a server that does not answer: a partition, a storage stall) is let go. Every
        connection is closed; the server rolls back their work whenever it answers, and nothing
        answered 200 is lost. Without this the stop waited for the database, or for SIGKILL."""
        log.error("stop: the database did not answer; its connections closed",
                  waited_s=STOP_DATABASE_WAIT_S)
        for c in self.components:
            getattr(c, "close_connections", lambda: None)()
        if self.pool is not None:
            self.pool.terminate()

    # --- what components use (Host) -----------------------------------------------------------

    def every(self, name: str, seconds: float, sweep: Callable[[], Awaitable[None]]) -> None:
        """Run `sweep` every `seconds` (apscheduler), supervised as component `sweep:<name>`."""
        self.scheduler.add_job(self.supervisor.job(f"sweep:{name}", sweep), "interval",
                               seconds=seconds, id=name, max_instances=1, coalesce=True,
                               replace_existing=True)

    async def exclusive(self, name: str, job: Callable[[asyncpg.Connection], Awaitable]) -> bool:
        """Run a sweep on one replica at a time; True when this one ran it. The advisory lock is
        the session's, not a transaction's: the job commits as it goes (a long sweep in short
        transactions, never one that holds thousands of rows locked against polls and
        postbacks). The database unavailable and every other error are the supervisor's
        (Supervisor.job)."""
        async with self.pool.acquire() as conn:
            if not await conn.fetchval(q.TRY_SWEEP_LOCK, "tracker.sweep." + name):
                return False  # another replica runs it
            try:
                await job(conn)
                return True
            finally:
                await conn.execute(q.SWEEP_UNLOCK, "tracker.sweep." + name)

    # --- parts, in the order they start ----------------------------------------------------------

    async def _embedded_database(self) -> AsyncIterator[None]:
        self.embedded = EmbeddedPostgres(Path(self.config.database.state_dir))
        # In a thread, which a cancelled start cannot stop: it is waited for, and the cluster it
        # started is stopped, before the cancellation goes on (else it would outlive us).
        starting = asyncio.ensure_future(asyncio.to_thread(self.embedded.start))
        try:
            await asyncio.shield(starting)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await starting
                await asyncio.to_thread(self.embedded.stop)
            raise
        except (EmbeddedError, StateDirError, OSError) as e:
            raise database_start_error(e, None, self.config.database.state_dir) from None
        if self.embedded.orphan_stopped is not None:
            log.warning("an embedded cluster left running by a tracker that is gone was stopped "
                        "and started again", postmaster_pid=self.embedded.orphan_stopped)
        log.info("embedded PostgreSQL started", data_dir=str(self.embedded.data_dir),
                 dsn=self.embedded.dsn)
        keeping = self.supervisor.spawn("database:embedded", partial(
            keeper.keep_running, self.embedded, self.stopping.is_set), stopping=self.stopping.is_set)
        yield
        keeping.cancel()
        await asyncio.gather(keeping, return_exceptions=True)
        await asyncio.to_thread(self.embedded.stop)

    async def _database(self) -> AsyncIterator[None]:
        db = self.config.database
        dsn = db.dsn or self.embedded.dsn
        self.dsn = dsn  # components that keep connections of their own (tracker.postbacks)
        try:
            self.pool = await asyncpg.create_pool(dsn, min_size=db.pool_min, max_size=db.pool_max,
                                                  init=sessions.init, server_settings=sessions.session_settings(
                                                      self.config.health.wedged_after_s))
        except DB_ERRORS as e:
            raise database_start_error(e, db.dsn, db.state_dir) from None
        try:
            log.info("database connected", dsn=redact_dsn(dsn))
            metrics.database_up.set(1)
            async with self.pool.acquire() as conn:
                await clock.read(conn)  # before any part writes a time (tracker.db.clock)
                applied = await migrate(conn)
                if applied:
                    log.info("migrations applied", versions=[m.version for m in applied])
                vendors = list(self.config.vendors.values())
                await conn.execute(q.UPSERT_VENDOR_SETTINGS, [v.name for v in vendors],
                                   [v.expected_final_s for v in vendors])
        except BaseException as e:
            await self.pool.close()
            if isinstance(e, DB_ERRORS):  # a migration refused, the database lost meanwhile
                raise database_start_error(e, db.dsn, db.state_dir) from None
            raise
        yield
        await self.pool.close()

    def _apps(self) -> tuple[web.Application, web.Application]:
        """The postback listener's application, and the operations one (the same, unless
        http.ops_listen is set)."""
        http = self.config.http
        cut = [count_router_refusals, cut_slow_bodies(http.body_timeout_s)]
        main = web.Application(client_max_size=http.max_body_bytes, middlewares=cut)
        ops_app = web.Application(middlewares=cut) if http.ops_listen else main
        for app in {id(a): a for a in (main, ops_app)}.values():
            app.on_response_prepare.append(server_name)
            app.on_response_prepare.append(self.drain.close_connections)
        ops.add_routes(ops_app, self)
        for c in self.components:
            if hasattr(c, "add_routes"):
                c.add_routes(main)
        return main, ops_app

    def _listener(self, key: str, address: str, app: web.Application) -> Part:
        async def listener() -> AsyncIterator[None]:
            http = self.config.http
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=HTTP_SHUTDOWN_S,
                                   keepalive_timeout=http.keepalive_timeout_s, **connections.RUNNER_LIMITS)
            await runner.setup()
            host, port = connections.host_port(address)
            name = key.removeprefix("http.")
            try:
                server = await connections.serve(runner, host, port, http.max_connections, name)
            except OSError as e:  # in use, not ours to bind, no such host
                await runner.cleanup()
                raise StartError(key, address, e.strerror or str(e)) from None
            sock = server.sockets[0].getsockname()  # the real port when port 0 was asked for
            self.listen_addresses[name] = (sock[0], sock[1])
            yield
            server.close()  # no new connections; then the runner answers in-flight requests
            await runner.cleanup()
        return listener

    async def _sweeps(self) -> AsyncIterator[None]:
        self.scheduler.start()  # the jobs components added with every()
        watching = self.supervisor.spawn("sweeps:clock", lambda: sweep_clock.keep_planned(
            self.scheduler, self.stopping.is_set), stopping=self.stopping.is_set)
        yield
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        self.scheduler.shutdown(wait=False)  # a sweep in flight is cancelled: it rolls back

    async def _watchdog(self) -> AsyncIterator[None]:
        interval = systemd.watchdog_interval_s()
        if not interval:
            yield
            return
        pinging = self.supervisor.spawn(
            "watchdog", lambda: systemd.ping_watchdog(interval, self.supervisor.wedged),
            stopping=self.stopping.is_set)
        yield
        pinging.cancel()
        await asyncio.gather(pinging, return_exceptions=True)

def _lifecycle(component) -> Part:
    async def part() -> AsyncIterator[None]:
        await component.start()
        yield
        await component.stop()
    return part
