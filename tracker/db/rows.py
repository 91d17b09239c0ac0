"""Row layouts between Python and SQL, and their encoding. Batches travel to PostgreSQL as one
JSON array of arrays (rows_json, below) and the statement unpacks each row by position
(`r->>0 AS id`, ...): the NamedTuples here are those positions, in order, and
tests/unit/test_rows.py checks each statement's columns against them, so that the two cannot
drift apart.
"""
from __future__ import annotations

from datetime import datetime
from typing import Iterable, NamedTuple, Sequence

import orjson

from tracker.adapters.base import Observation
from tracker.core.reduce import PlannedTransition, recipient_key
from tracker.masking import mask_secrets, mask_secrets_in_json, may_hold_stored_secrets


class MessageWrite(NamedTuple):
    """What one write does to one message (queries.WRITE_MESSAGES): the only way any message's
    state, failure details, delivery time, last report, operator and poll schedule change after
    it was made, whatever the source of the reports (poll, postback, tracker, submit)."""

    id: int
    state: str | None  # the new state, planned by tracker.core.reduce (None: unchanged)
    occurred_at: datetime | None  # the earliest delivery time its reports give (None: none; min-merged)
    failure_code: str | None  # ... and its failure details (cleared by a success)
    failure_reason: str | None
    failure_permanent: bool | None
    reported_at: datetime | None  # the latest report received now (None: no report)
    operator: str | None  # the operator a report named (None: none named)
    operator_at: datetime | None  # when the report naming it was received
    next_poll_at: datetime | None  # the poller hands its claim back: next poll (None: not a release)
    polls: int  # polls to count (0 or 1)


def message_write(id: int, *, state: str | None = None, occurred_at: datetime | None = None,
                  failure_code: str | None = None, failure_reason: str | None = None,
                  failure_permanent: bool | None = None, reported_at: datetime | None = None,
                  operator: str | None = None, operator_at: datetime | None = None,
                  next_poll_at: datetime | None = None, polls: int = 0) -> MessageWrite:
    """A MessageWrite that changes only what is given."""
    return MessageWrite(id, state, occurred_at, failure_code, failure_reason, failure_permanent,
                        reported_at, operator, operator_at, next_poll_at, polls)


class TransitionRow(NamedTuple):
    """One transition event (queries.INSERT_TRANSITIONS)."""

    message_id: int
    from_state: str
    to_state: str
    source: str
    occurred_at: datetime
    failure_code: str | None
    failure_reason: str | None
    failure_permanent: bool | None
    is_correction: bool
    observation_id: int | None


class NewMessageRow(NamedTuple):
    """One message intake makes, in its first state (queries.INSERT_NEW_MESSAGES, whose column
    list is in this order). Offered to tracker.intake.plan, which builds these rows."""

    vendor: str
    vendor_ref: str
    recipient_key: str
    issued_ref: str | None  # None: as vendor_ref
    recipient: str | None
    client_ref: str | None
    submission_id: int | None
    submitted_at: datetime
    vendor_deadline: datetime | None
    window_ends_at: datetime | None
    next_poll_at: datetime | None
    state: str
    delivered_at: datetime | None
    failure_code: str | None
    failure_reason: str | None
    failure_permanent: bool | None
    last_report_at: datetime | None
    country: str | None
    calling_code: int | None


# Where each row type above carries a failure's code and reason (a vendor's words: see _row).
_FAILURE_AT = {t: (t._fields.index("failure_code"), t._fields.index("failure_reason"))
               for t in (MessageWrite, TransitionRow, NewMessageRow)}


def _json(raw) -> orjson.Fragment | None:
    """A raw payload as JSON, ready to sit in a row (anything JSON cannot say becomes text),
    registered secrets masked in every string of it (tracker.masking.mask_secrets_in_json: one
    search of the encoded text when none is there)."""
    if raw is None:
        return None
    try:
        data = orjson.dumps(raw, default=str)
    except TypeError:
        data = orjson.dumps(str(raw))
    return orjson.Fragment(mask_secrets_in_json(data))


def masked_text(text: str | None) -> str | None:
    """A vendor's words as stored: registered secrets (and a secret's start ending a text cut
    short) masked."""
    return mask_secrets(text, stored=True) if text else text


def rows_json(rows: Iterable[Sequence]) -> str:
    """Rows for one statement as one JSON array of arrays (see queries: INSERT_OBSERVATIONS).
    A time without a zone is taken as UTC (the adapters give aware times). orjson writes zone
    offsets in whole minutes: an offset with seconds (historical local mean times only) would
    be rounded."""
    return orjson.dumps(list(rows), default=_row, option=orjson.OPT_NAIVE_UTC).decode()


def _row(value: object) -> list:
    """A NamedTuple row (above) as the array it travels as; its failure's code and reason masked
    as an observation's are (the poller and intake take them from the observation, not from the
    row stored for it)."""
    if isinstance(value, tuple):
        row = list(value)
        at = _FAILURE_AT.get(type(value))
        if at is not None:
            code, reason = at
            if may_hold_stored_secrets(row[code], row[reason]):  # one search for the two
                row[code], row[reason] = masked_text(row[code]), masked_text(row[reason])
        return row
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def observation_row(o: Observation) -> list:
    """An observation as the first eleven columns of a row of INSERT_OBSERVATIONS and
    INSERT_POLL_OBSERVATIONS: vendor, vendor_ref, recipient_key, state, code, text, event_at,
    failure code, reason and permanent, raw. A vendor may echo what it was sent (an API key, a
    token): registered secrets are masked in the codes (some vendors' codes are their words),
    the text, the reason and every string of raw."""
    f = o.failure
    code, text = o.code, o.text
    f_code, reason = (f.code, f.reason) if f else (None, None)
    if may_hold_stored_secrets(code, text, f_code, reason):  # one search for the four
        code, text, f_code, reason = map(masked_text, (code, text, f_code, reason))
    return [o.vendor, o.vendor_ref, recipient_key(o.vendor, o.recipient),
            o.state.name if o.state is not None else None, code, text, o.event_at,
            f_code, reason, f.permanent if f else None, _json(o.raw)]


def transitions_json(planned: Sequence[PlannedTransition]) -> str:
    """Planned transitions as TransitionRow rows (INSERT_TRANSITIONS, WRITE_MESSAGES)."""
    return rows_json(
        TransitionRow(t.message_id, t.from_state.name, t.to_state.name, t.report.source,
                      t.report.occurred_at, t.report.failure_code, t.report.failure_reason,
                      t.report.failure_permanent, t.is_correction, t.report.observation_id)
        for t in planned)
