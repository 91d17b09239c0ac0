"""Operations endpoints: /healthz (alive), /readyz (ready for work, or 503 naming every
problem), /metrics (Prometheus text).

Ready means: the database answers (within READY_TIMEOUT_S), no migration is pending, no
submission row waits longer than `health.intake_stall_s` to be taken in, no stored postback
waits longer than `health.postbacks_stall_s` to be applied (two lookups in partial indexes),
and no component is failing again and again or wedged (tracker.supervisor, in memory).
Each /readyz and a periodic sweep (count_backlog) refresh the backlog gauges.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
from typing import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tracker import metrics
from tracker.config_types import HealthConfig
from tracker.db import DB_ERRORS, is_outage, keeper, wanting_resources
from tracker.db import queries as q
from tracker.db.migrate import pending
from tracker.http import status
from tracker.logging import scrub
from tracker.metrics import REGISTRY
from tracker.supervisor_health import Problem


READY_TIMEOUT_S = 2.0
BACKLOG_ACQUIRE_S = 10.0  # the backlog sweep's period
BACKLOG_COUNT_MAX = 100_000  # the backlog gauges count up to this many rows: bounded work


class PoolBusy(Exception):
    """Every connection of the pool in use for as long as the backlog sweep waited: the work's
    load, not the database's absence (the sweep fails, logged and counted; the gauges stay)."""


def stalls(intake_s: float | None, postbacks_s: float | None, health: HealthConfig,
           idle_s: Callable[[str], float | None] = lambda _: None,
           head_held_s: float | None = None) -> list[Problem]:
    """Work waiting longer than it should, while the component that should do it has made no
    progress for as long (a campaign's backlog taken in batch after batch is not a stall:
    answering 503 then would turn a load balancer's postbacks away). `idle_s(component)`:
    seconds since its last progress here, None when it does not run here. Intake takes the
    oldest rows first, so the same row heading the queue for longer than the limit
    (`head_held_s`) is a stall however busy intake is: a row another session holds locked is
    passed over, batch after batch. Pure."""
    out = []

    def stalled(waited: float | None, limit: float, component: str) -> bool:
        if waited is None or waited <= limit:
            return False
        idle = idle_s(component)
        return idle is None or idle > limit

    limit = health.intake_stall_s
    if stalled(intake_s, limit, "intake"):
        out.append(Problem("intake", f"the oldest submission row has waited {intake_s:.0f} s to be "
                                     f"taken in (limit {limit:g} s)"))
    elif intake_s is not None and intake_s > limit and head_held_s is not None and head_held_s > limit:
        out.append(Problem("intake", f"the oldest submission row has waited {intake_s:.0f} s to be "
                                     f"taken in (limit {limit:g} s) while intake took others in: "
                                     f"is it held locked by another session?"))
    if stalled(postbacks_s, health.postbacks_stall_s, "postbacks"):
        out.append(Problem("postbacks", f"the oldest stored postback has waited {postbacks_s:.0f} s "
                                        f"to be applied (limit {health.postbacks_stall_s:g} s)"))
    return out


