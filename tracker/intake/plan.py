"""Planning a chunk of readable rows as set-based writes: pure.

Every distinct message key (vendor, vendor_ref, recipient_key) of the chunk becomes one new
message row, already in the state its reports raise it to; every observation one observation
row; every step up from `submitted` one transition, planned by tracker.core.reduce.plan() exactly
as for any other source. Keys that turn out to exist already (a resubmission, another replica)
are left to the reducer's general path by the shell.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Mapping, Sequence

from tracker import adapters
from tracker.adapters.base import Observation
from tracker.config_types import VendorConfig
from tracker.core.reduce import PlannedTransition, Report, plan, recipient_key
from tracker.core.route import destination
from tracker.core.states import State
from tracker.db.rows import NewMessageRow
from tracker.intake.rows import TakenRow

Key = tuple[str, str, str]  # vendor, vendor_ref, recipient_key
LATEST = datetime.max.replace(tzinfo=None)


@dataclass(slots=True)
class ChunkPlan:
    """What a chunk writes if every key is new. Observations and reports are in input order;
    a report's observation_id is its index in `observations` and its message_id the index of
    its key in `keys` until the shell maps both to the ids the database gave."""

    keys: list[Key] = field(default_factory=list)
    index: dict[Key, int] = field(default_factory=dict)  # key -> its index in keys
    messages: list[NewMessageRow] = field(default_factory=list)
    observations: list[tuple[int, Observation]] = field(default_factory=list)  # (key index, o)
    transitions: list[PlannedTransition] = field(default_factory=list)


def plan_chunk(rows: Sequence[TakenRow], vendors: Mapping[str, VendorConfig],
               now: datetime) -> ChunkPlan:
    out = ChunkPlan()
    index = out.index
    first: list[tuple[TakenRow, Observation]] = []
    reports: list[Report] = []
    for row in rows:
        for o in row.observations:
            key = (o.vendor, o.vendor_ref, recipient_key(o.vendor, o.recipient))
            k = index.get(key)
            if k is None:
                k = index[key] = len(out.keys)
                out.keys.append(key)
                first.append((row, o))
            if o.state is not None:
                f = o.failure
                reports.append(Report(len(out.observations), k, o.state, "submit",
                                      o.event_at or now, f.code if f else None,
                                      f.reason if f else None, f.permanent if f else None))
            out.observations.append((k, o))
    out.transitions = plan(dict.fromkeys(range(len(out.keys)), State.submitted), reports)
    last = {t.message_id: t for t in out.transitions}  # the last step per message is its state
    for k, (row, o) in enumerate(first):
        out.messages.append(_message_row(out.keys[k], row, o, last.get(k), vendors[o.vendor], now))
    return out


def _message_row(key: Key, row: TakenRow, o: Observation, step: PlannedTransition | None,
                 vc: VendorConfig, now: datetime) -> NewMessageRow:
    """The message as its first row names it, in its new state."""
    state = step.to_state if step else State.submitted
    r = step.report if step else None
    polled = adapters.get(o.vendor).POLLS and vc.enabled and not state.is_final
    return NewMessageRow(
        *key, o.issued_ref if o.issued_ref != o.vendor_ref else None, o.recipient,
        row.client_ref, row.id, row.submitted_at, o.deadline,
        window_end(row.submitted_at, o.deadline, vc),
        _after(row.submitted_at, vc.first_poll_s) if polled else None,
        state.name, r.occurred_at if r and state >= State.delivered else None,
        r.failure_code if r else None, r.failure_reason if r else None,
        r.failure_permanent if r else None, now, *destination(o.recipient))


def window_end(submitted_at: datetime, deadline: datetime | None, vc: VendorConfig) -> datetime:
    """When the tracking window closes: the vendor's window after submission, or its retry
    deadline plus a margin when that is later (engageSPARK)."""
    window = _after(submitted_at, vc.tracking_window_s)
    if deadline is not None:  # the vendor retries until then: wait for it, plus a margin
        window = max(window, _after(deadline, vc.deadline_margin_s))
    return window


def _after(at: datetime, seconds: float) -> datetime:
    try:
        return at + timedelta(seconds=seconds)
    except OverflowError:  # a window of centuries: the end of time will do
        return LATEST.replace(tzinfo=at.tzinfo)
