"""The polling engine (DESIGN §5): a component of the daemon with `start()` and `stop()`.

Per polled vendor, a couple of loops each repeat: claim due messages (a leased batch, see
tracker.db.queries CLAIM_*), ask the vendor (tracker.poller.client, within the vendor's limits),
parse the answers (the vendor's sans-I/O adapter), and write the results back in one
transaction through the reducer, releasing the claim with each message's next poll time. No
per-message state is kept in memory: the schedule lives in `messages.next_poll_at`.

What happens on each failure path (per "poll": one status call, or one pair of Sparrow report
calls for a whole batch, or one page walk of engageSPARK's list endpoint):

- a report PostgreSQL would refuse: a stray NUL in a text or the raw payload is replaced by
  U+FFFD and the reading kept; one still unstorable (a time out of range) counts as malformed.
- timeout, connection error, 5xx, 429, malformed answer: no observation; the message is polled
  again after its backoff delay (at least the Retry-After, which also pauses the whole vendor);
  the error counts towards the circuit breaker (`circuit_failures` in a row open it).
- account-level error (bad key, suspended, no funds, login refused): the circuit opens at once
  and the messages are handed back unpolled, due again when a half-open probe may go
  (`circuit_reset_s`); no message state changes. A probe that succeeds closes the circuit.
- Retry-After longer than a request timeout: the messages still waiting are handed back
  unpolled, due when the vendor said.
- database unavailable: claiming or writing fails; the loop waits (1 s doubling to 30 s) and
  tries again. A claim whose write failed keeps its lease and comes due when the lease ends.
- a claim that outlived its lease (and so may be held by another poller now) writes nothing:
  the write first locks the messages it still holds (same owner and lease time).
- stop(): the loops stop claiming and get a few seconds to write what is in flight; anything
  still claimed is handed back, due at once.
- anything unexpected (a bug) in one batch: the loop's supervisor (tracker.supervisor) logs
  it with its traceback, counts it and starts the loop again after a short delay; that batch's
  claims come due when their lease ends.

Each loop runs under the supervisor as component `poll:<vendor>:<n>`; its progress is a tick
completed, or a poll answered (or failed) within a long tick.

Window expiry is a periodic sweep on one replica (Tracker.exclusive): a message not final when
its tracking window ends becomes `unknown` through the reducer (source `tracker`).
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from types import ModuleType
from typing import Any, NamedTuple, Sequence

import asyncpg

from tracker import adapters, metrics
from tracker.adapters.base import (AccountError, MessageRef, Observation, ParseError, StatusResult,
                                   cleaned, unstorable)
from tracker.config_types import VendorConfig
from tracker.core.reduce import recipient_key
from tracker.core.states import State
from tracker.db import DB_ERRORS
from tracker.db import queries as q
from tracker.db import reducer
from tracker.logging import get_logger
from tracker.poller import circuit as cb
from tracker.poller import schedule
from tracker.poller.client import AccountProblem, Deferred, TokenCache, TransportError, VendorClient
from tracker.supervisor import beat

log = get_logger("tracker.poller")


LOOPS_PER_VENDOR = 2  # one claims while the other waits on the vendor or the database
IDLE_MAX_S = 1.0  # an idle loop looks for due work at least this often
DB_RETRY_S = (1.0, 30.0)  # database unavailable: wait this long, doubling, up to the cap
STOP_GRACE_S = 5.0  # stop(): time in-flight polls get to finish and write
LIST_CLAIM_MAX = 5000  # engageSPARK list mode: messages claimed at once
LIST_MAX_PAGES = 20  # ... and list pages walked for them before asking per message
LIST_SLACK = timedelta(seconds=60)  # vendor's accept time vs our submitted_at, clock skew
WINDOW_BATCH = 1000  # window sweep: messages per reducer call
WINDOW_MAX = 50_000  # ... and per run (the next run continues)
HEALTH_FLUSH_S = 5.0  # poll counters go to tracker.poll_stats this often
MALFORMED = "malformed answer"  # unreadable, or holding what PostgreSQL cannot store
WINDOW_CODE = "window_closed"
WINDOW_TEXT = "tracking window ended without a final report"
STATES = {s.name: s for s in State}  # a state as the database spells it
CLOSED = cb.Circuit()


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Outcome:
    """What one poll did for one claimed message."""

    observations: list[Observation] = field(default_factory=list)
    polled: bool = True  # False: handed back unpolled (circuit open, told to wait)
    wait_s: float | None = None  # unpolled: come back after this long
    retry_after_s: float | None = None  # polled, and the vendor asked to wait this long


@dataclass
class Stats:
    """Counters since the last flush to tracker.poll_stats."""

    ok: int = 0
    failed: int = 0
    last_success_at: datetime | None = None
    last_error_at: datetime | None = None
    last_error: str | None = None

    def merge(self, later: "Stats") -> "Stats":
        """These counts followed by `later`'s."""
        return Stats(self.ok + later.ok, self.failed + later.failed,
                     later.last_success_at or self.last_success_at,
                     later.last_error_at or self.last_error_at,
                     later.last_error if later.last_error_at else self.last_error)


