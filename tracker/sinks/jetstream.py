"""A NATS JetStream sink's loop: outbox -> JetStream, cursor moved on the publish acknowledgement.

Each turn of the replica holding the sink's reader lease (one at a time, as for a webhook sink;
dropped at a stop or a failure) reads up to `sinks.batch_size` events after the sink's cursor
(tracker.read_events),
publishes each to `<subject_prefix>.<vendor>.<to_state>` with `Nats-Msg-Id` = event id, and
acknowledges (tracker.ack_events) the longest prefix of the batch that JetStream acknowledged.
One message's events go in waves: the second event of a message in a batch is published only
after the first was acknowledged, so the stream holds them in order; different messages go
concurrently. After a crash or a lost acknowledgement the events after the cursor are published
again; JetStream drops a repeated Nats-Msg-Id within the stream's duplicate window.

Failure paths: broker unreachable or credentials refused at start (the first connection is
bounded: tracker.sinks.natslink), stream missing (and create_stream false) or not taking the
sink's subjects, publish timeouts or errors (a broker restart; a message taken by a stream other
than the configured one, refused by its Nats-Expected-Stream header), database unavailable
(tracker.db.is_outage): the error is logged, written redacted to tracker.sinks.last_error, and
the turn is tried again with backoff (0.5 s doubling to 30 s); the cursor never moves past an
event JetStream has neither acknowledged nor refused for good. An event the broker refuses
itself (over the stream's max_msg_size, or, headers included, over the server's max_payload:
tracker.sinks.natsmsg) is dead-lettered into tracker.sink_deliveries in the statement that
moves the cursor past it, so it holds up nothing; `tracker sinks redrive` makes it due again
and the loop publishes due rows (claimed, as a webhook sink's) at most a poll interval later.
A statement the database refuses (no outage) is raised to the supervisor: logged, counted,
restarted, named by /readyz while it lasts. So is the sink's row gone from the database
(forgotten under the daemon: store.SinkGone, within store.SEEN_EVERY_S): nothing is read for it
and no cursor is made again (the read and the acknowledgement go by the row) until it is back.
"""
from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import Iterable, Sequence

import asyncpg
import orjson
import nats.errors

from tracker import metrics
from tracker.config_types import VENDORS, NatsSinkConfig, SinksConfig
from tracker.db import DB_ERRORS, is_outage
from tracker.db import queries as q
from tracker.logging import get_logger, scrub
from tracker.sinks import store
from tracker.sinks.event import encode_event
from tracker.sinks.natslink import Link, NotConnected
from tracker.sinks.natsmsg import check_size, closed_why, headers, never_publishable, refusal, subject
from tracker.sinks.natsstream import PublishFailed, ensure_stream
from tracker.sinks.policy import Outcome
from tracker.throttle import Throttle
from tracker.supervisor import beat
from tracker.db import clock as db_clock

log = get_logger("tracker.sinks.nats")

NATS_ERRORS = (nats.errors.Error, OSError, asyncio.TimeoutError)
MAX_BACKOFF_S = 30.0
LEASE_MARGIN_S = 10.0  # a claimed dead letter's lease: the publish timeout and this


def refused_by_database(e: BaseException) -> bool:
    """A database error that is no outage (a data error, a constraint): not to be retried quietly."""
    return isinstance(e, DB_ERRORS) and not isinstance(e, (*NATS_ERRORS, PublishFailed)) and not is_outage(e)


def body_target(prefix: str, c: store.Claimed) -> tuple[str, bytes, int]:
    """A stored event's subject, body and id (a row of tracker.sink_deliveries keeps the body only)."""
    data = orjson.loads(c.body)["data"]
    return subject(prefix, data["vendor"], data["to_state"]), c.body, c.event_id


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
    """How many leading events were settled (acknowledged or dead-lettered): how far the cursor
    may move."""
    n = 0
    while n < len(acked) and acked[n]:
        n += 1
    return n


