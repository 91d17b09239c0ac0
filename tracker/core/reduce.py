"""Planning a batch of reports against the messages' current states. Pure: the reducer in
tracker.db.reducer reads the states under row locks, calls plan(), and writes what it returns.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable, Mapping

from tracker.adapters import KEYED_BY_RECIPIENT  # each vendor's own fact, gathered by the registry
from tracker.core.states import State, step


def recipient_key(vendor: str, recipient: str | None) -> str:
    return (recipient or "") if vendor in KEYED_BY_RECIPIENT else ""


# A vendor's event time that no report can mean: further ahead of its receipt than a clock is off
# (a vendor's clock fast, a zone misread), before its message was submitted by more than clocks
# are apart (a zone misread the other way: Sparrow's times, written without an offset, read in
# vendors.sparrow.naive_time_zone while Sparrow wrote UTC), or older than any message tracked
# (Go's zero time, 0001-01-01). Taken as given, one made its message's delivery time the year 1
# for good (the earliest is kept), another moved a day's p90 latency to 191 days, and a zone
# misread westwards put every delivery before its submission: latency 0, for years, unsaid. The
# report keeps the vendor's time (tracker.observations.event_at, its raw payload); its
# transition and delivery time take the time it was received, counted and logged
# (tracker.db.counts) (here, not in SQL: a function in the statements that store reports cost
# PostgreSQL 11-15 us a postback, bench/postbacks.py).
EVENT_AHEAD_MAX = timedelta(minutes=10)
EVENT_BEFORE_SUBMISSION_MAX = timedelta(minutes=10)
EVENT_PAST_MAX = timedelta(days=400)


def plausible(event_at: datetime | None, received_at: datetime,
              submitted_at: datetime | None = None) -> bool:
    """`submitted_at`: the message's, where it is known (not for a report waiting for its
    message)."""
    if event_at is None:
        return True
    earliest = received_at - EVENT_PAST_MAX
    if submitted_at is not None:
        earliest = max(earliest, submitted_at - EVENT_BEFORE_SUBMISSION_MAX)
    return earliest <= event_at <= received_at + EVENT_AHEAD_MAX


def report_time(event_at: datetime | None, received_at: datetime,
                submitted_at: datetime | None = None) -> datetime:
    """The time a report stands for: the vendor's, unless absent or implausible (above)."""
    return (event_at if event_at is not None and plausible(event_at, received_at, submitted_at)
            else received_at)


@dataclass(frozen=True, slots=True)
class Report:
    """An observation as stored: what the planner needs of it."""

    observation_id: int
    message_id: int
    state: State
    source: str
    occurred_at: datetime  # report_time(): vendor's event time, else the time we received it
    failure_code: str | None = None
    failure_reason: str | None = None
    failure_permanent: bool | None = None


@dataclass(frozen=True, slots=True)
class PlannedTransition:
    message_id: int
    from_state: State
    to_state: State
    is_correction: bool
    report: Report


def plan(current: Mapping[int, State], reports: Iterable[Report]) -> list[PlannedTransition]:
    """The transitions a batch causes. Within one batch a message's reports are taken in rank
    order, so a batch holding `delivered` and `sent` records both steps of the way; across
    batches the result depends only on the highest rank seen (merge is max)."""
    state = dict(current)
    out: list[PlannedTransition] = []
    for r in sorted(reports, key=lambda r: (r.message_id, r.state, r.occurred_at, r.observation_id)):
        t = step(state[r.message_id], r.state)
        if t is not None:
            out.append(PlannedTransition(r.message_id, t.from_state, t.to_state, t.is_correction, r))
            state[r.message_id] = t.to_state
    return out


def delivery_times(reports: Iterable[Report]) -> dict[int, datetime]:
    """When each message was delivered, as these reports tell: the earliest occurred time of its
    reports of `delivered` or `read`. The writer keeps the earliest of this and what the message
    has (min, as states merge by max), so a message's delivery time does not depend on how its
    reports were batched, nor in what order they came (a `read` reported before its
    `delivered` does not stand for the delivery)."""
    out: dict[int, datetime] = {}
    for r in reports:
        if r.state >= State.delivered:
            at = out.get(r.message_id)
            if at is None or r.occurred_at < at:
                out[r.message_id] = r.occurred_at
    return out