class Poller:
    """The component. `tracker` (tracker.app.Host) gives it config, pool, supervisor,
    scheduler, every() and exclusive()."""

    def __init__(self, tracker: Any):
        self.tracker = tracker
        self.owner = f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"
        self.workers: dict[str, VendorWorker] = {}
        self.tasks: list[asyncio.Task] = []
        self.stopping = asyncio.Event()
        self.job_ids: list[str] = []

    @property
    def pool(self) -> asyncpg.Pool:
        return self.tracker.pool

    async def start(self) -> None:
        for name, cfg in self.tracker.config.vendors.items():
            adapter = adapters.get(name)
            if not adapter.POLLS or not cfg.enabled:
                continue  # push-only (Skycore) or disabled: its windows still end (sweep)
            if not cfg.base_url:
                log.warning("vendor has no base_url: its messages are not polled", vendor=name)
                continue
            self.workers[name] = VendorWorker(self, adapter, cfg)
        for w in self.workers.values():
            for i in range(LOOPS_PER_VENDOR):
                self.tasks.append(self.tracker.supervisor.spawn(
                    f"poll:{w.name}:{i}", w.run, stopping=self.stopping.is_set))
        windows = [v.tracking_window_s for v in self.tracker.config.vendors.values() if v.enabled]
        sweep_s = min(10.0, max(0.5, min(windows, default=200.0) / 20))
        self._add_job(self.sweep_windows, sweep_s, "poll-windows")
        self._add_job(self.flush_health, HEALTH_FLUSH_S, "poll-health")
        log.info("poller started", owner=self.owner, vendors=sorted(self.workers),
                 window_sweep_s=sweep_s)

    def _add_job(self, fn, seconds: float, job_id: str) -> None:
        self.tracker.every(job_id, seconds, fn)  # supervised as component sweep:<job_id>
        self.job_ids.append(job_id)

    async def stop(self) -> None:
        self.stopping.set()
        for w in self.workers.values():
            w.wake.set()
        await self.tracker.supervisor.stop_tasks(self.tasks, STOP_GRACE_S)
        self.tasks.clear()
        for job_id in self.job_ids:
            with contextlib.suppress(Exception):  # gone with a scheduler already shut down
                self.tracker.scheduler.remove_job(job_id)
        try:
            async with self.pool.acquire() as conn:
                released = await conn.execute(q.RELEASE_ALL, self.owner)
            log.info("poller stopped; claims handed back", released=released.split()[-1])
        except DB_ERRORS as e:
            log.warning("poller stopped; claims not handed back (they come due when their "
                        "lease ends)", error=type(e).__name__)
        await self.flush_health()
        with contextlib.suppress(*DB_ERRORS):
            async with self.pool.acquire() as conn:
                await conn.execute(q.STOP_POLL_STATS, self.owner)
        for w in self.workers.values():
            await w.client.close()

    # --- periodic sweeps ------------------------------------------------------------------------

    async def sweep_windows(self) -> None:
        await self.tracker.exclusive("windows", end_windows)

    async def flush_health(self) -> None:
        if not self.workers:
            return
        workers = list(self.workers.values())
        taken = [w.take_stats() for w in workers]
        try:
            async with self.pool.acquire() as conn:
                await conn.execute(
                    q.ADD_POLL_STATS, [w.name for w in workers], self.owner,
                    [s.ok for s in taken], [s.failed for s in taken],
                    [s.last_success_at for s in taken], [s.last_error_at for s in taken],
                    [s.last_error for s in taken], [w.circuit.state for w in workers],
                    [w.circuit_since for w in workers])
        except DB_ERRORS as e:
            for w, s in zip(workers, taken):
                w.stats = s.merge(w.stats)  # keep the counts for the next flush
            log.warning("poll stats not written; will retry", error=type(e).__name__)


