"""A vendor's circuit breaker. Pure: the caller passes the (monotonic) time and keeps the value.

    closed    --`failures` consecutive errors, or one account error-->  open
    open      --`reset_s` elapsed, next poll asks to go-->              half_open (one probe)
    half_open --the probe succeeds-->                                   closed
    half_open --the probe fails (any error)-->                          open (timer restarts)

While open nothing is sent to the vendor. Outcomes that arrive while open (answers to requests
sent before it opened) change nothing: only the probe decides.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

State = Literal["closed", "open", "half_open"]
Outcome = Literal["ok", "error", "account"]


@dataclass(frozen=True, slots=True)
class Circuit:
    state: State = "closed"
    failures: int = 0  # consecutive errors while closed
    opened_at: float = 0.0
    probing: bool = False  # half_open: the one probe is out


def allow(c: Circuit, now: float, reset_s: float) -> tuple[Circuit, bool]:
    """May a poll go out now? Returns the new circuit and the answer. In half_open exactly one
    caller gets True (the probe) until its outcome is recorded."""
    if c.state == "closed":
        return c, True
    if c.state == "open":
        if now - c.opened_at >= reset_s:
            return replace(c, state="half_open", probing=True), True
        return c, False
    if not c.probing:
        return replace(c, probing=True), True
    return c, False


def record(c: Circuit, outcome: Outcome, now: float, failures_to_open: int) -> Circuit:
    """The circuit after one poll's outcome."""
    if outcome == "account":
        return Circuit("open", 0, now, False)
    if c.state == "open":
        return c
    if outcome == "ok":
        return Circuit()
    if c.state == "half_open":
        return Circuit("open", 0, now, False)
    failures = c.failures + 1
    if failures >= failures_to_open:
        return Circuit("open", 0, now, False)
    return replace(c, failures=failures)


def reopens_in(c: Circuit, now: float, reset_s: float) -> float:
    """Seconds until a probe may go (0 when polls may go now)."""
    if c.state != "open":
        return 0.0
    return max(0.0, c.opened_at + reset_s - now)


def release_probe(c: Circuit) -> Circuit:
    """The probe that was allowed did not go out (nothing was due): let the next one go."""
    return replace(c, probing=False) if c.state == "half_open" else c
