"""The sweeps' schedule kept through steps of the wall clock. apscheduler 3 plans each run as a
wall-clock time: when the clock stepped back (NTP, a VM restored), every sweep (windows, orphans,
rollup, retention, the claim backstop) waited as long as the step, without a word, /readyz
green. A supervised loop (component `sweeps:clock`) compares the wall clock with the monotonic
one every CHECK_S; when they part by more than STEP_S, every job is planned to run now (and then
every interval from the new time), and the step is logged."""
from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Callable

from apscheduler.schedulers.base import BaseScheduler

from tracker.logging import get_logger
from tracker.supervisor import beat

log = get_logger("tracker.sweeps")

CHECK_S = 1.0
STEP_S = 5.0  # a clock slewed by NTP moves far less; a step this large is no drift


class StepWatch:
    """`stepped()`: how far the wall clock moved beyond the monotonic one since the last call
    (negative: back)."""

    def __init__(self, wall: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic) -> None:
        self.wall, self.mono = wall, mono
        self.last = (wall(), mono())

    def stepped(self) -> float:
        now = (self.wall(), self.mono())
        moved = (now[0] - self.last[0]) - (now[1] - self.last[1])
        self.last = now
        return moved


class NoSkippedRuns(logging.Filter):
    """apscheduler's "Execution of job ... skipped: maximum number of running instances reached"
    is how a sweep that outlasts its interval looks (max_instances=1, by design): two lines a
    second for as long as the database stalls, over the lines that say why. A sweep that takes
    too long is the supervisor's to tell (busy without progress: wedged, on /readyz)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in str(record.msg)


def quiet_skipped_runs() -> None:
    """Install NoSkippedRuns on apscheduler's scheduler logger (once)."""
    logger = logging.getLogger("apscheduler.scheduler")
    if not any(isinstance(f, NoSkippedRuns) for f in logger.filters):
        logger.addFilter(NoSkippedRuns())


def replan(scheduler: BaseScheduler) -> int:
    """Every job due now; returns how many."""
    now = datetime.now(timezone.utc)
    jobs = scheduler.get_jobs()
    for job in jobs:
        job.modify(next_run_time=now)
    return len(jobs)


async def keep_planned(scheduler: BaseScheduler, stopping: Callable[[], bool],
                       watch: StepWatch | None = None) -> None:
    watch = watch or StepWatch()
    while not stopping():
        await asyncio.sleep(CHECK_S)
        moved = watch.stepped()
        if abs(moved) > STEP_S:
            jobs = replan(scheduler)
            log.warning("the wall clock stepped: every sweep planned again from now",
                        stepped_s=round(moved, 1), sweeps=jobs)
        beat().progress()
