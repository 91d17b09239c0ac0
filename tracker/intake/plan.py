"""Planning a chunk of readable rows as set-based writes: pure.

Every distinct message key (vendor, vendor_ref, recipient_key) of the chunk becomes one new
message row, already in the state its reports raise it to; every observation one observation
row; every step up from `submitted` one transition, planned by tracker.core.reduce.plan() exactly
as for any other source. Keys that turn out to exist already (a resubmission, another replica)
are left to the reducer's general path by the shell.

A send the vendor refused before giving an id is keyed by its row (tracker.intake.rows): nothing
can ever be heard of it again, so it is never polled, and it is `rejected` (DESIGN: a send
refused by the vendor) even when the vendor's code is not mapped: the observation keeps its
unmapped code (state NULL: recorded and counted, never guessed) and the rejection carries that
code, its words, and `permanent` unknown.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Mapping, Sequence

from tracker import adapters
from tracker.adapters.base import Observation
from tracker.config_types import VendorConfig
from tracker.core.reduce import PlannedTransition, Report, delivery_times, plan, recipient_key, report_time
from tracker.core.route import destination
from tracker.core.states import Failure, State
from tracker.db.rows import NewMessageRow
from tracker.intake.rows import TakenRow, shown

Key = tuple[str, str, str]  # vendor, vendor_ref, recipient_key
LATEST = datetime.max.replace(tzinfo=None)
UNMAPPED_REFUSAL = "the vendor refused the send before giving an id (code {} is not mapped)"


@dataclass(slots=True)
class ChunkPlan:
    """What a chunk writes if every key is new. Observations and reports are in input order;
    a report's observation_id is its index in `observations` and its message_id the index of
    its key in `keys` until the shell maps both to the ids the database gave. `order`: the
    indexes of `keys` sorted by key, the order every intake worker inserts them in, so that two
    batches sharing keys (a resubmission) wait on each other at most, never deadlock (each
    waiting for a key the other inserted first); the ids still follow `keys` (first appearance)."""

    keys: list[Key] = field(default_factory=list)
    index: dict[Key, int] = field(default_factory=dict)  # key -> its index in keys
    messages: list[NewMessageRow] = field(default_factory=list)
    observations: list[tuple[int, Observation]] = field(default_factory=list)  # (key index, o)
    transitions: list[PlannedTransition] = field(default_factory=list)
    order: list[int] = field(default_factory=list)  # indexes of keys, sorted by key
    first_row: list[int] = field(default_factory=list)  # per key: the id of the row naming it first
    # per row id: what of it was tracked once only, for its note (the shell adds the keys that
    # existed before the chunk: tracked_already())
    notes: dict[int, list[str]] = field(default_factory=dict)


def plan_chunk(rows: Sequence[TakenRow], vendors: Mapping[str, VendorConfig],
               now: datetime) -> ChunkPlan:
    out = ChunkPlan()
    index = out.index
    first: list[tuple[TakenRow, Observation, bool]] = []
    reports: list[Report] = []
    repeats = _Repeats()
    for row in rows:
        for i, o in enumerate(row.observations):
            by_row = bool(row.by_row) and i in row.by_row
            key = (o.vendor, o.vendor_ref, recipient_key(o.vendor, o.recipient))
            k = index.get(key)
            if k is None:
                k = index[key] = len(out.keys)
                out.keys.append(key)
                first.append((row, o, by_row))
                out.first_row.append(row.id)
            else:
                repeats.saw(row, o, *first[k][:2])
            state, f = o.state, o.failure
            if by_row and (state is None or not state.is_final):  # refused: see the docstring
                state, f = State.rejected, Failure(o.code, o.text or UNMAPPED_REFUSAL.format(o.code), None)
            if state is not None:
                reports.append(Report(len(out.observations), k, state, "submit",
                                      report_time(o.event_at, now, row.submitted_at), f.code if f else None,
                                      f.reason if f else None, f.permanent if f else None))
            out.observations.append((k, o))
    out.transitions = plan(dict.fromkeys(range(len(out.keys)), State.submitted), reports)
    last = {t.message_id: t for t in out.transitions}  # the last step per message is its state
    delivered = delivery_times(reports)  # not the last step's time, which may be a read's
    for k, (row, o, by_row) in enumerate(first):
        out.messages.append(_message_row(out.keys[k], row, o, last.get(k), delivered.get(k),
                                         vendors[o.vendor], now, polled=not by_row))
    out.order = sorted(range(len(out.keys)), key=out.keys.__getitem__)
    out.notes = repeats.notes()
    return out


def _digits(recipient: str | None) -> str:
    return "".join(c for c in recipient or "" if c.isdigit())


def _ref(o: Observation) -> str:
    return shown(o.issued_ref or o.vendor_ref)


class _Repeats:
    """A message named again in a chunk is tracked once (its first row's client_ref and
    recipient). Never without a word: the row that named it again, or the row that listed one id
    for several recipients of a vendor whose id is the message's alone, says so in its note."""

    def __init__(self) -> None:
        self.again: dict[int, list] = {}  # row id -> [count, an example]
        self.split: dict[int, list] = {}

    def saw(self, row: TakenRow, o: Observation, first_row: TakenRow, first: Observation) -> None:
        if first_row is not row:
            seen = self.again.setdefault(row.id, [0, f"{_ref(o)} (row {first_row.id})"])
        elif _digits(o.recipient) != _digits(first.recipient):  # not the number written otherwise
            seen = self.split.setdefault(row.id, [0, f"{_ref(o)}: {shown(first.recipient)}, "
                                                      f"{shown(o.recipient)}"])
        else:
            return  # the same message listed twice: nothing lost
        seen[0] += 1

    def notes(self) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for row_id, (n, example) in self.again.items():
            out.setdefault(row_id, []).append(
                f"{n} vendor id(s) named by an earlier row too, e.g. {example}: tracked once, with "
                "that row's client_ref and recipient; this row adds its reports")
        for row_id, (n, example) in self.split.items():
            out.setdefault(row_id, []).append(
                f"{n} vendor id(s) listed again for another recipient, e.g. {example}: each "
                "tracked once, for the recipient listed first")
        return out