async def end_windows(conn: asyncpg.Connection) -> int:
    """Turn every message whose tracking window has ended, not final yet, `unknown`."""
    total = 0
    while total < WINDOW_MAX:
        rows = await conn.fetch(q.WINDOW_ENDED, WINDOW_BATCH)
        if not rows:
            break
        now = _utcnow()
        await reducer.apply(conn, "tracker", [
            Observation(r["vendor"], r["vendor_ref"], r["recipient"], State.unknown, WINDOW_CODE,
                        WINDOW_TEXT, event_at=now) for r in rows], received_at=now)
        total += len(rows)
        if len(rows) < WINDOW_BATCH:
            break
    if total:
        log.info("tracking windows ended", messages=total)
    return total


def storable(observations: list[Observation]) -> list[Observation]:
    """The reports as PostgreSQL will take them, so that one bad report never sinks the batch
    it would be written with: a stray NUL in a text or the raw payload is replaced (the
    reading is kept, adapters.base.cleaned); a report still unstorable (its time out of
    range, say) is left out."""
    out = []
    for o in observations:
        if unstorable(o) is not None:
            o = cleaned(o)
            if unstorable(o) is not None:
                continue
        out.append(o)
    return out


class Claimed(NamedTuple):  # (a tuple: cheap to make, one per claimed message)
    id: int
    ref: MessageRef
    key: tuple[str, str]  # (vendor_ref, recipient_key): how observations find it
    poll_count: int
    submitted_at: datetime
    window_ends_at: datetime | None


