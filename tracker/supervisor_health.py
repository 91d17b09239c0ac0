"""What the supervisor (tracker.supervisor) knows of each component, and the rules, pure, that
judge it from that: the delay before a failed loop starts again, and which components are
failing, wedged or blocked (what /readyz reports)."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

FIRST_RESTART_S = 0.1


@dataclass(frozen=True)
class Problem:
    """Why the tracker is not ready, naming the component."""

    component: str
    reason: str


@dataclass
class Health:
    """What the supervisor knows of one component."""

    name: str
    failures_in_a_row: int = 0
    last_error: str = ""
    busy_since: float | None = None  # working, with no progress since then
    last_progress: float | None = None  # the clock's time of its last progress (or its start)
    restarting: bool = False  # waiting out its restart delay: nothing in hand
    blocked: str = ""  # why it has work it cannot do (Beat.blocked); cleared by progress


def restart_delay(failures_in_a_row: int, cap_s: float) -> float:
    """0.1 s after a first failure, doubling with each failure in a row, up to `cap_s`."""
    return min(cap_s, FIRST_RESTART_S * 2 ** max(0, failures_in_a_row - 1))


def wedged(components: Iterable[Health], now: float, wedged_after_s: float) -> list[Problem]:
    return [Problem(c.name, f"busy for {now - c.busy_since:.0f} s without progress")
            for c in components
            if c.busy_since is not None and now - c.busy_since > wedged_after_s]


def blocked(components: Iterable[Health], now: float, limit_s: float) -> list[Problem]:
    return [Problem(c.name, f"{c.blocked}; no progress for {now - c.last_progress:.0f} s")
            for c in components
            if c.blocked and c.last_progress is not None and now - c.last_progress > limit_s]


def failing(components: Iterable[Health], failures_before_unready: int) -> list[Problem]:
    return [Problem(c.name, f"failed {c.failures_in_a_row} times in a row; last: {c.last_error}")
            for c in components if c.failures_in_a_row >= failures_before_unready]
