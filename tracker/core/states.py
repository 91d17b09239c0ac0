"""The normalized state machine (docs/design.md#contract-2). Pure: no I/O.

A message's state is the highest-ranked state ever observed for it. Merge is `max`, so the
result does not depend on the order or number of reports. A lower or equal report changes
nothing (it is still recorded as an observation by the caller).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Iterable


class State(enum.IntEnum):
    """Value is the rank."""

    submitted = 0
    accepted = 1
    sent = 2
    unknown = 3
    expired = 4
    rejected = 5
    failed = 6
    delivered = 7
    read = 8

    @property
    def is_final(self) -> bool:
        return self >= State.unknown

    @property
    def is_failure(self) -> bool:
        return State.expired <= self <= State.failed


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a message did not get through: the vendor's code, a human reason, and whether
    retrying the same recipient can help (None: the vendor does not say)."""

    code: str | None
    reason: str | None
    permanent: bool | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    from_state: State
    to_state: State
    is_correction: bool


def merge(current: State, observed: State) -> State:
    """The whole rule: highest rank wins."""
    return max(current, observed)


def step(current: State, observed: State) -> Transition | None:
    """The transition a report causes, or None when it changes nothing.

    A correction is a real outcome overriding an earlier final one: `delivered` after a
    failure, or any reported outcome after the tracker's own `unknown`. `read` after
    `delivered` is progress, not a correction.
    """
    if observed <= current:
        return None
    return Transition(current, observed,
                      is_correction=current.is_final and current < State.delivered)


def fold(observed: Iterable[State], start: State = State.submitted) -> tuple[State, list[Transition]]:
    """Apply reports in order; return the final state and the transitions emitted."""
    state, transitions = start, []
    for s in observed:
        t = step(state, s)
        if t is not None:
            transitions.append(t)
            state = t.to_state
    return state, transitions
