"""One scenario, start to end: its database, the sandbox, the daemon(s), the application's load,
a consumer, the scenario's fault, then waiting for everything to settle (past the tracking
window) and judging the result against the ground truth."""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

from _chaos import checks
from _chaos.consumer import Consumer
from _chaos.env import TOKENS, Cluster, Daemon, SandboxProc, free_port, pool_for, write_config
from _chaos.load import Load
from _chaos.sink import Receiver, sink_config
from _chaos.sink import summary as sink_summary
from _chaos.spec import KNOBS, Result, Scenario, Size
from tracker.adapters import VENDORS

RECOVERED_LAG_S = 3.0  # caught up: nothing due, waiting or stored is older than this
STABLE_S = 4.0  # ... and it stays so this long (a dead replica's claims lag only as time passes)
RECOVERY_MAX_S = 90.0


class Run:
    def __init__(self, sc: Scenario, size: Size, cluster: Cluster, work: Path, seed: int) -> None:
        self.sc, self.size, self.cluster, self.work, self.seed = sc, size, cluster, work, seed
        self.db = f"chaos_{sc.key.replace('-', '_')}"
        self.result = Result(sc.title, informational=sc.informational)
        self.daemons: list[Daemon] = []
        self.sandbox = SandboxProc()
        self.recoveries: list[asyncio.Task] = []
        self.other = self.result.other
        self.began = 0.0
        self.killed: set[str] = set()  # daemons killed for good (two replicas)
        self.outages: list[checks.Outage] = []  # the faults' windows, for postbacks refused
        self._turn = itertools.count()

    # --- what faults use ---------------------------------------------------------------------

    async def at(self, second: float) -> None:
        """Sleep until `second` seconds after the load began."""
        await asyncio.sleep(max(0.0, self.began + second - time.monotonic()))

    def outage(self, daemon: Daemon | None = None) -> checks.Outage:
        """An outage of one daemon (None: of the database) beginning now; set its `end`."""
        o = checks.Outage(time.monotonic(), port=daemon and daemon.port)
        self.outages.append(o)
        return o

    async def ready(self, timeout_s: float = 60.0) -> None:
        """Wait until every live daemon answers /readyz 200 (the database is back for it)."""
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:
            while time.monotonic() < deadline:
                if all([await self._ready(http, d) for d in self.live()]):
                    return
                await asyncio.sleep(0.05)

    @staticmethod
    async def _ready(http: aiohttp.ClientSession, d: Daemon) -> bool:
        try:
            async with http.get(d.base + "/readyz") as r:
                return r.status == 200
        except (OSError, aiohttp.ClientError, TimeoutError):
            return False

    def live(self) -> list[Daemon]:
        return [d for d in self.daemons if d.alive]

    def push_url(self, vendor: str) -> str:
        """A postback URL given with a send (engageSPARK, Twilio): the live daemons in turn."""
        live = self.live() or self.daemons
        return live[next(self._turn) % len(live)].postback_url(vendor)

    @property
    def load_s(self) -> float:
        return self.size.load_s * self.sc.load_scale

    def recovery_from(self, t0: float) -> asyncio.Task:
        """Measure, in the background, how long after `t0` the tracker is caught up (await
        the task returned to wait for it)."""
        task = asyncio.create_task(self._recovery(t0))
        self.recoveries.append(task)
        return task

    async def _recovery(self, t0: float) -> float | None:
        """Seconds from t0 to the start of the first span of STABLE_S in which every sample
        says caught up; None if none began within RECOVERY_MAX_S."""
        since: float | None = None
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:
            while True:
                now = time.monotonic()
                if await self._caught_up(http):
                    since = now if since is None else since
                    if now - since >= STABLE_S:
                        return since - t0
                else:
                    since = None
                    if now - t0 > RECOVERY_MAX_S:
                        return None
                await asyncio.sleep(0.25)

    async def _caught_up(self, http: aiohttp.ClientSession) -> bool:
        try:
            for d in self.live():
                async with http.get(d.base + "/readyz") as r:
                    if r.status != 200:
                        return False
            conn = await asyncpg.connect(self.dsn, timeout=2)
            try:
                lags = await conn.fetchrow(checks.LAG, timeout=3)
            finally:
                await conn.close()
        except (OSError, aiohttp.ClientError, asyncpg.PostgresError, asyncpg.InterfaceError,
                TimeoutError):
            return False
        return all(lag is None or lag <= RECOVERED_LAG_S for lag in lags)

    # --- the run -------------------------------------------------------------------------------

    def vendor_settings_default(self) -> dict[str, dict[str, Any]]:
        w = self.sc.window_s
        common = dict(first_poll_s=0.5, max_poll_interval_s=2.0, tracking_window_s=w,
                      deadline_margin_s=max(1.0, w - 6.0), concurrency=8, request_timeout_s=1.0,
                      batch_size=50, list_poll_min=200, circuit_failures=5, circuit_reset_s=2.0,
                      expected_final_s=60.0)
        out = {}
        for v in VENDORS:  # the registered vendors: the load sends through every one
            out[v] = {**self.sandbox.vendor(v), **common, "rate_limit_per_s": self.size.limits.get(v, 10.0)}
            if v in TOKENS:
                out[v]["postback_token"] = TOKENS[v]
        return out

    async def execute(self) -> Result:
        started = time.monotonic()
        self.dsn = await self.cluster.create_db(self.db, self.sc.db_settings)
        await self.cluster.configure(self.sc.server_settings)
        await self.sandbox.start({**KNOBS, **self.sc.knobs, "seed": self.seed})
        self.receiver = Receiver(self.seed)  # the webhook sink's receiving end (sink.py)
        await self.receiver.start()
        try:
            await self._start_daemons()
            async with pool_for(self.dsn) as self.pool:
                await (self.sc.body or default_body)(self)
                await self._judge()
        finally:
            for t in self.recoveries:
                t.cancel()
            for d in self.daemons:
                if d.alive and await d.stop() != 0:
                    self.other["daemon stopped uncleanly"] = 1 + self.other.get(
                        "daemon stopped uncleanly", 0)
            await self.sandbox.stop()
            await self.receiver.stop()
            with contextlib.suppress(Exception):
                await self.cluster.configure({k: None for k in self.sc.server_settings})
                await self.cluster.drop_db(self.db)
        self.result.seconds = time.monotonic() - started
        return self.result

    async def _start_daemons(self) -> None:
        vendors = (self.sc.vendors or Run.vendor_settings_default)(self)
        for i in range(self.sc.replicas):
            name = "ab"[i] if self.sc.replicas > 1 else "tracker"
            port = free_port()
            cfg = write_config(self.work / f"{self.sc.key}-{name}.toml", self.dsn, port, vendors,
                               {**(self.sc.config or {}), **sink_config(self.receiver.url)})
            self.daemons.append(Daemon(name, cfg, self.work / f"{self.sc.key}-{name}.log", port))
        await asyncio.gather(*(d.start() for d in self.daemons))
        await self.sandbox.postback_url("skycore", self.daemons[0].postback_url("skycore"))
        await self.sandbox.postback_url("sparrow", self.daemons[-1].postback_url("sparrow"))

    async def settle(self, deadline_s: float) -> None:
        """Wait until every report has come and been applied and every window has closed."""
        deadline = time.monotonic() + deadline_s
        while True:
            await self.sandbox.collect()
            truth = await self.sandbox.truth()
            unsettled = sum(1 for t in truth if not t["settled"] and t["fate"] != "no_receipt")
            try:
                work = await self.pool.fetchrow(checks.OPEN_WORK)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                work = {"database": 1}
            if not unsettled and not self.sandbox.pending and not any(work.values()):
                return
            if time.monotonic() > deadline:
                self.result.details.append(
                    f"did not settle in {deadline_s:.0f} s: {dict(work)}, vendor side "
                    f"unsettled {unsettled}, postbacks to go {self.sandbox.pending}")
                return
            await asyncio.sleep(0.5)

    async def _judge(self) -> None:
        r = self.result
        consumer: Consumer | None = getattr(self, "consumer", None)
        await self.sandbox.collect()
        async with self.pool.acquire() as conn:
            lost = await checks.lost_postbacks(conn, self.sandbox.postbacks)
            r.postbacks_200, r.lost = lost.answered_200, lost.lost
            if lost.lost:
                r.details.append(f"postbacks answered 200: {lost.not_stored} not stored, "
                                 f"{lost.not_applied} stored but not applied")
            refused = checks.refused_postbacks(self.sandbox.postbacks, self.outages)
            if refused.refused:
                self.other["postbacks refused"] = refused.refused
                r.details.append(f"postbacks not answered 200: {dict(refused.by_answer)}")
            if self.outages:
                r.details.append(f"postback attempts not answered 200 inside the faults (allowed): "
                                 f"{refused.in_outage}")
            r.duplicates = await checks.duplicate_transitions(conn)
            load: Load | None = getattr(self, "load", None)
            if load is not None:
                finals = await checks.final_states(conn, await self.sandbox.truth(), load.keys,
                                                   load.refused)
                r.messages, r.wrong = finals.messages, finals.bad
                if finals.bad:
                    r.details.append(f"wrong {finals.wrong}, missing {finals.missing}, extra "
                                     f"{finals.extra}: {dict(finals.by_kind)}")
                    r.details += ["  e.g. " + e for e in finals.examples[:4]]
                r.details.append(f"application: {load.rows_written} rows written, "
                                 f"{len(load.refused)} numbers refused at send, "
                                 f"{load.send_failures} sends refused or failed, "
                                 f"{load.write_failures} writes retried")
            if consumer is not None:
                never = await consumer.never_read(self.pool)
                r.consumer = consumer.reread_after_ack + never + consumer.out_of_order
                r.details.append(
                    f"consumer: {len(consumer.read)} events, {consumer.crashes} crashes, "
                    f"{consumer.rereads} re-read before ack (allowed), re-read after ack "
                    f"{consumer.reread_after_ack}, never read {never}, out of order "
                    f"{consumer.out_of_order}")
        missing = await self.receiver.caught_up(self.pool, 120.0)
        for what, n in (("webhook events never delivered", len(missing)),
                        ("webhook events out of order", self.receiver.out_of_order()),
                        ("webhook deliveries badly signed", self.receiver.forged)):
            if n:
                self.other[what] = n
        r.details.append(sink_summary(self.receiver))
        r.details.append(f"polls answered: {checks.poll_answers(self.sandbox.requests)}")
        retry = checks.inside_retry_after(self.sandbox.requests)
        if retry:
            self.other["polls inside a Retry-After"] = retry
        r.rates = checks.poll_rates(self.sandbox.requests, self.size.limits)
        (self.work / f"{self.sc.key}-sandbox.json").write_bytes(orjson.dumps(
            {"requests": self.sandbox.requests, "postbacks": self.sandbox.postbacks}))
        windows = {w: checks.poll_rates(self.sandbox.requests, self.size.limits, w)
                   for w in (1.0, 5.0)}
        r.details.append("peak poll rate / limit over 1, 2 and 5 s: " + ", ".join(
            f"{v} {windows[1.0][v][0] / lim:.2f}/{got / lim:.2f}/{windows[5.0][v][0] / lim:.2f}x"
            f" ({got:.0f}/{lim:.0f} req/s over 2 s)" for v, (got, lim) in r.rates.items()))
        times = [await t for t in self.recoveries]
        if any(t is None for t in times):
            self.other["not recovered in 90 s"] = sum(t is None for t in times)
        if times and all(t is not None for t in times):
            r.recovery_s = max(times)
            if len(times) > 1:
                r.details.append("recovery after each fault: " + ", ".join(f"{t:.1f} s"
                                                                          for t in times))
        for d in self.daemons:
            if d.proc is not None and not d.alive and d.name not in self.killed:
                self.other["daemon died by itself"] = self.other.get("daemon died by itself", 0) + 1


async def default_body(run: Run) -> None:
    """The mixed load, the consumer and the fault together; then settle past the window."""
    size = run.size
    run.load = Load(run.sandbox.info["vendors"], run.dsn, run.push_url, size.rate, run.seed)
    run.consumer = Consumer(run.dsn, run.seed)
    consuming = asyncio.create_task(run.consumer.run())

    async def collect() -> None:
        while True:
            await asyncio.sleep(2)
            with contextlib.suppress(Exception):
                await run.sandbox.collect()

    collecting = asyncio.create_task(collect())
    run.began = time.monotonic()
    try:
        faults = [asyncio.create_task(run.sc.fault(run))] if run.sc.fault else []
        await run.load.run(run.load_s, list(size.campaigns))
        await asyncio.gather(*faults)
        await run.settle(run.sc.window_s + 90)
        run.consumer.stop.set()
        await asyncio.wait_for(consuming, 120)
    finally:
        collecting.cancel()
        consuming.cancel()
