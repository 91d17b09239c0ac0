"""Intake: turn rows of tracker.submissions into tracked messages.

A row names its message directly (vendor_ref + recipient) or carries the vendor's raw send
response, which the vendor's adapter expands (a bulk response becomes many messages; immediate
rejections become `rejected` messages). A row that cannot be taken in is marked with an error
that tracker.intake_problems shows; no row is dropped.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

import asyncpg

from tracker import adapters
from tracker.adapters.base import NO_REF, Observation, ParseError, digits, json_value
from tracker.config_types import Config, VENDORS
from tracker.core.reduce import recipient_key
from tracker.core.states import State
from tracker.db import queries as q
from tracker.db import reducer


class RowError(ValueError):
    """This row cannot be taken in; the text says why (shown in tracker.intake_problems)."""


@dataclass
class IntakeResult:
    rows: int = 0
    messages: int = 0
    refused: int = 0


def observations_for(row, now: datetime) -> tuple[list[Observation], str | None]:
    """What a submission row says, as observations, and a note when the vendor also reported an
    account problem (e.g. Sparrow's partial success on a billing error). Pure."""
    vendor = row["vendor"]
    if vendor not in VENDORS:
        raise RowError(f"unknown vendor {vendor!r}; expected one of {', '.join(VENDORS)}")
    adapter = adapters.get(vendor)
    if row["vendor_ref"] is not None:
        try:
            ref = adapter.normalize_ref(row["vendor_ref"])
        except ParseError as e:
            raise RowError(f"vendor_ref cannot be read: {e}") from None
        if not ref:
            raise RowError("vendor_ref is empty")
        recipient = digits(row["recipient"]) if row["recipient"] else None
        if adapter.KEYED_BY_RECIPIENT and not recipient:
            raise RowError(f"{vendor} ids name a batch: recipient is required with vendor_ref")
        return [Observation(vendor, ref, recipient, State.submitted, code="submitted",
                            event_at=row["submitted_at"])], None
    if row["response"] is None:
        raise RowError("row has neither vendor_ref nor response")
    try:
        # asyncpg hands jsonb over as text: decoded here (a ParseError if it were not JSON).
        result = adapter.parse_send(json_value(row["response"], f"{vendor} send response"),
                                    json_value(row["request"], f"{vendor} send request"), now)
    except ParseError as e:
        raise RowError(f"cannot read the {vendor} send response: {e}") from None
    note = None
    if result.account_error is not None:
        e = result.account_error
        note = f"the vendor reported an account problem: {e.code} {e.reason}"
    if not result.observations:
        raise RowError(note or f"the {vendor} send response names no message")
    return result.observations, note


async def take_in(conn: asyncpg.Connection, config: Config, batch_size: int | None = None) -> IntakeResult:
    """Take in one batch of new submission rows, in one transaction. Returns what it did."""
    out = IntakeResult()
    now = datetime.now(timezone.utc)
    created: list[int] = []
    async with conn.transaction():
        rows = await conn.fetch(q.CLAIM_SUBMISSIONS, batch_size or config.intake.batch_size)
        for row in rows:
            out.rows += 1
            try:
                found, note = observations_for(row, now)
            except RowError as e:
                await conn.execute(q.FINISH_SUBMISSION, row["id"], str(e), None, 0, None)
                out.refused += 1
                continue
            found = _name_refused(row["id"], found)
            created += await _create(conn, config, row, found)
            await reducer.apply(conn, "submit", found, received_at=now)
            await conn.execute(q.FINISH_SUBMISSION, row["id"], None, None, len(found), note)
            out.messages += len(found)
    if created:  # again after commit: reports stored meanwhile (see reducer.adopt_orphans)
        await reducer.adopt_after_commit(conn, created)
    return out


def _name_refused(submission_id: int, found: list[Observation]) -> list[Observation]:
    """A message the vendor refused before giving it an id is keyed by its submission row."""
    return [replace(o, vendor_ref=f"refused:{submission_id}:{i}") if o.vendor_ref == NO_REF else o
            for i, o in enumerate(found)]


async def _create(conn, config: Config, row, found: list[Observation]) -> list[int]:
    """Insert the messages these observations name; returns the ids of those created."""
    cols: list[list] = [[] for _ in range(10)]
    submitted_at = row["submitted_at"]
    for o in found:
        vc = config.vendors[o.vendor]
        window = submitted_at + timedelta(seconds=vc.tracking_window_s)
        if o.deadline is not None:  # the vendor retries until then: wait for it, plus a margin
            window = max(window, o.deadline + timedelta(seconds=vc.deadline_margin_s))
        polled = adapters.get(o.vendor).POLLS and vc.enabled
        values = (o.vendor, o.vendor_ref, recipient_key(o.vendor, o.recipient), o.recipient,
                  row["client_ref"], row["id"], submitted_at, o.deadline, window,
                  submitted_at + timedelta(seconds=vc.first_poll_s) if polled else None)
        for col, v in zip(cols, values):
            col.append(v)
    created = await conn.fetch(q.INSERT_MESSAGES, *cols)
    if created:
        await reducer.adopt_orphans(conn, [r["id"] for r in created])
    return [r["id"] for r in created]
