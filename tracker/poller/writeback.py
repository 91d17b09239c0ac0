"""The poll worker's write-back (tracker.poller.worker.VendorWorker inherits it): a claim's
answers written in one transaction through the reducer, each message released with its next
poll time; kept for later while the database is away (an outage), written per message when the
database refuses the claim's statement itself, and a message refused even alone written without
its raw payload, then without its reports (logged, counted as a malformed answer).

It uses the worker's `pool`, `owner`, `name`, `cfg`, `clock`, `rng`, `health` and `unwritten`.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Sequence

from tracker import metrics
from tracker.db import DB_ERRORS, is_outage
from tracker.db import queries as q
from tracker.core.states import State
from tracker.db import reducer
from tracker.logging import get_logger
from tracker.poller import schedule
from tracker.poller.outcomes import Claimed, Outcome, Unwritten, without_raw

log = get_logger("tracker.poller")

STATES = {s.name: s for s in State}  # a state as the database spells it


def settled(o: Outcome) -> bool:
    """The answer was the vendor's last word on the message (Observation.settled)."""
    return bool(o.observations) and all(ob.settled for ob in o.observations)


class WriteBack:
    async def write_unwritten(self) -> None:
        """Write the answers the database refused before, while their claim's lease lasts (past
        it, the messages come due again anyway, and an error that is not an outage cannot hold
        the loop for longer). A lease run out and taken over writes nothing (write())."""
        while self.unwritten:
            batch = self.unwritten.pop()
            if self.clock.now() >= batch.lease_until:
                log.warning("poll answers not written: the database was away past their lease",
                            vendor=self.name, messages=len(batch.rows))
                metrics.poll_answers_lost.labels(self.name).inc(len(batch.rows))
                continue
            await self.write_claim(batch)
            log.info("poll answers written after the database came back", vendor=self.name,
                     messages=len(batch.rows))

    async def write_claim(self, claim: Unwritten) -> None:
        """Write a claim's answers. An outage keeps them for when the database answers; a
        statement it refuses (the claim's raw payloads past jsonb's 256 MB, say) would be
        refused again: the claim is written per message instead (write_alone)."""
        try:
            return await self.write(*claim)
        except DB_ERRORS as e:
            if is_outage(e):
                self.unwritten.append(claim)
                raise
            log.warning("poll answers refused by the database: written per message",
                        vendor=self.name, messages=len(claim.rows), error=type(e).__name__)
        for i, r in enumerate(claim.rows):
            try:
                await self.write_alone(r, claim.outcomes.get(r.id), claim.lease_until)
            except DB_ERRORS as e:
                if is_outage(e):  # the rest waits for the database, as a claim does
                    self.unwritten.append(Unwritten(claim.rows[i:], claim.outcomes,
                                                    claim.lease_until))
                raise

    async def write_alone(self, r: Claimed, o: Outcome | None, lease_until: datetime) -> None:
        """One message's answer; refused even alone, it is written without its raw payloads (a
        marker says why), then without its reports: logged, and counted as a malformed answer."""
        for dropping in ("raw payload", "report", None):
            try:
                return await self.write([r], {r.id: o} if o else {}, lease_until)
            except DB_ERRORS as e:
                if is_outage(e) or o is None or dropping is None:
                    raise
                why = f"refused by the database ({type(e).__name__})"
                o = (without_raw(o, why) if dropping == "raw payload"
                     else Outcome(polled=o.polled, wait_s=o.wait_s))
                log.warning("poll answer refused by the database: written without it",
                            vendor=self.name, message_id=r.id, dropped=dropping, error=why)
                metrics.poll_answers_dropped.labels(self.name, dropping).inc()
                self.health.record("error", f"answer {why}")

    async def write(self, rows: Sequence[Claimed], outcomes: dict[int, Outcome],
                    lease_until: datetime) -> None:
        """One transaction: lock the messages the claim still holds (a claim that outlived its
        lease, and may have been taken over, writes nothing for those), store the reports
        through the reducer and release each message with its next poll."""
        async with self.pool().acquire() as conn, conn.transaction():
            locked = await conn.fetch(q.HOLD_CLAIMED, [r.id for r in rows], self.owner, lease_until)
            held = {rec[0]: STATES[rec[1]] for rec in locked}
            if len(held) < len(rows):
                log.warning("claim outlived its lease: results dropped for messages taken over",
                            vendor=self.name, dropped=len(rows) - len(held))
                metrics.poll_answers_lost.labels(self.name).inc(len(rows) - len(held))
            if not held:
                return
            now = locked[0][2]  # the database's time (see HOLD_CLAIMED)
            found, releases = [], []
            handed_back = Outcome(polled=False, wait_s=0.0)
            for r in rows:
                if r.id not in held:
                    continue
                o = outcomes.get(r.id) or handed_back
                if o.polled:
                    wait = schedule.delay(self.cfg, r.poll_count + 1, self.rng.random())
                    # a vendor's Retry-After of days (or 1e400) waits no longer than a backoff can
                    after = o.retry_after_s and min(o.retry_after_s, self.cfg.max_poll_interval_s)
                    at = schedule.next_poll_at(now, wait, r.window_ends_at, after)
                    if r.window_ends_at is not None and settled(o):
                        at = max(at, r.window_ends_at)  # the vendor is done: nothing new to ask
                else:
                    at = now + timedelta(seconds=o.wait_s or 0.0)
                found += [(r.id, obs) for obs in o.observations]
                releases.append((r.id, at, 1 if o.polled else 0))
            await reducer.apply_polls(conn, held, found, releases, received_at=now,
                                      submitted_at={rec[0]: rec[3] for rec in locked})