def tracked_already(plan: ChunkPlan, made: Sequence[int | None]) -> dict[int, list[str]]:
    """Notes for the rows whose messages existed before the chunk (``made[k]`` None: the insert
    found the key taken, by an earlier batch or another replica's)."""
    seen: dict[int, list] = {}
    for k, message_id in enumerate(made):
        if message_id is None:
            m = plan.messages[k]
            seen.setdefault(plan.first_row[k], [0, shown(m.issued_ref or m.vendor_ref)])[0] += 1
    return {row_id: [f"{n} vendor id(s) tracked already, e.g. {example}: kept with the earlier "
                     "row's client_ref and recipient; this row adds its reports"]
            for row_id, (n, example) in seen.items()}


def _message_row(key: Key, row: TakenRow, o: Observation, step: PlannedTransition | None,
                 delivered_at: datetime | None, vc: VendorConfig, now: datetime,
                 polled: bool = True) -> NewMessageRow:
    """The message as its first row names it, in its new state; `polled`: False for a message
    keyed by its row (no vendor id to ask about)."""
    state = step.to_state if step else State.submitted
    r = step.report if step else None
    # Whether a message is polled is the vendor's (its adapter), never this replica's: a replica
    # with the vendor disabled (sinks only, say) took its rows in with no first poll, and no
    # replica ever polled them; nor, once re-enabled, did this one.
    polled = polled and adapters.get(o.vendor).POLLS and not state.is_final
    starts = max(row.submitted_at, o.scheduled_for or row.submitted_at)  # sent then, not before
    return NewMessageRow(
        *key, o.issued_ref if o.issued_ref != o.vendor_ref else None, o.recipient,
        row.client_ref, row.id, row.submitted_at, o.deadline,
        window_end(starts, o.deadline, vc),
        _after(starts, vc.first_poll_s) if polled else None,
        state.name, delivered_at,
        r.failure_code if r else None, r.failure_reason if r else None,
        r.failure_permanent if r else None, now, *destination(o.recipient))


def window_end(starts: datetime, deadline: datetime | None, vc: VendorConfig) -> datetime:
    """When the tracking window closes: the vendor's window after the message starts (its
    submission, or when a scheduled send goes out), or its retry deadline plus a margin when
    that is later (engageSPARK)."""
    window = _after(starts, vc.tracking_window_s)
    if deadline is not None:  # the vendor retries until then: wait for it, plus a margin
        window = max(window, _after(deadline, vc.deadline_margin_s))
    return window


def _after(at: datetime, seconds: float) -> datetime:
    try:
        return at + timedelta(seconds=seconds)
    except OverflowError:  # a window of centuries: the end of time will do
        return LATEST.replace(tzinfo=at.tzinfo)
