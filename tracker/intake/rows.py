"""Reading one submission row: pure. What the row says, as observations of the messages it
names, or why it cannot be taken in (a RowError whose text tracker.intake_problems shows).

A row names its message directly (vendor_ref + recipient) or carries the vendor's raw send
response, which the vendor's adapter expands (a bulk response becomes many messages; immediate
rejections become `rejected` messages). What a row may carry is bounded, so that no row can
stop or slow the rows after it; the bounds are documented in docs/intake.md.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from tracker import adapters
from tracker.adapters import sparrow_recipients
from tracker.adapters.base import (MAX_CLIENT_REF_LEN, MAX_RECIPIENT_LEN, MAX_REF_LEN, NO_REF,
                                   Observation, ParseError, digits, json_value)
from tracker.config_types import VENDORS
from tracker.core.reduce import (EVENT_AHEAD_MAX, EVENT_BEFORE_SUBMISSION_MAX, EVENT_PAST_MAX, plausible,
                                 recipient_key)
from tracker.core.states import State
from tracker.masking import shortened

# A vendor's retry deadline further out than this after submission is clamped (with a note):
# no vendor retries for months, and a year-9999 deadline must not keep a message open forever.
MAX_DEADLINE = timedelta(days=30)
AHEAD_NOTED = timedelta(minutes=5)  # submitted_at this far ahead of the clock: the row is noted
# The sane range of `submitted_at` is checked in SQL (queries.CLAIM_SUBMISSIONS): a row outside
# it arrives here with submitted_at None and its text in submitted_text.
SUBMITTED_RANGE = "from 2000-01-01 to one day after now"
# Recipients of a vendor's send request that the adapter makes no message of (no digits: "N/A"),
# by vendor: noted on the row, never dropped without a word.
DIGITLESS = {"sparrow": sparrow_recipients.digitless_recipients}


class RowError(ValueError):
    """This row cannot be taken in; the text says why (shown in tracker.intake_problems)."""


@dataclass(slots=True)
class TakenRow:
    """A row that can be taken in: its messages' observations, and a note for the operator.
    `messages`: how many distinct messages they name (an id listed twice is one message);
    `by_row`: the indexes of observations the vendor refused before giving an id, keyed by
    this row (tracker.intake.plan makes them `rejected`, never polled)."""

    id: int
    client_ref: str | None
    submitted_at: datetime
    observations: list[Observation]
    note: str | None = None
    messages: int = 0
    by_row: frozenset[int] = frozenset()


def _text_field(row: Mapping[str, Any], key: str, limit: int) -> str | None:
    value = row[key]
    if value is None:
        return None
    if "\x00" in value:
        raise RowError(f"{key} holds a NUL character")
    if len(value) > limit:
        raise RowError(f"{key} is {len(value)} characters long; at most {limit} are taken")
    return value


def read_row(row: Mapping[str, Any], now: datetime, max_messages: int) -> TakenRow:
    """What a claimed row (see queries.CLAIM_SUBMISSIONS) says, or RowError saying why not."""
    vendor = row["vendor"]
    if vendor not in VENDORS:
        raise RowError(f"unknown vendor {shown(vendor)}; expected one of {', '.join(VENDORS)}")
    if row["submitted_at"] is None:
        raise RowError(f"submitted_at {shown(row['submitted_text'])} is outside the range taken "
                       f"({SUBMITTED_RANGE})")
    if row["response_too_large"]:
        raise RowError(f"{row.get('too_large_field') or 'response'} is "
                       f"{row['response_too_large']} bytes as JSON text; at most "
                       f"{row['response_limit']} are taken")
    client_ref = _text_field(row, "client_ref", MAX_CLIENT_REF_LEN)
    notes: list[str] = []
    ahead = row["submitted_at"] - now
    if ahead > AHEAD_NOTED:  # taken (within the day allowed), but its latencies will read short
        notes.append(f"submitted_at is {ahead.total_seconds() / 60:.0f} minutes ahead of the "
                     "tracker's clock (a local time written as UTC?): delivery latencies "
                     "measured from it read short")
    by_row: frozenset[int] = frozenset()
    if row["vendor_ref"] is not None:  # its texts are checked field by field
        found = [_named(row, vendor, notes)]
        if row["response"] is not None or row["request"] is not None:
            notes.append("the row names vendor_ref: its response/request were not read")
    elif row["response"] is not None:
        found = _expanded(row, vendor, now, notes)
        if len(found) > max_messages:
            raise RowError(f"the row names {len(found)} messages; at most {max_messages} are "
                           "taken per row (intake.max_messages_per_row)")
        found, by_row = _bounded(row["id"], row["submitted_at"], now, found, notes)
    else:
        raise RowError("row has neither vendor_ref nor response")
    messages = len({(o.vendor_ref, recipient_key(o.vendor, o.recipient)) for o in found})
    return TakenRow(row["id"], client_ref, row["submitted_at"], found, "; ".join(notes) or None,
                    messages, by_row)


def _named(row: Mapping[str, Any], vendor: str, notes: list[str]) -> Observation:
    """A row that names its message: vendor_ref (+ recipient)."""
    adapter = adapters.get(vendor)
    raw_ref = _text_field(row, "vendor_ref", MAX_REF_LEN)
    if not raw_ref.isascii():  # a byte-order mark or zero-width space from a CSV export: no
        # vendor's id holds one, and kept, the id matched no report (tracked under another id)
        visible = "".join(c for c in raw_ref if unicodedata.category(c) != "Cf")
        if visible != raw_ref:
            notes.append(f"vendor_ref held {len(raw_ref) - len(visible)} invisible characters "
                         "(a byte-order mark, a zero-width space): removed")
            raw_ref = visible
    try:
        ref = adapter.normalize_ref(raw_ref)
    except ParseError as e:
        raise RowError(f"vendor_ref cannot be read: {e}") from None
    if not ref:
        raise RowError("vendor_ref is empty")
    issued = raw_ref.strip()
    given = row["recipient"]
    recipient = None
    if given is not None:
        if len(given) > 4 * MAX_RECIPIENT_LEN:  # before the walk over its characters
            raise RowError(f"recipient is {len(given)} characters long; a phone number has at "
                           f"most {MAX_RECIPIENT_LEN} digits")
        recipient = digits(given) or None
        if recipient is not None and len(recipient) > MAX_RECIPIENT_LEN:
            raise RowError(f"recipient has {len(recipient)} digits; a phone number has at most "
                           f"{MAX_RECIPIENT_LEN}")
        if recipient is None:
            notes.append(f"recipient {shown(given)} is not a phone number: ignored")
    if adapter.KEYED_BY_RECIPIENT and not recipient:
        raise RowError(f"{vendor} ids name a batch: recipient is required with vendor_ref")
    return Observation(vendor=vendor, vendor_ref=ref, recipient=recipient, state=State.submitted,
                       code="submitted", event_at=row["submitted_at"],
                       issued_ref=issued if issued != ref else None)


def _expanded(row: Mapping[str, Any], vendor: str, now: datetime, notes: list[str]) -> list[Observation]:
    """A row with the vendor's raw send response: the adapter expands it."""
    adapter = adapters.get(vendor)
    try:
        # asyncpg hands jsonb over as text: decoded here (a ParseError if it were not JSON).
        request = json_value(row["request"], f"{vendor} send request")
        result = adapter.parse_send(json_value(row["response"], f"{vendor} send response"),
                                    request, now)
    except ParseError as e:
        raise RowError(f"cannot read the {vendor} send response: {e}") from None
    note = None
    if result.account_error is not None:
        e = result.account_error
        note = f"the vendor reported an account problem: {e.code} {e.reason}"
    if not result.observations:
        raise RowError(note or f"the {vendor} send response names no message")
    if note:
        notes.append(note)
    notes += result.notes
    if vendor in DIGITLESS:
        _note_digitless(DIGITLESS[vendor], request, notes)
    return result.observations


