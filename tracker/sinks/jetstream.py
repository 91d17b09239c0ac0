"""A NATS JetStream sink's loop: outbox -> JetStream, cursor moved on the publish acknowledgement.

Each turn reads up to `sinks.batch_size` events after the sink's cursor (tracker.read_events),
publishes each to `<subject_prefix>.<vendor>.<to_state>` with `Nats-Msg-Id` = event id, and
acknowledges (tracker.ack_events) the longest prefix of the batch that JetStream acknowledged.
One message's events go in waves: the second event of a message in a batch is published only
after the first was acknowledged, so the stream holds them in order; different messages go
concurrently. After a crash or a lost acknowledgement the events after the cursor are published
again; JetStream drops a repeated Nats-Msg-Id within the stream's duplicate window.

Failure paths: broker unreachable at start, stream missing (and create_stream false), publish
timeouts or errors (a broker restart), database unavailable: the error is logged, written
redacted to tracker.sinks.last_error, and the turn is tried again with backoff (0.5 s doubling to
30 s); the cursor never moves past an event JetStream has not acknowledged.
"""
from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timezone
from typing import Sequence

import asyncpg
import nats
import nats.errors
import nats.js.errors
from nats.js.api import StorageType, StreamConfig

from tracker import metrics
from tracker.config_types import NatsSinkConfig, SinksConfig
from tracker.db import DB_ERRORS
from tracker.db import queries as q
from tracker.logging import get_logger, scrub
from tracker.sinks import store
from tracker.sinks.event import encode_event
from tracker.supervisor import beat

log = get_logger("tracker.sinks.nats")

NATS_ERRORS = (nats.errors.Error, OSError, asyncio.TimeoutError)
MAX_BACKOFF_S = 30.0


class PublishFailed(Exception):
    """Part of a batch was not acknowledged; the cursor stops before it."""


def subject(prefix: str, vendor: str, to_state: str) -> str:
    return f"{prefix}.{vendor}.{to_state}"


def waves(rows: Sequence) -> list[list[int]]:
    """Indexes of `rows` in waves: the n-th wave holds each message's n-th event of the batch.
    Pure; every index once, and a message's events in increasing waves."""
    out: list[list[int]] = []
    seen: dict[int, int] = {}
    for i, r in enumerate(rows):
        k = seen.get(r["message_id"], 0)
        seen[r["message_id"]] = k + 1
        if k == len(out):
            out.append([])
        out[k].append(i)
    return out


def acked_prefix(acked: Sequence[bool]) -> int:
    """How many leading events were acknowledged: how far the cursor may move."""
    n = 0
    while n < len(acked) and acked[n]:
        n += 1
    return n