class HeadClock:
    """How long the same submission row has headed the queue, by this daemon's own clock. The
    age of what waits is the larger of that and the age its created_at gives: a created_at the
    sender wrote in the future (counted as now) cannot hide a stall from /readyz then."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.head: int | None = None
        self.since = 0.0

    def age(self, head: int | None, stated_s: float | None) -> float | None:
        if head is None:
            self.head = None
            return stated_s
        now = self.clock()
        if head != self.head:
            self.head, self.since = head, now
        return max(stated_s or 0.0, now - self.since)

    def held_s(self) -> float | None:
        """How long the head last given to age() has headed the queue; None: no head."""
        return None if self.head is None else self.clock() - self.since


def record_ages(intake_s: float | None, postbacks_s: float | None) -> None:
    metrics.intake_oldest_age.set(max(0.0, intake_s or 0.0))
    metrics.postbacks_oldest_age.set(max(0.0, postbacks_s or 0.0))


async def count_backlog(pool, heads: HeadClock) -> None:
    """Refresh the backlog gauges: submission rows and postbacks waiting, and for how long
    (a periodic sweep: its errors, the database unavailable included, are Supervisor.job's)."""
    try:  # a busy pool is waited for (the sweep's own period), and is no outage: the gauges
        # keep their values, or they hid IntakeStalled under a large backlog's load
        conn = await pool.acquire(timeout=BACKLOG_ACQUIRE_S)
    except TimeoutError:
        raise PoolBusy(f"no connection free in the pool within {BACKLOG_ACQUIRE_S:g} s") from None
    except DB_ERRORS as e:
        if is_outage(e):
            database_seen(False)
        raise
    try:  # the look bounded as /readyz's: a database gone silent read as up for 90 s, unless
        # something happened to ask /readyz (the ops listener is kept off the load balancer)
        async with asyncio.timeout(READY_TIMEOUT_S):
            counts = await conn.fetchrow(q.COUNT_WAITING, BACKLOG_COUNT_MAX)
            ages = await conn.fetchrow(q.OLDEST_WAITING)
    except DB_ERRORS as e:
        if is_outage(e):  # (a statement refused: the database answered, the sweep fails)
            database_seen(False)
        raise
    finally:  # (bounded too: after a cancel, asyncpg waits for the server to confirm it)
        with contextlib.suppress(Exception):
            await pool.release(conn, timeout=READY_TIMEOUT_S)
    database_seen(True)
    metrics.intake_waiting.set(counts["intake"])
    metrics.postbacks_waiting.set(counts["postbacks"])
    record_ages(heads.age(ages["intake_head"], ages["intake_s"]), ages["postbacks_s"])


def database_seen(answered: bool) -> None:
    """tracker_database_up: 0 also while it answers but refuses work for want of resources
    (tracker.db.wanting_resources: its disk full); while the database does not answer, the
    backlog gauges say nothing (NaN): their last values, frozen, kept an alert firing on a stall
    long gone (IntakeStalled through an outage), and no alert said the database was away."""
    metrics.database_up.set(1 if answered and wanting_resources() is None else 0)
    if not answered:
        for gauge in (metrics.intake_waiting, metrics.intake_oldest_age, metrics.postbacks_waiting,
                      metrics.postbacks_oldest_age):
            gauge.set(math.nan)


def not_answering(e: BaseException) -> str:
    """/readyz's reason when the database failed the readiness query. Our own timeout's
    TimeoutError says nothing (an empty message): say what it means."""
    if isinstance(e, TimeoutError):
        return f"did not answer within {READY_TIMEOUT_S:g} s"
    detail = str(e)
    return scrub(f"not answering: {type(e).__name__}" + (f": {detail}" if detail else ""))[:300]


async def readiness(tracker) -> list[Problem]:
    """Every reason the tracker is not ready; none: ready."""
    if tracker.drain.under_way:
        return [Problem("tracker", f"stopping: draining for http.drain_s = {tracker.drain.seconds:g} s")]
    components = tracker.supervisor.problems()
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            # the acquire's timeout bounds the connection's hand-back too: after a cancel, asyncpg
            # waits for the server to confirm it, for ever where the server went silent
            async with tracker.pool.acquire(timeout=READY_TIMEOUT_S) as conn:
                todo = await pending(conn)
                ages = None if todo else await conn.fetchrow(q.OLDEST_WAITING)
    except Exception as e:  # any failure to reach the database means not ready
        if is_outage(e):
            database_seen(False)
        pg = getattr(tracker, "embedded", None)
        why = keeper.not_running(pg) if pg is not None and keeper.seen_stopped(pg) else not_answering(e)
        return [Problem("database", why), *components]
    database_seen(True)
    if (wanting := wanting_resources()) is not None:  # the stalls it causes would say less
        return [Problem("database", scrub(f"refusing work for want of resources: {wanting}")[:300]),
                *components]
    if todo:
        versions = ", ".join(str(m.version) for m in todo)
        return [Problem("migrations", f"pending: {versions}"), *components]
    intake_s = tracker.heads.age(ages["intake_head"], ages["intake_s"])
    record_ages(intake_s, ages["postbacks_s"])
    return stalls(intake_s, ages["postbacks_s"], tracker.config.health,
                  tracker.supervisor.idle_s, tracker.heads.held_s()) + components


def add_routes(app: web.Application, tracker) -> None:
    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(_request: web.Request) -> web.Response:
        problems = await readiness(tracker)
        if not problems:
            return web.json_response({"status": "ready"})
        return web.json_response(
            {"status": "unready", "problems": [dataclasses.asdict(p) for p in problems]},
            status=503)

    async def metrics_page(_request: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    status.add_routes(app, tracker)  # GET /status: the human page (tracker.http.status)