class NatsSink:
    kind = "nats"

    def __init__(self, cfg: NatsSinkConfig, pool: asyncpg.Pool, sinks: SinksConfig, *,
                 vendors: Iterable[str] = VENDORS):
        self.cfg, self.pool, self.name = cfg, pool, cfg.name
        # every vendor's, enabled or not: a disabled vendor's messages still end (window, intake)
        self.vendors = tuple(vendors)
        self.poll_interval_s, self.batch = sinks.poll_interval_s, sinks.batch_size
        self.changed = asyncio.Event()
        self.stopping = False
        self.published = False  # something was acknowledged since the last failure
        self.gone = False  # its row is gone from the database (Sinks.see): the loop fails
        self.acked = False  # the configured stream acknowledged an event since this daemon started
        self._counts = {o: metrics.sink_deliveries.labels(self.name, o)
                        for o in ("delivered", "duplicate", "failed", "dead")}
        self._latency = metrics.sink_delivery_seconds.labels(self.name)
        self._dead_lines = Throttle()  # events the stream refuses for good: a line a minute
        self.link = Link(cfg)
        self.token = secrets.token_hex(8)  # its claims of redriven dead letters
        self.lease_s = cfg.timeout_s + LEASE_MARGIN_S
        # Renewed each turn (a turn's publishes take a few timeouts at most). Before the lease
        # every replica read and published every event, the broker dropping all but one.
        self.reader_lease_s = 3 * cfg.timeout_s + LEASE_MARGIN_S
        self.claim_at = 0.0  # loop time: look for redriven dead letters then

    def wake(self) -> None:
        self.changed.set()

    def stop(self, grace_s: float = 0.0) -> None:
        """Stop after the turn under way; `grace_s` is unused: a publish cut off by the
        supervisor loses nothing (the cursor moves only on its acknowledgement)."""
        self.stopping = True
        self.link.stopped.set()  # a first connection under way gives up
        self.changed.set()

    async def run(self) -> None:
        backoff = 0.5
        while not self.stopping:
            if self.gone:  # even while the broker is down: it would never be said otherwise
                raise store.SinkGone(self.name)
            nc = None
            try:
                nc = await self.link.connect()
                js = nc.jetstream(timeout=self.cfg.timeout_s)
                await ensure_stream(js, self.cfg, self.vendors, again=await self._acked_before())
                log.info("NATS sink started", sink=self.name, stream=self.cfg.stream,
                         subjects=f"{self.cfg.subject_prefix}.>")
                await self._publish_loop(js, nc)
                return
            except (*NATS_ERRORS, *DB_ERRORS, PublishFailed) as e:
                if refused_by_database(e):
                    raise  # no remote condition: the supervisor's (logged, counted, /readyz)
                if self.stopping and isinstance(e, NotConnected):
                    return  # told to stop while connecting: nothing failed
                await self._failed(e)
                if self.published:  # it worked for a while: start the backoff again
                    backoff, self.published = 0.5, False
            finally:
                if nc is not None:
                    await self.link.close(nc)
                await self._drop_reader()
            if self.stopping:
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._until_stopping(), backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _drop_reader(self) -> None:
        """Stopped or failing (the broker away from this replica): another replica may read
        at once. With the database away too, the lease ends by itself."""
        with contextlib.suppress(*DB_ERRORS):
            async with self.pool.acquire() as conn:
                await store.drop_reader(conn, self.name, self.token)

    async def _acked_before(self) -> bool:
        """Has the configured stream acknowledged this sink's events, in this daemon's life or
        an earlier one's (sql/027)? Then a stream of that name missing now was lost with them."""
        if self.acked:
            return True
        async with self.pool.acquire() as conn:
            return await conn.fetchval(q.SINK_ACKED_STREAM, self.name) == self.cfg.stream

    async def _until_stopping(self) -> None:
        while not (self.stopping or self.gone):
            self.changed.clear()
            await self.changed.wait()

    async def _publish_loop(self, js, nc) -> None:
        while not self.stopping:
            if self.gone:
                raise store.SinkGone(self.name)
            self.changed.clear()
            if nc.is_closed:
                raise PublishFailed(f"the connection to the broker closed{closed_why(nc)}")
            with beat().working():  # progress: a batch published and acknowledged
                if asyncio.get_running_loop().time() >= self.claim_at:
                    await self._redriven(js, nc)
                async with self.pool.acquire() as conn:
                    reader = await store.take_reader(conn, self.name, self.token, self.reader_lease_s)
                    rows = await conn.fetch(q.READ_SINK_EVENTS, self.name, self.batch) if reader.ours else []
                if rows:
                    await self._publish(js, nc, rows)
            if len(rows) >= self.batch:
                continue
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), self.poll_interval_s)

    async def _publish(self, js, nc, rows: Sequence[asyncpg.Record]) -> None:
        settled = [False] * len(rows)  # acknowledged, or dead-lettered
        dead: dict[int, BaseException] = {}
        failure: BaseException | None = None
        for wave in waves(rows):
            answers = await asyncio.gather(*(self._one(js, nc, *self._target(rows[i])) for i in wave),
                                           return_exceptions=True)
            for i, answer in zip(wave, answers):
                if isinstance(answer, BaseException) and never_publishable(answer):
                    dead[i] = answer  # given up: its message's later events go on
                elif isinstance(answer, BaseException):
                    failure = failure or answer
                    self._counts["failed"].inc()
                    continue
                else:
                    self._counts["duplicate" if answer.duplicate else "delivered"].inc()
                settled[i] = True
            if failure is not None:
                break  # a message's later events wait for its earlier one
        done = acked_prefix(settled)
        if done:
            await self._settle(rows, done, {i: e for i, e in dead.items() if i < done})
        if failure is not None:
            why = closed_why(nc) or self.link.recent_error(2 * self.cfg.timeout_s)  # this publish's
            raise PublishFailed(f"{done} of {len(rows)} events settled; then "
                                f"{type(failure).__name__}: {failure}{why}") from failure

    async def _settle(self, rows: Sequence[asyncpg.Record], done: int, dead: dict[int, BaseException]) -> None:
        """Move the cursor past the first `done` events, and record the dead ones among them in
        the same statement (tracker.sink_failures; `tracker sinks redrive` sends them again)."""
        delivered = done > len(dead)
        async with self.pool.acquire() as conn:
            if dead:
                letters = [store.Unsettled(store.from_outbox(rows[i]), attempts=1, dead=True,
                                           last_error=refusal(e)) for i, e in dead.items()]
                await store.settle(conn, self.name, self.token, self.lease_s, letters,
                                   rows[done - 1]["event_id"], delivered)
            else:
                await store.ack(conn, self.name, rows[done - 1]["event_id"])
                await store.succeeded(conn, self.name)
            if delivered and not self.acked:  # once a daemon's life: which stream took them
                await conn.execute(q.SET_SINK_ACKED_STREAM, self.name, self.cfg.stream)
        for i, e in dead.items():
            self._counts["dead"].inc()
            if (left_out := self._dead_lines.allow(None)) is not None:
                log.warning("event dead-lettered", sink=self.name, event_id=rows[i]["event_id"],
                            error=refusal(e), left_out=left_out)
        self.published = self.published or delivered
        self.acked = self.acked or delivered
        now = db_clock.now()
        for i, r in enumerate(rows[:done]):
            if i not in dead:
                self._latency.observe(max(0.0, (now - r["recorded_at"]).total_seconds()))

    async def _redriven(self, js, nc) -> None:
        """Publish due rows of tracker.sink_deliveries (dead letters an operator redrove), at
        most once per poll interval unless a full batch came: claimed, published, recorded."""
        loop = asyncio.get_running_loop()
        async with self.pool.acquire() as conn:
            claimed = await store.claim(conn, self.name, self.batch, self.lease_s, self.token)
        self.claim_at = loop.time() + (0.0 if len(claimed) >= self.batch else self.poll_interval_s)
        if not claimed:
            return
        answers = await asyncio.gather(*(self._one(js, nc, *body_target(self.cfg.subject_prefix, c))
                                         for c in claimed), return_exceptions=True)
        results = []
        for c, answer in zip(claimed, answers):
            if not isinstance(answer, BaseException):
                self._counts["duplicate" if answer.duplicate else "delivered"].inc()
                results.append(store.Result(c.event_id, Outcome.delivered))
                continue
            # refused again: dead again; not sent (broker down): tried again after the backoff's cap
            outcome = Outcome.dead if never_publishable(answer) else Outcome.failed
            self._counts[outcome.value].inc()
            results.append(store.Result(c.event_id, outcome, MAX_BACKOFF_S, None, refusal(answer)))
        async with self.pool.acquire() as conn:
            await store.record(conn, self.name, self.token, results)
        log.info("redriven events published", sink=self.name, claimed=len(claimed),
                 delivered=sum(r.outcome is Outcome.delivered for r in results))

    def _target(self, row: asyncpg.Record) -> tuple[str, bytes, int]:
        return (subject(self.cfg.subject_prefix, row["vendor"], row["to_state"]), encode_event(row),
                row["event_id"])

    async def _one(self, js, nc, to: str, body: bytes, event_id: int):
        """Publish one event into the configured stream only (a PubAck from another stream would
        move the cursor past events the stream never got); one too large is refused here."""
        hdrs = headers(event_id, self.cfg.stream)
        check_size(body, hdrs, nc.max_payload)
        return await js.publish(to, body, timeout=self.cfg.timeout_s, stream=self.cfg.stream, headers=hdrs)

    async def _failed(self, e: BaseException) -> None:
        error = scrub(f"{type(e).__name__}: {e}")[:300]
        log.warning("NATS sink: not published; will retry", sink=self.name, error=error)
        try:
            async with self.pool.acquire() as conn:
                await store.failed(conn, self.name, error)
        except DB_ERRORS as db_error:
            if not is_outage(db_error):
                raise
            log.warning("NATS sink: its error not recorded (database unavailable)", sink=self.name,
                        error=type(db_error).__name__)
