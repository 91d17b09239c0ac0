"""One supervisor for every background task of the daemon (docs/design.md#supervision).

Parts start in order and stop in reverse, as aiohttp's cleanup contexts do: a part is an async
generator function that starts something, yields once, and stops it when resumed. A part that
fails to start ends the start; the parts already started are stopped, in reverse.

Background loops run under `spawn`, periodic sweeps under `job`. An exception a component did
not handle itself (a loop handles expected database outages where they happen; a sweep's are
waited out by `job` until its next run) is logged once,
with its traceback and the component's name, counted in
`tracker_component_failures_total{component}`, and the loop starts again after 0.1 s, doubling
with each failure in a row up to `health.restart_backoff_max_s`. A sweep is not restarted: its
next run is its restart.

A component tells the supervisor how it is doing through its Beat (`beat()`, from inside its
task): `working()` around one iteration (busy on entry, progress on a clean exit), `busy()` around a
step that is no progress in itself (taking a connection) and `progress()` for a step of a long
iteration. From that the supervisor knows which component is
- failing: `failures_before_unready` failures in a row, with no progress in between;
- wedged: busy for longer than `wedged_after_s` without progress;
- blocked: it said (`blocked(reason)`) that it has work it cannot do for a cause outside the
  daemon (the publisher, when another session's transaction holds the publisher row), and has made no
  progress for longer than `wedged_after_s`.
/readyz reports all three; the systemd watchdog ping stops while a component is wedged (a
blocked one is not: restarting the daemon would not release another session's lock).
"""
from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from typing import AsyncIterator, Awaitable, Callable, Iterable, Iterator

from tracker import metrics
from tracker.config_types import HealthConfig
from tracker.db import is_outage
from tracker.logging import get_logger, scrub
from tracker.supervisor_health import (
    Health,
    Problem,
    blocked,
    failing,
    restart_delay,
    wedged,
)

log = get_logger("tracker.supervisor")

CANCELLED_WAIT_S = 5.0  # how long a stop waits for a cancelled task before going on without it

Part = Callable[[], AsyncIterator[None]]
Loop = Callable[[], Awaitable[None]]


# --- what a component tells ---------------------------------------------------------------------


