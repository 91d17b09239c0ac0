"""What a poll did for each message it was for. Pure: no I/O, no clock.

A claim is a list of Claimed messages; a poll's StatusResult (one status call, one pair of
Sparrow report calls, one list walk) becomes one Outcome per message, and the worker writes
the outcomes back (tracker.poller.worker).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Callable, Iterable, NamedTuple, Sequence

from tracker.adapters.base import MessageRef, Observation, StatusResult
from tracker.adapters.storable import repaired
from tracker.poller.circuit import Outcome as PollKind

MALFORMED = "malformed answer"  # unreadable, or holding what PostgreSQL cannot store
DB_AWAY_WAIT_S = 1.0  # handed back unpolled as the rate limit's database was away: due this soon


class Claimed(NamedTuple):  # (a tuple: cheap to make, one per claimed message)
    id: int
    ref: MessageRef
    key: tuple[str, str]  # (vendor_ref, recipient_key): how observations find it
    poll_count: int
    submitted_at: datetime
    window_ends_at: datetime | None


@dataclass
class Outcome:
    """What one poll did for one claimed message."""

    observations: list[Observation] = field(default_factory=list)
    polled: bool = True  # False: handed back unpolled (circuit open, told to wait)
    wait_s: float | None = None  # unpolled: come back after this long
    retry_after_s: float | None = None  # polled, and the vendor asked to wait this long


class Unwritten(NamedTuple):
    """A claim's answers not written yet (the database was away): written first when it is back."""
    rows: Sequence[Claimed]
    outcomes: dict[int, Outcome]
    lease_until: datetime


def storable(observations: Iterable[Observation]) -> list[Observation]:
    """The reports as PostgreSQL will take them, so that one bad report never sinks the batch
    it would be written with: a stray NUL in a text or the raw payload is replaced (the
    reading is kept, adapters.base.cleaned); a report still unstorable (its time out of
    range, say) is left out."""
    out = []
    for o in observations:
        o, problem = repaired(o)
        if problem is None:
            out.append(o)
    return out


def kind_of(result: StatusResult) -> tuple[PollKind, str | None]:
    """How the circuit breaker and the counters see a poll: ok, error or account, and why."""
    if result.account_error is not None:
        e = result.account_error
        return "account", f"account error {e.code}: {e.reason}"
    if result.transient_error is not None:
        return "error", result.transient_error
    return "ok", None


def spread(rows: Sequence[Claimed], result: StatusResult, key_of: Callable[[Observation], tuple],
           reopen_wait_s: float) -> dict[int, Outcome]:
    """One poll's result over the messages it was for. An account error hands back unpolled
    (due when a probe may go) every message it left without a report."""
    by_key = {r.key: r for r in rows}
    out = {r.id: Outcome(retry_after_s=result.retry_after_s) for r in rows}
    for o in result.observations:
        row = by_key.get(key_of(o))
        if row is not None:
            out[row.id].observations.append(o)
    if result.account_error is not None:
        for r in rows:
            if not out[r.id].observations:
                out[r.id] = Outcome(polled=False, wait_s=reopen_wait_s)
    return out


def without_raw(outcome: Outcome, why: str) -> Outcome:
    """The outcome with its reports' raw payloads replaced by a marker saying why (the reading,
    code and words are kept): what is written when the database refuses the payload itself."""
    return Outcome([replace(o, raw={"dropped": why}) for o in outcome.observations],
                   outcome.polled, outcome.wait_s, outcome.retry_after_s)


def unpolled(rows: Iterable[Claimed], wait_s: float) -> dict[int, Outcome]:
    return {r.id: Outcome(polled=False, wait_s=wait_s) for r in rows}


def observed(rows: Iterable[Claimed], seen: dict[str, Observation]) -> dict[int, Outcome]:
    """Messages a list page showed, each with what it said."""
    return {r.id: Outcome([seen[r.key[0]]]) for r in rows}
