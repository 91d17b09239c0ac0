"""`tracker run`: the daemon. A thin shell that wires the database, the HTTP listeners, the
intake loop and the periodic sweeps together, and takes them down in order on SIGTERM."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import Awaitable, Callable

import asyncpg
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from tracker import intake, systemd
from tracker.config import redact_dsn
from tracker.config_types import Config
from tracker.db import DB_ERRORS
from tracker.db import queries as q
from tracker.db import reducer
from tracker.db.embedded import EmbeddedPostgres
from tracker.db.migrate import migrate
from tracker.http import ops
from tracker.logging import get_logger

log = get_logger("tracker.app")



class Tracker:
    def __init__(self, config: Config):
        self.config = config
        self.embedded: EmbeddedPostgres | None = None
        self.pool: asyncpg.Pool | None = None
        self.runners: list[web.AppRunner] = []
        self.tasks: list[asyncio.Task] = []
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self.stopping = asyncio.Event()
        self.intake_wake = asyncio.Event()
        self.listen_addresses: dict[str, tuple[str, int]] = {}
        # Parts with their own lifecycle: each has `async start()`, `async stop()` and may have
        # `add_routes(app)` for the postback listener. Started in order, stopped in reverse.
        self.components: list = self._components()

    def _components(self) -> list:
        from tracker.poller.engine import Poller
        from tracker.postbacks import Postbacks

        return [
            Postbacks(self),
            Poller(self),
        ]

    # --- start / stop --------------------------------------------------------------------------

    async def start(self) -> None:
        logging.getLogger("apscheduler").setLevel(logging.WARNING)  # one line per job run is noise
        dsn = self.config.database.dsn
        if not dsn:
            self.embedded = EmbeddedPostgres(Path(self.config.database.state_dir))
            await asyncio.to_thread(self.embedded.start)
            dsn = self.embedded.dsn
            log.info("embedded PostgreSQL started", data_dir=str(self.embedded.data_dir), dsn=dsn)
        self.pool = await asyncpg.create_pool(
            dsn, min_size=self.config.database.pool_min, max_size=self.config.database.pool_max)
        log.info("database connected", dsn=redact_dsn(dsn))
        async with self.pool.acquire() as conn:
            applied = await migrate(conn)
            if applied:
                log.info("migrations applied", versions=[m.version for m in applied])
            vendors = list(self.config.vendors.values())
            await conn.execute(q.UPSERT_VENDOR_SETTINGS, [v.name for v in vendors],
                               [v.expected_final_s for v in vendors])
        for c in self.components:
            await c.start()
        await self._start_http()
        self.tasks.append(asyncio.create_task(self._intake_loop(), name="intake"))
        self.tasks.append(asyncio.create_task(self._listen_intake(), name="intake-listener"))
        self.scheduler.add_job(self._sweep_orphans, "interval", seconds=10, id="orphans",
                               max_instances=1, coalesce=True)
        self.scheduler.start()
        interval = systemd.watchdog_interval_s()
        if interval:
            self.tasks.append(asyncio.create_task(self._watchdog(interval), name="watchdog"))
        systemd.notify("READY=1")
        log.info("tracker ready", **{k: f"{h}:{p}" for k, (h, p) in self.listen_addresses.items()})

    async def stop(self) -> None:
        """Stop claiming new work, let in-flight work finish or roll back, then close."""
        systemd.notify("STOPPING=1")
        log.info("tracker stopping")
        self.stopping.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for runner in self.runners:
            await runner.cleanup()  # finishes in-flight requests first
        for c in reversed(self.components):
            await c.stop()
        if self.pool is not None:
            await self.pool.close()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)
        log.info("tracker stopped")

    async def run_until_signal(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        try:
            await self.start()
            await self.stopping.wait()
        finally:
            await self.stop()

    # --- HTTP ----------------------------------------------------------------------------------

    async def _start_http(self) -> None:
        main = web.Application(client_max_size=self.config.http.max_body_bytes)
        ops_app = main
        if self.config.http.ops_listen:
            ops_app = web.Application()
        ops.add_routes(ops_app, self)
        for c in self.components:
            if hasattr(c, "add_routes"):
                c.add_routes(main)
        await self._serve(main, "listen", self.config.http.listen)
        if ops_app is not main:
            await self._serve(ops_app, "ops_listen", self.config.http.ops_listen)

    async def _serve(self, app: web.Application, name: str, address: str) -> None:
        host, port = address.rsplit(":", 1)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=10)
        await runner.setup()
        site = web.TCPSite(runner, host.strip("[]"), int(port))
        await site.start()
        self.runners.append(runner)
        sock = site._server.sockets[0].getsockname()  # the real port when port 0 was asked for
        self.listen_addresses[name] = (sock[0], sock[1])

    # --- intake --------------------------------------------------------------------------------

    async def _intake_loop(self) -> None:
        batch = self.config.intake.batch_size
        while not self.stopping.is_set():
            self.intake_wake.clear()  # before looking: a NOTIFY from now on wakes the next look
            try:
                async with self.pool.acquire() as conn:
                    result = await intake.take_in(conn, self.config, batch)
                if result.rows:
                    log.info("intake", rows=result.rows, messages=result.messages,
                             refused=result.refused)
                if result.rows >= batch:
                    continue  # more waiting
            except DB_ERRORS as e:
                log.warning("intake failed; will retry", error=str(e))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.intake_wake.wait(), self.config.intake.sweep_interval_s)

    async def _listen_intake(self) -> None:
        """Wake the intake loop on NOTIFY; the loop's own timer is the backstop."""
        while not self.stopping.is_set():
            try:
                async with self.pool.acquire() as conn:
                    wake = lambda *_: self.intake_wake.set()  # noqa: E731
                    await conn.add_listener("tracker_intake", wake)
                    try:
                        while not conn.is_closed():
                            await asyncio.sleep(1)
                    finally:
                        with contextlib.suppress(*DB_ERRORS):
                            await conn.remove_listener("tracker_intake", wake)
            except DB_ERRORS as e:
                log.warning("intake listener lost; reconnecting", error=str(e))
            await asyncio.sleep(1)

    # --- periodic sweeps (apscheduler) ---------------------------------------------------------

    async def _sweep_orphans(self) -> None:
        """Backstop for reports that raced their message's creation."""
        await self._exclusive("orphans", lambda conn: reducer.adopt_orphans(conn))

    async def _exclusive(self, name: str, job: Callable[[asyncpg.Connection], Awaitable]) -> None:
        """Run a sweep on one replica at a time (transaction-scoped advisory lock)."""
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                if await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtext($1))",
                                       "tracker.sweep." + name):
                    await job(conn)
        except DB_ERRORS as e:
            log.warning("sweep failed", sweep=name, error=str(e))

    async def _watchdog(self, interval: float) -> None:
        while True:
            systemd.notify("WATCHDOG=1")
            await asyncio.sleep(interval)