class Beat:
    """A component's line to the supervisor."""

    def __init__(self, health: Health, clock: Callable[[], float]):
        self.health = health
        self.clock = clock

    @contextlib.contextmanager
    def working(self) -> Iterator[None]:
        """Around one iteration: busy inside it; a clean exit is progress."""
        with self.busy():
            yield
        self.progress()

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Around a step that is no progress in itself (taking a connection before the work):
        busy inside it, so that it shows as wedged if it hangs; its end changes nothing else."""
        self.health.busy_since = self.clock()
        try:
            yield
        finally:
            self.health.busy_since = None

    def progress(self) -> None:
        """A step of work done: the failures in a row end, and a busy component is not stuck."""
        self.health.failures_in_a_row = 0
        self.health.blocked = ""
        self.health.last_progress = self.clock()
        if self.health.busy_since is not None:
            self.health.busy_since = self.clock()

    def blocked(self, reason: str) -> None:
        """It has work it cannot do, for a cause outside the daemon (`reason` says which): no
        progress; /readyz names it with `reason` once that has lasted `wedged_after_s`."""
        self.health.blocked = reason


_UNSUPERVISED = Beat(Health("unsupervised"), time.monotonic)  # code run outside the supervisor
_current: contextvars.ContextVar[Beat] = contextvars.ContextVar("tracker_beat")


def beat() -> Beat:
    """The Beat of the component this code runs for (inherited by the tasks it starts)."""
    return _current.get(_UNSUPERVISED)


# --- the supervisor -----------------------------------------------------------------------------


class Supervisor:
    def __init__(self, config: HealthConfig, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.config = config
        self.clock = clock
        self.sleep = sleep  # the restart delay (tests make it instant)
        self.components: dict[str, Health] = {}
        self._parts: list[tuple[str, AsyncIterator[None]]] = []
        self._tasks: dict[asyncio.Task, Health] = {}

    # --- parts: started in order, stopped in reverse

    async def start(self, name: str, part: Part) -> None:
        running = part()
        try:
            await running.__anext__()
        except StopAsyncIteration:
            raise TypeError(f"part {name!r} must yield once") from None
        self._parts.append((name, running))

    async def stop(self) -> None:
        """Stop every started part, last first; one that fails to stop does not stop the rest."""
        while self._parts:
            name, running = self._parts.pop()
            try:
                await running.__anext__()
            except StopAsyncIteration:
                continue
            except Exception:
                log.exception("part failed to stop", part=name)
                continue
            log.error("part yielded more than once", part=name)
            await running.aclose()

    # --- components

    def health(self, name: str) -> Health:
        if name not in self.components:
            metrics.component_failures.labels(name)  # its series at 0: a first failure is an increase
            self.components[name] = Health(name)
        return self.components[name]

    def spawn(self, name: str, loop: Loop, *, stopping: Callable[[], bool]) -> asyncio.Task:
        """Run `loop` as component `name`, again after each failure, until `stopping()`; a
        return while not stopping is a failure too."""
        health = self.health(name)
        health.last_progress = self.clock()  # as good as progress: it has just started
        task = asyncio.create_task(self._supervise(health, loop, stopping), name=name)
        self._tasks[task] = health
        task.add_done_callback(self._tasks.pop)
        return task

    async def _supervise(self, health: Health, loop: Loop, stopping: Callable[[], bool]) -> None:
        _current.set(Beat(health, self.clock))  # this task's context only
        while True:
            error: Exception | None = None
            try:
                await loop()
            except Exception as e:
                error = e
            else:
                if stopping():
                    return
            health.busy_since = None
            if stopping():  # a failure on the way out: reported, not restarted
                self._failed(health, error, None)
                return
            delay = restart_delay(health.failures_in_a_row + 1, self.config.restart_backoff_max_s)
            self._failed(health, error, delay)
            health.restarting = True
            try:
                await self.sleep(delay)
            finally:
                health.restarting = False
            if stopping():
                return

    def job(self, name: str, sweep: Loop) -> Loop:
        """`sweep` as a periodic job of component `name` (apscheduler runs each in a task). The
        database unavailable (tracker.db.is_outage) is waited out until the next run: a warning,
        /readyz names the database. Any other error fails the run, logged, counted and named."""
        health = self.health(name)
        its_beat = Beat(health, self.clock)

        async def run_job() -> None:
            token = _current.set(its_beat)
            try:
                with its_beat.working():
                    await sweep()
            except asyncio.CancelledError:  # the stop (the scheduler's shutdown): no error, and
                # not apscheduler's "Job raised an exception" with a traceback at every stop
                log.info("sweep cancelled by the stop; its work rolls back", sweep=name)
            except Exception as e:
                if is_outage(e):
                    log.warning("sweep failed: database unavailable", sweep=name,
                                error=scrub(f"{type(e).__name__}: {e}")[:300])
                else:
                    self._failed(health, e, None)
            finally:
                _current.reset(token)

        return run_job

    def _failed(self, health: Health, error: Exception | None, restart_in_s: float | None) -> None:
        health.failures_in_a_row += 1
        health.blocked = ""  # what it said blocked it is not what stopped it: the failure says
        reason = f"{type(error).__name__}: {error}" if error else "returned while not stopping"
        health.last_error = scrub(reason)[:300]
        metrics.component_failures.labels(health.name).inc()
        log.error("component failed", component=health.name, error=reason[:300],
                  failures_in_a_row=health.failures_in_a_row, restart_in_s=restart_in_s,
                  exc_info=error)

    async def stop_tasks(self, tasks: Iterable[asyncio.Task], grace_s: float) -> None:
        """Wait up to `grace_s` for tasks whose component was told to stop to finish what they
        hold, then cancel the rest; one waiting out a restart delay is cancelled at once."""
        tasks = list(tasks)
        for t in tasks:
            h = self._tasks.get(t)
            if h is not None and h.restarting:
                t.cancel()
        if not tasks:
            return
        done, late = await asyncio.wait(tasks, timeout=grace_s)
        for t in late:
            log.warning("component did not stop in time; cancelled (its work rolls back)",
                        component=t.get_name(), grace_s=grace_s)
            t.cancel()
        if late:
            # A cancelled task may still wait on a server that answers nothing (asyncpg hands
            # its connection back through the hung backend): the stop goes on without it, else
            # it outlived the unit's TimeoutStopSec and was killed with its claims held.
            ended, stuck = await asyncio.wait(late, timeout=CANCELLED_WAIT_S)
            done |= ended
            for t in stuck:
                log.error("component did not end after being cancelled; the stop goes on without it",
                          component=t.get_name(), waited_s=CANCELLED_WAIT_S)
        for t in done:  # their errors were reported as they happened (or are the cancellation)
            if not t.cancelled():
                t.exception()

    # --- what it tells

    def wedged(self) -> list[Problem]:
        return wedged(self.components.values(), self.clock(), self.config.wedged_after_s)

    def idle_s(self, component: str) -> float | None:
        """Seconds since `component` (or any of `component:<n>`) last made progress; None when
        no such component runs here."""
        times = [c.last_progress for c in self.components.values()
                 if (c.name == component or c.name.startswith(component + ":"))
                 and c.last_progress is not None]
        return self.clock() - max(times) if times else None

    def problems(self) -> list[Problem]:
        return (failing(self.components.values(), self.config.failures_before_unready)
                + self.wedged()
                + blocked(self.components.values(), self.clock(), self.config.wedged_after_s))