class NatsSink:
    kind = "nats"

    def __init__(self, cfg: NatsSinkConfig, pool: asyncpg.Pool, sinks: SinksConfig):
        self.cfg, self.pool, self.name = cfg, pool, cfg.name
        self.consumer = store.consumer_name(cfg.name)
        self.poll_interval_s, self.batch = sinks.poll_interval_s, sinks.batch_size
        self.changed = asyncio.Event()
        self.stopping = False
        self.published = False  # something was acknowledged since the last failure
        self._counts = {o: metrics.sink_deliveries.labels(self.name, o)
                        for o in ("delivered", "duplicate", "failed")}
        self._latency = metrics.sink_delivery_seconds.labels(self.name)

    def wake(self) -> None:
        self.changed.set()

    def stop(self) -> None:
        self.stopping = True
        self.changed.set()

    async def run(self) -> None:
        backoff = 0.5
        while not self.stopping:
            nc = None
            try:
                nc = await nats.connect(
                    servers=list(self.cfg.servers), name=f"sms-delivery-tracker sink {self.name}",
                    connect_timeout=max(1, int(self.cfg.timeout_s)), allow_reconnect=True,
                    max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                    error_cb=self._on_error, disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected)
                js = nc.jetstream(timeout=self.cfg.timeout_s)
                await self._ensure_stream(js)
                log.info("NATS sink started", sink=self.name, stream=self.cfg.stream,
                         subjects=f"{self.cfg.subject_prefix}.>")
                await self._publish_loop(js, nc)
                return
            except (*NATS_ERRORS, *DB_ERRORS, PublishFailed) as e:
                await self._failed(e)
                if self.published:  # it worked for a while: start the backoff again
                    backoff, self.published = 0.5, False
            finally:
                if nc is not None:
                    with contextlib.suppress(Exception):
                        await nc.close()
            if self.stopping:
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._until_stopping(), backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _until_stopping(self) -> None:
        while not self.stopping:
            self.changed.clear()
            await self.changed.wait()

    async def _ensure_stream(self, js) -> None:
        try:
            await js.stream_info(self.cfg.stream)
            return
        except nats.js.errors.NotFoundError:
            if not self.cfg.create_stream:
                raise PublishFailed(f"stream {self.cfg.stream} does not exist on the broker; create "
                                    "it, or set create_stream = true") from None
        await js.add_stream(StreamConfig(
            name=self.cfg.stream, subjects=[f"{self.cfg.subject_prefix}.>"],
            storage=StorageType.FILE, duplicate_window=self.cfg.duplicate_window_s))
        log.info("NATS stream created", sink=self.name, stream=self.cfg.stream,
                 duplicate_window_s=self.cfg.duplicate_window_s)

    async def _publish_loop(self, js, nc) -> None:
        while not self.stopping:
            self.changed.clear()
            if nc.is_closed:
                raise PublishFailed("the connection to the broker closed")
            with beat().working():  # progress: a batch published and acknowledged
                async with self.pool.acquire() as conn:
                    rows = await conn.fetch(q.READ_SINK_EVENTS, self.consumer, self.batch)
                if rows:
                    await self._publish(js, rows)
            if len(rows) >= self.batch:
                continue
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), self.poll_interval_s)

    async def _publish(self, js, rows: Sequence[asyncpg.Record]) -> None:
        acked = [False] * len(rows)
        failure: BaseException | None = None
        for wave in waves(rows):
            answers = await asyncio.gather(*(self._one(js, rows[i]) for i in wave),
                                           return_exceptions=True)
            for i, answer in zip(wave, answers):
                if isinstance(answer, BaseException):
                    failure = failure or answer
                    self._counts["failed"].inc()
                    continue
                acked[i] = True
                self._counts["duplicate" if answer.duplicate else "delivered"].inc()
            if failure is not None:
                break  # a message's later events wait for its earlier one
        done = acked_prefix(acked)
        if done:
            self.published = True
            now = datetime.now(timezone.utc)
            async with self.pool.acquire() as conn:
                await conn.execute(q.ACK_SINK_EVENTS, self.consumer, rows[done - 1]["event_id"])
                await store.succeeded(conn, self.name)
            for r in rows[:done]:
                self._latency.observe(max(0.0, (now - r["recorded_at"]).total_seconds()))
        if failure is not None:
            raise PublishFailed(f"{done} of {len(rows)} events acknowledged; then "
                                f"{type(failure).__name__}: {failure}") from failure

    async def _one(self, js, row: asyncpg.Record):
        return await js.publish(subject(self.cfg.subject_prefix, row["vendor"], row["to_state"]),
                                encode_event(row), timeout=self.cfg.timeout_s,
                                headers={"Nats-Msg-Id": str(row["event_id"])})

    async def _failed(self, e: BaseException) -> None:
        error = scrub(f"{type(e).__name__}: {e}")[:300]
        log.warning("NATS sink: not published; will retry", sink=self.name, error=error)
        with contextlib.suppress(*DB_ERRORS):
            async with self.pool.acquire() as conn:
                await store.failed(conn, self.name, error)

    # nats-py callbacks: its own reconnecting, in our log
    async def _on_error(self, e: Exception) -> None:
        log.warning("NATS connection error", sink=self.name, error=scrub(f"{type(e).__name__}: {e}")[:300])

    async def _on_disconnected(self) -> None:
        log.warning("NATS connection lost; reconnecting", sink=self.name)

    async def _on_reconnected(self) -> None:
        log.info("NATS connection back", sink=self.name)
