"""The daemon's intake (a part of `tracker run`): loops that take submitted rows in as messages
(take_in), woken by NOTIFY tracker_intake, with their own timer as the backstop.

Two loops by default (intake.workers): one reads and plans in Python while the other's batch is
written by PostgreSQL; they claim disjoint rows (FOR UPDATE SKIP LOCKED). The database being
unavailable is logged and the loop tries again at its next wake-up. Any other error (one that
is no row's fault: a row's is refused with the row) ends the loop: the supervisor logs and
counts it, starts the loop again with backoff, and /readyz names intake while it keeps failing.
"""
from __future__ import annotations

import asyncio
import contextlib
import time

from tracker import intake, metrics
from tracker.db import DB_ERRORS, is_outage
from tracker.db.listen import listen
from tracker.logging import get_logger
from tracker.supervisor import beat

log = get_logger("tracker.intake")

STOP_GRACE_S = 10.0  # stop(): time the batch in flight gets to commit
SUMMARY_EVERY_S = 60.0  # what was taken in: one line a minute at most (a trickle of rows made
# a line per batch: hundreds of thousands a day), a warning when some were refused


class IntakeLoops:
    def __init__(self, host) -> None:  # tracker.app.Host
        self.host = host
        self.wake = asyncio.Event()
        self.summary = _Summary()
        self.stopping = asyncio.Event()
        self.tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        supervisor, stopping = self.host.supervisor, self.stopping.is_set
        self.tasks = [supervisor.spawn("intake" if i == 0 else f"intake:{i}", self._loop, stopping=stopping)
                      for i in range(self.host.config.intake.workers)]
        self.tasks.append(supervisor.spawn("intake-listener", self._listen, stopping=stopping))

    async def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        self.tasks[-1].cancel()  # the listener holds nothing
        await self.host.supervisor.stop_tasks(self.tasks, STOP_GRACE_S)
        self.summary.flush()  # what was taken in since the last line

    async def _loop(self) -> None:
        config = self.host.config
        taken, refused = metrics.intake_rows.labels("taken"), metrics.intake_rows.labels("refused")
        while not self.stopping.is_set():
            self.wake.clear()  # before looking: a NOTIFY from now on wakes the next look
            try:
                with beat().working():  # progress: a batch taken in, or none waiting
                    async with self.host.pool.acquire() as conn:
                        result = await intake.take_in(conn, config, config.intake.batch_size)
                taken.inc(result.rows - result.refused)
                refused.inc(result.refused)
                if result.rows:
                    self.summary.add(result)
                    continue  # maybe more waiting (a batch is also cut short by its bytes)
                self.summary.add(result)  # none: a minute's pending counts are said, intake quiet
            except DB_ERRORS as e:
                if not is_outage(e):
                    raise  # the supervisor's: logged, counted, restarted, in /readyz
                log.warning("intake: database unavailable; will retry", error=type(e).__name__,
                            detail=str(e)[:200])
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wake.wait(), config.intake.sweep_interval_s)

    async def _listen(self) -> None:
        await listen(lambda: self.host.pool, "tracker_intake", self.wake.set, self.stopping.is_set)


class _Summary:
    """What the intake loops took in, a line a minute at most (the first batch at once), also
    when intake has gone quiet (a look that found nothing says what is pending) and at a stop;
    a warning, naming where the reasons are, when rows were refused meanwhile."""

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self.logged_at = -SUMMARY_EVERY_S
        self.rows = self.messages = self.refused = 0

    def add(self, result: intake.IntakeResult) -> None:
        self.rows += result.rows
        self.messages += result.messages
        self.refused += result.refused
        if self.clock() - self.logged_at >= SUMMARY_EVERY_S:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        counts = {"rows": self.rows, "messages": self.messages, "refused": self.refused}
        if self.refused:
            log.warning("intake: rows refused, their reasons in tracker.intake_problems", **counts)
        else:
            log.info("intake", **counts)
        self.logged_at, self.rows, self.messages, self.refused = self.clock(), 0, 0, 0
