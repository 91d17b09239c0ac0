"""The sweeps' schedule through steps of the wall clock (tracker.sweep_clock): apscheduler plans
runs by wall-clock times, so a step back of an hour held every sweep for an hour."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from tracker import sweep_clock
from tracker.sweep_clock import StepWatch


def test_a_step_is_what_the_wall_clock_moved_beyond_the_monotonic_one():
    t = {"wall": 1000.0, "mono": 50.0}
    watch = StepWatch(lambda: t["wall"], lambda: t["mono"])
    t["wall"] += 1.0
    t["mono"] += 1.0
    assert watch.stepped() == 0.0
    t["wall"] -= 119.0  # a second passed, and the clock was set back two minutes
    t["mono"] += 1.0
    assert watch.stepped() == -120.0
    t["wall"] += 3600.0
    t["mono"] += 2.0
    assert watch.stepped() == 3598.0


async def test_after_a_step_back_every_sweep_runs_again_at_once():
    scheduler = AsyncIOScheduler(timezone="UTC")
    ran = asyncio.Event()

    async def sweep() -> None:
        ran.set()

    scheduler.add_job(sweep, "interval", seconds=0.5, id="windows")
    scheduler.start()
    try:
        # as a step back of two minutes leaves it: the next run two minutes away
        scheduler.get_job("windows").modify(next_run_time=datetime.now(timezone.utc) + timedelta(minutes=2))
        await asyncio.sleep(0.7)
        assert not ran.is_set()
        assert sweep_clock.replan(scheduler) == 1
        await asyncio.wait_for(ran.wait(), 2)
        assert scheduler.get_job("windows").next_run_time < datetime.now(timezone.utc) + timedelta(seconds=1)
    finally:
        scheduler.shutdown(wait=False)


async def test_the_watch_loop_replans_and_says_so_on_a_step_only(monkeypatch):
    import structlog

    monkeypatch.setattr(sweep_clock, "CHECK_S", 0.0)
    steps = iter([0.2, -3600.0, 0.0])
    replanned = []
    monkeypatch.setattr(sweep_clock, "replan", lambda s: replanned.append(s) or 7)

    class Watch:
        def stepped(self) -> float:
            return next(steps)

    checks = iter(range(4))
    with structlog.testing.capture_logs() as logs:
        await sweep_clock.keep_planned("scheduler", lambda: next(checks) >= 3, Watch())
    assert replanned == ["scheduler"]
    [line] = [e for e in logs if e["event"].startswith("the wall clock stepped")]
    assert (line["stepped_s"], line["sweeps"]) == (-3600.0, 7)