class VendorWorker:
    def __init__(self, poller: Poller, adapter: ModuleType, cfg: VendorConfig):
        self.poller = poller
        self.adapter = adapter
        self.cfg = cfg
        self.name = cfg.name
        self.client = VendorClient(cfg)
        self.client.gate = lambda: cb.reopens_in(self.circuit, time.monotonic(), cfg.circuit_reset_s)
        self.tokens = TokenCache(adapter, self.client) if hasattr(adapter, "login_request") else None
        self.has_list = hasattr(adapter, "list_request") and hasattr(adapter, "parse_list")
        # At most `concurrency` polls at once; a poll holds its slot until its outcome has
        # reached the circuit breaker, so that none starts after the circuit should have opened.
        self.slots = asyncio.Semaphore(cfg.concurrency)
        self.circuit = cb.Circuit()
        self.circuit_since = _utcnow()
        self.m_polls = {o: metrics.polls.labels(self.name, o) for o in ("ok", "error", "account")}
        self.m_seconds = metrics.poll_seconds.labels(self.name)
        self.stats = Stats()
        self.wake = asyncio.Event()
        self.rng = random.Random()

    # --- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        db_wait = DB_RETRY_S[0]
        while not self.poller.stopping.is_set():
            self.wake.clear()  # before the tick: stop() during it still cuts the sleep short
            try:
                with beat().working():
                    sleep_s = await self.tick()
                db_wait = DB_RETRY_S[0]
            except DB_ERRORS as e:
                log.warning("poll: database unavailable; retrying", vendor=self.name,
                            error=type(e).__name__, retry_in_s=db_wait)
                sleep_s, db_wait = db_wait, min(db_wait * 2, DB_RETRY_S[1])
                self._set_circuit(cb.release_probe(self.circuit))  # a probe that never went out
            except Exception:  # a bug: the supervisor says so and starts the loop again
                self._set_circuit(cb.release_probe(self.circuit))
                raise
            if sleep_s > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), sleep_s)

    async def tick(self) -> float:
        """Claim, poll and write one batch. Returns how long to sleep before the next."""
        wait = max(cb.reopens_in(self.circuit, time.monotonic(), self.cfg.circuit_reset_s),
                   self.client.pause_left())
        if wait > 0:
            return min(wait, IDLE_MAX_S)
        c, may = cb.allow(self.circuit, time.monotonic(), self.cfg.circuit_reset_s)
        self._set_circuit(c)
        if not may:
            return 0.05  # another loop is sending the half-open probe
        probe = c.state == "half_open"  # this batch is the probe: one message
        rows, lease_until, listing = await self.claim(probe)
        if not rows:
            if probe:
                self._set_circuit(cb.release_probe(self.circuit))
            return await self.idle_s()
        started = time.monotonic()
        outcomes = await (self.poll_list(rows) if listing else self.poll(rows))
        await self.write(rows, outcomes, lease_until)
        log.debug("poll batch", vendor=self.name, messages=len(rows), list=listing,
                  seconds=round(time.monotonic() - started, 3))
        return 0.0

    async def idle_s(self) -> float:
        async with self.poller.pool.acquire() as conn:
            nxt = await conn.fetchval(q.NEXT_DUE, self.name)
        if nxt is None:
            return IDLE_MAX_S
        return min(IDLE_MAX_S, max(0.02, (nxt - _utcnow()).total_seconds()))

    # --- claims ---------------------------------------------------------------------------------

    async def claim(self, probe: bool) -> tuple[list[Claimed], datetime | None, bool]:
        cfg = self.cfg
        async with self.poller.pool.acquire() as conn:
            listing = False
            if self.has_list and not probe and cfg.list_poll_min > 0:
                due = await conn.fetchval(q.COUNT_DUE, self.name, cfg.list_poll_min)
                listing = schedule.list_mode(due, cfg, self.has_list)
            limit = 1 if probe else (LIST_CLAIM_MAX if listing else cfg.batch_size)
            sql = q.CLAIM_DUE_BATCHES if self.adapter.BATCH_POLL else q.CLAIM_DUE
            rows = await conn.fetch(sql, self.name, limit, self.poller.owner,
                                    schedule.lease_s(cfg, limit))
        claimed = [
            Claimed(r["id"], MessageRef(r["vendor_ref"], r["recipient"]),
                    (r["vendor_ref"], r["recipient_key"]), r["poll_count"], r["submitted_at"],
                    r["window_ends_at"])
            for r in rows
        ]
        return claimed, (rows[0]["lease_until"] if rows else None), listing

    # --- polling --------------------------------------------------------------------------------

    async def poll(self, rows: Sequence[Claimed]) -> dict[int, Outcome]:
        """One poll per group: per message, or per batch id where one call answers a batch."""
        if self.adapter.BATCH_POLL:
            groups: dict[str, list[Claimed]] = {}
            for r in rows:
                groups.setdefault(r.ref.vendor_ref, []).append(r)
            parts = list(groups.values())
        else:
            parts = [[r] for r in rows]
        out: dict[int, Outcome] = {}
        todo = iter(parts)

        async def worker() -> None:  # a few workers, not a task per message
            for group in todo:
                out.update(await self.poll_group(group))

        await asyncio.gather(*(worker() for _ in range(min(len(parts), self.cfg.concurrency))))
        return out

    async def poll_group(self, rows: Sequence[Claimed]) -> dict[int, Outcome]:
        async with self.slots:
            return await self._poll_group(rows)

    async def _poll_group(self, rows: Sequence[Claimed]) -> dict[int, Outcome]:
        if self.circuit.state == "open":
            return self._unpolled(rows, self._reopen_wait())
        refs = [r.ref for r in rows]
        started = time.monotonic()
        try:
            result = await self._ask(refs)
            kept = storable(result.observations)
            if len(kept) < len(result.observations):  # the rest: not answered, malformed
                result.transient_error = result.transient_error or MALFORMED
            result.observations = kept
        except Deferred as d:
            self._set_circuit(cb.release_probe(self.circuit))
            return self._unpolled(rows, d.wait_s)
        except AccountProblem as e:
            result = StatusResult(account_error=e.error)
        except TransportError as e:
            result = StatusResult(transient_error=str(e))
        except ParseError:
            result = StatusResult(transient_error=MALFORMED)
        except ValueError as e:  # the adapter cannot build the request: configuration
            result = StatusResult(account_error=AccountError("config", str(e)))
        self.m_seconds.observe(time.monotonic() - started)
        return self._outcomes(rows, result)

    async def _ask(self, refs: list[MessageRef]) -> StatusResult:
        token = await self.tokens.get() if self.tokens else None
        responses = await self._fetch_all(self.adapter.status_requests(self.cfg, refs, token))
        if self.tokens and any(r.status == 401 for r in responses):
            self.tokens.forget(token)  # refused: log in again, once
            token = await self.tokens.get()
            responses = await self._fetch_all(self.adapter.status_requests(self.cfg, refs, token))
        return self.adapter.parse_status(responses, refs, _utcnow())

    async def _fetch_all(self, requests) -> list:
        if len(requests) == 1:
            return [await self.client.fetch(requests[0])]
        answers = await asyncio.gather(*(self.client.fetch(r) for r in requests),
                                       return_exceptions=True)
        for a in answers:
            if isinstance(a, BaseException):
                raise a
        return answers

    async def poll_list(self, rows: Sequence[Claimed]) -> dict[int, Outcome]:
        """engageSPARK with many messages in flight: walk the list endpoint from just before the
        oldest claimed message; whatever the pages do not show is asked for per message."""
        async with self.slots:
            out, rest = await self._walk_list(rows)
        if rest:
            out.update(await self.poll(rest))
        return out

    async def _walk_list(self, rows: Sequence[Claimed]) -> tuple[dict[int, Outcome], list[Claimed]]:
        """Outcomes of the messages the pages showed (or of all, on an error), and the rest."""
        by_ref = {r.ref.vendor_ref: r for r in rows}
        seen: dict[str, Observation] = {}
        after = min(r.submitted_at for r in rows) - LIST_SLACK
        req = self.adapter.list_request(self.cfg, after=after, page=1,
                                        size=getattr(self.adapter, "LIST_MAX_SIZE", 1000))
        pages = 0
        while req is not None and len(seen) < len(by_ref) and pages < LIST_MAX_PAGES:
            if self.circuit.state == "open":
                break
            started = time.monotonic()
            try:
                result = self.adapter.parse_list(await self.client.fetch(req), _utcnow(), req)
                # (a report PostgreSQL would refuse leaves its message to be asked on its own)
                result.observations = storable(result.observations)
            except Deferred as d:
                self._set_circuit(cb.release_probe(self.circuit))
                out = self._unpolled([r for r in rows if r.ref.vendor_ref not in seen], d.wait_s)
                out.update(self._observed([by_ref[ref] for ref in seen], seen))
                return out, []
            except TransportError as e:
                result = StatusResult(transient_error=str(e))
            except ParseError:
                result = StatusResult(transient_error=MALFORMED)
            self.m_seconds.observe(time.monotonic() - started)
            pages += 1
            if result.account_error or result.transient_error:
                out = self._outcomes([r for r in rows if r.ref.vendor_ref not in seen], result)
                out.update(self._observed([by_ref[ref] for ref in seen], seen))
                return out, []
            self._count("ok")
            for o in result.observations:
                if o.vendor_ref in by_ref:
                    seen[o.vendor_ref] = o
            req = result.next_request
        out = self._observed([by_ref[ref] for ref in seen], seen)
        return out, [r for r in rows if r.ref.vendor_ref not in seen]

    def _observed(self, rows: Sequence[Claimed], seen: dict[str, Observation]) -> dict[int, Outcome]:
        return {r.id: Outcome([seen[r.ref.vendor_ref]]) for r in rows}

    def _unpolled(self, rows: Sequence[Claimed], wait_s: float) -> dict[int, Outcome]:
        return {r.id: Outcome(polled=False, wait_s=wait_s) for r in rows}

    def _reopen_wait(self) -> float:
        return max(cb.reopens_in(self.circuit, time.monotonic(), self.cfg.circuit_reset_s), 0.1)

    def _outcomes(self, rows: Sequence[Claimed], result: StatusResult) -> dict[int, Outcome]:
        """Spread one poll's result over the messages it was for, and count it."""
        by_key = {r.key: r for r in rows}
        out = {r.id: Outcome(retry_after_s=result.retry_after_s) for r in rows}
        for o in result.observations:
            row = by_key.get((o.vendor_ref, recipient_key(self.name, o.recipient)))
            if row is not None:
                out[row.id].observations.append(o)
        if result.account_error is not None:
            e = result.account_error
            self._count("account", f"account error {e.code}: {e.reason}")
            wait = self._reopen_wait()
            for r in rows:
                if not out[r.id].observations:
                    out[r.id] = Outcome(polled=False, wait_s=wait)
        elif result.transient_error is not None:
            self._count("error", result.transient_error)
        else:
            self._count("ok")
        return out

    # --- the circuit and the counters -----------------------------------------------------------

    def _count(self, outcome: cb.Outcome, error: str | None = None) -> None:
        now = _utcnow()
        beat().progress()  # a poll answered (or failed): a long tick is not stuck
        self.m_polls[outcome].inc()
        if outcome == "ok":
            self.stats.ok += 1
            self.stats.last_success_at = now
            if self.circuit == CLOSED:
                return  # the usual case: nothing about the circuit to record
        else:
            self.stats.failed += 1
            self.stats.last_error_at, self.stats.last_error = now, (error or outcome)[:200]
        before = self.circuit.state
        self._set_circuit(cb.record(self.circuit, outcome, time.monotonic(),
                                    self.cfg.circuit_failures))
        if self.circuit.state == "open" and before != "open":
            log.warning("vendor circuit open: polls paused", vendor=self.name,
                        reason=self.stats.last_error, probe_in_s=self.cfg.circuit_reset_s)
        elif self.circuit.state == "closed" and before != "closed":
            log.info("vendor circuit closed: polling again", vendor=self.name)

    def _set_circuit(self, c: cb.Circuit) -> None:
        if c.state != self.circuit.state:
            self.circuit_since = _utcnow()
            metrics.circuit_open.labels(self.name).set(1 if c.state == "open" else 0)
        self.circuit = c

    def take_stats(self) -> Stats:
        s, self.stats = self.stats, Stats()
        return s

    # --- writing results ------------------------------------------------------------------------

    async def write(self, rows: Sequence[Claimed], outcomes: dict[int, Outcome],
                    lease_until: datetime) -> None:
        now = _utcnow()
        async with self.poller.pool.acquire() as conn, conn.transaction():
            held = {rec[0]: STATES[rec[1]] for rec in await conn.fetch(
                q.HOLD_CLAIMED, [r.id for r in rows], self.poller.owner, lease_until)}
            if len(held) < len(rows):
                log.warning("claim outlived its lease: results dropped for messages taken over",
                            vendor=self.name, dropped=len(rows) - len(held))
            if not held:
                return
            found: list[tuple[int, Observation]] = []
            releases: list[tuple[int, datetime, int]] = []
            unpolled = Outcome(polled=False, wait_s=0.0)
            for r in rows:
                if r.id not in held:
                    continue
                o = outcomes.get(r.id) or unpolled
                if o.polled:
                    wait = schedule.delay(self.cfg, r.poll_count + 1, self.rng.random())
                    at = schedule.next_poll_at(now, wait, r.window_ends_at, o.retry_after_s)
                else:
                    at = now + timedelta(seconds=o.wait_s or 0.0)
                for obs in o.observations:
                    found.append((r.id, obs))
                releases.append((r.id, at, 1 if o.polled else 0))
            await reducer.apply_polls(conn, held, found, releases, received_at=now)
