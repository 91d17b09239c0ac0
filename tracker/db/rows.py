"""Row layouts between Python and SQL. Batches travel to PostgreSQL as one JSON array of arrays
(tracker.db.reducer.rows_json) and the statement unpacks each row by position (`r->>0 AS id`,
...): the NamedTuples here are those positions, in order, and tests/unit/test_rows.py checks
each statement's columns against them, so that the two cannot drift apart.
"""
from __future__ import annotations

from datetime import datetime
from typing import NamedTuple


class MessageWrite(NamedTuple):
    """What one write does to one message (queries.WRITE_MESSAGES): the only way any message's
    state, failure details, delivery time, last report, operator and poll schedule change after
    it was made, whatever the source of the reports (poll, postback, tracker, submit)."""

    id: int
    state: str | None  # the new state, planned by tracker.core.reduce (None: unchanged)
    occurred_at: datetime | None  # when the new state happened (the delivery time, if delivered)
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
