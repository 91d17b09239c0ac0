"""tracker.supervisor without I/O: restarts with backoff, failure counting, what /readyz and the
watchdog are told, and parts stopped in reverse."""
from __future__ import annotations

import asyncio

import pytest
import structlog

from tests.metrics_support import failures
from tests.sinks_support import wait_until
from tracker.config_types import HealthConfig
from tracker.supervisor import Supervisor, beat
from tracker.supervisor_health import Problem, restart_delay


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Delays:
    """An instant restart delay that records what it was asked to wait."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)
        await asyncio.sleep(0)


def supervisor(**health) -> tuple[Supervisor, Clock, Delays]:
    clock, delays = Clock(), Delays()
    config = HealthConfig(**{"restart_backoff_max_s": 1.0, "failures_before_unready": 3,
                             "wedged_after_s": 30.0, **health})
    return Supervisor(config, clock=clock, sleep=delays), clock, delays


def test_restart_delay_starts_at_a_tenth_of_a_second_and_doubles_up_to_the_cap():
    assert [restart_delay(n, 1.0) for n in range(1, 7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert restart_delay(100, 30.0) == 30.0


async def test_a_failing_loop_is_logged_once_per_failure_counted_and_restarted_with_backoff():
    sup, _, delays = supervisor()
    runs, stop = [], False

    async def loop() -> None:
        nonlocal stop
        runs.append(1)
        if len(runs) <= 5:
            raise ValueError(f"boom {len(runs)}")
        stop = True

    before = failures("unit-a")
    with structlog.testing.capture_logs() as logs:
        await asyncio.wait_for(sup.spawn("unit-a", loop, stopping=lambda: stop), 5)
    assert len(runs) == 6
    assert delays.asked == [0.1, 0.2, 0.4, 0.8, 1.0]
    assert failures("unit-a") - before == 5
    failed = [e for e in logs if e["event"] == "component failed"]
    assert [e["component"] for e in failed] == ["unit-a"] * 5
    assert [str(e["exc_info"]) for e in failed] == [f"boom {i}" for i in range(1, 6)]
    assert all(e["log_level"] == "error" for e in failed)
    assert len(logs) == 5  # nothing else logged it


async def test_failures_in_a_row_make_it_a_problem_until_progress():
    sup, _, _ = supervisor()
    fourth, recover, done = asyncio.Event(), asyncio.Event(), asyncio.Event()
    calls = 0

    async def loop() -> None:
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise RuntimeError("database said no")
        fourth.set()
        await recover.wait()
        with beat().working():
            pass
        done.set()
        await asyncio.Event().wait()

    with structlog.testing.capture_logs():
        task = sup.spawn("unit-b", loop, stopping=lambda: False)
        await asyncio.wait_for(fourth.wait(), 5)
    assert sup.problems() == [Problem("unit-b", "failed 3 times in a row; "
                                                "last: RuntimeError: database said no")]
    recover.set()
    await asyncio.wait_for(done.wait(), 5)
    assert sup.problems() == []  # progress ended the run of failures
    assert sup.components["unit-b"].failures_in_a_row == 0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_loop_that_returns_while_not_stopping_has_failed():
    sup, _, delays = supervisor()
    runs = 0

    async def loop() -> None:
        nonlocal runs
        runs += 1

    with structlog.testing.capture_logs() as logs:
        await asyncio.wait_for(sup.spawn("unit-c", loop, stopping=lambda: runs >= 2), 5)
    assert runs == 2 and delays.asked == [0.1]
    assert logs[0]["error"] == "returned while not stopping" and logs[0]["exc_info"] is None


async def test_a_failure_while_stopping_is_reported_but_not_restarted():
    sup, _, delays = supervisor()

    async def loop() -> None:
        raise KeyError("late")

    with structlog.testing.capture_logs() as logs:
        await asyncio.wait_for(sup.spawn("unit-d", loop, stopping=lambda: True), 5)
    assert delays.asked == [] and [e["component"] for e in logs] == ["unit-d"]


async def test_busy_without_progress_for_too_long_is_wedged():
    sup, clock, _ = supervisor(wedged_after_s=30.0)
    entered, step, done = asyncio.Event(), asyncio.Event(), asyncio.Event()
    stepped = asyncio.Event()

    async def loop() -> None:
        with beat().working():
            entered.set()
            await step.wait()
            beat().progress()  # a step of a long iteration
            stepped.set()
            await done.wait()
        await asyncio.Event().wait()  # idle: not busy

    task = sup.spawn("unit-e", loop, stopping=lambda: True)
    await asyncio.wait_for(entered.wait(), 5)
    clock.now += 30
    assert sup.wedged() == []  # not longer than the limit yet
    clock.now += 1
    assert sup.wedged() == [Problem("unit-e", "busy for 31 s without progress")]
    assert sup.problems() == sup.wedged()
    step.set()
    await asyncio.wait_for(stepped.wait(), 5)
    clock.now += 30
    assert sup.wedged() == []  # 30 s since its last step
    clock.now += 2
    assert [p.component for p in sup.wedged()] == ["unit-e"]
    done.set()
    await wait_until(lambda: sup.components["unit-e"].busy_since is None, 5, "the iteration's end", step=0)
    clock.now += 1000
    assert sup.wedged() == []  # it finished its iteration: idle is not wedged
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_failing_sweep_is_logged_counted_and_reported_not_raised():
    sup, _, _ = supervisor(failures_before_unready=2)
    outcome: list[Exception | None] = [KeyError("k"), ZeroDivisionError("x"), None]

    async def sweep() -> None:
        e = outcome.pop(0)
        if e:
            raise e

    job = sup.job("sweep:unit", sweep)
    before = failures("sweep:unit")
    with structlog.testing.capture_logs() as logs:
        await job()
        assert sup.problems() == []
        await job()
        assert [p.component for p in sup.problems()] == ["sweep:unit"]
        await job()
    assert sup.problems() == []
    assert failures("sweep:unit") - before == 2
    assert [(e["component"], type(e["exc_info"]).__name__) for e in logs] == [
        ("sweep:unit", "KeyError"), ("sweep:unit", "ZeroDivisionError")]


async def test_a_sweep_waits_out_the_database_unavailable_and_says_so():
    sup, _, _ = supervisor(failures_before_unready=1)
    errors = [ConnectionRefusedError("refused"), asyncio.TimeoutError()]

    async def sweep() -> None:
        try:
            raise errors.pop(0)
        except Exception as e:
            raise ValueError("a wrapper") from e  # the cause chain is read

    job = sup.job("sweep:outage", sweep)
    before = failures("sweep:outage")
    with structlog.testing.capture_logs() as logs:
        await job()
        await job()
    assert sup.problems() == [] and failures("sweep:outage") == before
    assert [(e["event"], e["log_level"], e["sweep"]) for e in logs] == [
        ("sweep failed: database unavailable", "warning", "sweep:outage")] * 2


async def test_a_stop_goes_on_without_a_task_that_does_not_end_when_cancelled(monkeypatch):
    # A task cancelled while asyncpg hands its connection back through a hung backend waits on
    # regardless: the stop waited with it, past the unit's TimeoutStopSec (SIGKILL, claims held).
    import tracker.supervisor as supervisor_mod
    monkeypatch.setattr(supervisor_mod, "CANCELLED_WAIT_S", 0.2)
    sup = Supervisor(HealthConfig())
    release = asyncio.Event()

    async def deaf() -> None:  # as a wait on a server that answers nothing
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue

    stuck = asyncio.create_task(deaf(), name="unit-deaf")
    quick = asyncio.create_task(asyncio.sleep(0), name="unit-quick")
    with structlog.testing.capture_logs() as logs:
        await asyncio.wait_for(sup.stop_tasks([stuck, quick], grace_s=0.1), 2)
    assert [(e["event"], e["component"]) for e in logs] == [
        ("component did not stop in time; cancelled (its work rolls back)", "unit-deaf"),
        ("component did not end after being cancelled; the stop goes on without it", "unit-deaf")]
    assert not stuck.done() and quick.done()
    release.set()
    await stuck


async def test_stop_tasks_cancels_a_loop_waiting_to_restart_at_once():
    async def long_delay(_seconds: float) -> None:
        await asyncio.Event().wait()

    sup = Supervisor(HealthConfig(), clock=Clock(), sleep=long_delay)
    stopping = False

    async def loop() -> None:
        raise RuntimeError("again")

    with structlog.testing.capture_logs() as logs:
        task = sup.spawn("unit-f", loop, stopping=lambda: stopping)
        await wait_until(lambda: sup.components["unit-f"].restarting, 5, "the restart delay", step=0)
        stopping = True
        await asyncio.wait_for(sup.stop_tasks([task], grace_s=60), 1)
    assert task.cancelled()
    assert [e["event"] for e in logs] == ["component failed"]  # no "did not stop in time"


async def test_parts_start_in_order_and_stop_in_reverse_even_when_one_fails_to_stop():
    sup, _, _ = supervisor()
    seen: list[str] = []

    def part(name: str, fail_stop: bool = False):
        async def run():
            seen.append(f"start {name}")
            yield
            seen.append(f"stop {name}")
            if fail_stop:
                raise RuntimeError("stuck")
        return run

    for name in ("database", "poller", "http"):
        await sup.start(name, part(name, fail_stop=name == "poller"))
    with structlog.testing.capture_logs() as logs:
        await sup.stop()
        await sup.stop()  # nothing left: a second stop does nothing
    assert seen == ["start database", "start poller", "start http",
                    "stop http", "stop poller", "stop database"]
    assert [(e["event"], e["part"]) for e in logs] == [("part failed to stop", "poller")]


async def test_a_part_that_fails_to_start_is_not_stopped_but_those_before_it_are():
    sup, _, _ = supervisor()
    seen: list[str] = []

    async def database():
        seen.append("start database")
        yield
        seen.append("stop database")

    async def listener():
        raise OSError("address in use")
        yield  # pragma: no cover

    await sup.start("database", database)
    with pytest.raises(OSError):
        await sup.start("http.listen", listener)
    await sup.stop()
    assert seen == ["start database", "stop database"]


def test_a_backlog_taken_in_batch_after_batch_is_not_a_stall_one_not_moving_is():
    from tracker.config_types import HealthConfig
    from tracker.http.ops import stalls

    health = HealthConfig(intake_stall_s=60.0, postbacks_stall_s=60.0)
    busy = {"intake": 0.5, "postbacks": 1.0}.get  # progress moments ago: a campaign's backlog
    assert stalls(300.0, 300.0, health, busy) == []
    stuck = {"intake": 120.0, "postbacks": 90.0}.get  # no progress for longer than the limit
    assert [p.component for p in stalls(300.0, 300.0, health, stuck)] == ["intake", "postbacks"]
    assert [p.component for p in stalls(300.0, None, health)] == ["intake"]  # not running here
    assert stalls(30.0, 30.0, health, stuck) == []  # young work is never a stall
    # busy, but the same row has headed the queue for longer than the limit: passed over
    [held] = stalls(300.0, 30.0, health, busy, head_held_s=61.0)
    assert held.component == "intake" and "held locked by another session" in held.reason
    assert stalls(300.0, 30.0, health, busy, head_held_s=59.0) == []
    assert stalls(30.0, 30.0, health, busy, head_held_s=300.0) == []  # its age is the sender's


def test_idle_time_counts_from_the_last_progress_of_any_loop_of_a_component():
    sup = Supervisor(HealthConfig(), clock=lambda: 100.0)
    a, b = sup.health("intake"), sup.health("intake:1")
    a.last_progress, b.last_progress = 40.0, 90.0
    assert sup.idle_s("intake") == 10.0
    assert sup.idle_s("postbacks") is None


def test_the_head_of_the_queue_ages_by_the_daemons_clock_too():
    # a created_at the sender wrote in the future reads as age 0: how long the same row has
    # headed the queue here says it waits all the same
    from tracker.http.ops import HeadClock
    now = [100.0]
    heads = HeadClock(lambda: now[0])
    assert heads.age(None, None) is None
    assert heads.age(7, 0.0) == 0.0  # first seen
    now[0] = 190.0
    assert heads.age(7, 0.0) == 90.0  # still the head
    assert heads.age(7, 500.0) == 500.0  # its created_at says more
    assert heads.age(8, 0.0) == 0.0  # another head: timed from now
    assert heads.held_s() == 0.0
    now[0] = 200.0
    assert heads.held_s() == 10.0
    assert heads.age(None, None) is None and heads.held_s() is None
    assert heads.age(8, 0.0) == 0.0  # none waited in between


async def test_a_failure_clears_what_the_component_said_blocked_it():
    # The publisher said "blocked by a lock held by pid N"; it then failed for another reason
    # (the database went away): /readyz went on naming a lock nobody held any more.
    sup, clock, _ = supervisor(failures_before_unready=100)
    calls = []

    async def loop() -> None:
        calls.append(1)
        if len(calls) == 1:
            beat().blocked("publication blocked by a lock: held by pid 42")
            clock.now += 60  # no progress for longer than wedged_after_s
            assert any("pid 42" in p.reason for p in sup.problems())
            raise ConnectionError("the database went away")
        clock.now += 1

    await asyncio.wait_for(sup.spawn("unit-blocked", loop, stopping=lambda: len(calls) >= 2), 5)
    assert not any("pid 42" in p.reason for p in sup.problems())


async def test_a_sweep_cancelled_by_the_stop_is_no_error_and_no_failure(caplog):
    # The daemon's stop shuts the scheduler down with a sweep in flight (retention, say):
    # apscheduler logged `Job ... raised an exception` with the CancelledError's traceback, an
    # error at every such stop. Now a line that says what happened; nothing failed.
    import logging

    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    sup = Supervisor(HealthConfig())
    started = asyncio.Event()

    async def slow() -> None:
        started.set()
        await asyncio.sleep(30)

    sched = AsyncIOScheduler()
    sched.add_job(sup.job("sweep:slow", slow), "interval", seconds=0.05, id="slow", max_instances=1)
    before = failures("sweep:slow")
    with caplog.at_level(logging.INFO), structlog.testing.capture_logs() as logs:
        sched.start()
        await asyncio.wait_for(started.wait(), 5)
        sched.shutdown(wait=False)
        await wait_until(lambda: any(e["event"].startswith("sweep cancelled") for e in logs), 5,
                         "the sweep's cancellation said")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert failures("sweep:slow") == before and sup.problems() == []