def _note_digitless(find, request: Any, notes: list[str]) -> None:
    """Recipients of the request that name no message (no digits), in the row's note."""
    try:
        dropped = find(request)
    except ParseError:  # the adapter read the request: it would not fail here
        return
    if dropped:
        listed = ", ".join(shown(n) for n in dropped[:3]) + (", ..." if len(dropped) > 3 else "")
        notes.append(f"{len(dropped)} recipient(s) of the request have no digits and name no "
                     f"message: {listed}")


def _bounded(submission_id: int, submitted_at: datetime, now: datetime, found: list[Observation],
             notes: list[str]) -> tuple[list[Observation], frozenset[int]]:
    """The row's observations, within the bounds, refused-before-an-id messages keyed by their
    row (their indexes returned beside), and deadlines clamped; vendor times no report can mean
    (core.reduce.plausible: the time taken in stands for them) noted."""
    out = []
    by_row = []
    latest = submitted_at + MAX_DEADLINE
    clamped = odd = 0
    for i, o in enumerate(found):
        odd += not plausible(o.event_at, now, submitted_at)
        if o.vendor_ref == NO_REF:  # refused by the vendor before it gave an id: key by row
            o = replace(o, vendor_ref=f"refused:{submission_id}:{i}")
            by_row.append(i)
        elif len(o.vendor_ref) > MAX_REF_LEN:
            raise RowError(f"message {i + 1}: the vendor id is {len(o.vendor_ref)} characters "
                           f"long; at most {MAX_REF_LEN} are taken")
        if o.recipient is not None and len(o.recipient) > MAX_RECIPIENT_LEN:
            raise RowError(f"message {i + 1}: recipient has {len(o.recipient)} digits; a phone "
                           f"number has at most {MAX_RECIPIENT_LEN}")
        if o.deadline is not None and not _before(o.deadline, latest):
            o = replace(o, deadline=latest)
            clamped += 1
        out.append(o)  # texts from jsonb hold no NUL nor lone surrogate; PostgreSQL judges the rest
    if clamped:
        notes.append(f"{clamped} vendor deadline(s) more than {MAX_DEADLINE.days} days after "
                     f"submission (or unreadable) were clamped to {latest.isoformat()}")
    if odd:
        notes.append(f"{odd} vendor event time(s) over {EVENT_AHEAD_MAX.seconds // 60} minutes "
                     f"ahead of the tracker's clock, over {EVENT_BEFORE_SUBMISSION_MAX.seconds // 60} "
                     f"minutes before submitted_at or over {EVENT_PAST_MAX.days} days before "
                     "the clock: the time taken in stands for them")
    return out, frozenset(by_row)


def _before(at: datetime, limit: datetime) -> bool:
    """at <= limit, where `at` may be a vendor time too far out to convert to UTC."""
    try:
        return at.astimezone(timezone.utc) <= limit
    except (OverflowError, ValueError):
        return False


def shown(value: Any) -> str:
    """A value as a note or a refusal quotes it: its repr, cut to 60 characters."""
    return shortened(repr(value), 60)
