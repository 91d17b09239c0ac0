"""The reducer: the only way any message's state changes.

apply() takes a batch of observations in one transaction: every observation appended, states
raised by the rule (tracker.core), one transition row per real change, one NOTIFY per batch.
Reports for messages not yet known are stored with no message and adopted when it appears.
apply_polls() is the same for the poller's write-back, with each message's release folded into
its one update. Whatever the source, a message is written by one statement, WRITE_MESSAGES
(write_messages), with rows laid out as tracker.db.rows.MessageWrite, together with the
transitions that got it there. A batch of reports takes four round trips: BEGIN, the reports
stored with their messages locked (their states come back), the transitions and messages
written, COMMIT.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable, Mapping, Sequence

import asyncpg

from tracker.adapters.base import Observation
from tracker.core.reduce import PlannedTransition, Report, delivery_times, plan, report_time
from tracker.core.states import State
from tracker.db import DB_ERRORS, transaction
from tracker.db import clock
from tracker.db import queries as q
from tracker.db.counts import count_implausible_times, count_observations, count_transitions
from tracker.db.rows import MessageWrite, message_write, observation_row, rows_json, transitions_json
from tracker.logging import get_logger

log = get_logger("tracker.reducer")


@dataclass
class Applied:
    stored: int = 0  # observations appended
    orphans: int = 0  # of which waiting for their message
    orphan_ids: list[int] = field(default_factory=list)  # (their observation ids)
    unmapped: int = 0  # of which with a vendor code we do not map
    transitions: list[PlannedTransition] = field(default_factory=list)
    claimed: list[int] = field(default_factory=list)  # postbacks claimed (apply's `claim`)


async def apply(
    conn: asyncpg.Connection,
    source: str,
    observations: Sequence[Observation],
    *,
    received_at: datetime | Sequence[datetime] | None = None,
    postback_id: int | Sequence[int | None] | None = None,
    claim: Sequence[int] | None = None,
) -> Applied:
    """Append observations and raise states, in one transaction (the caller's, if it holds
    one). `received_at` and `postback_id` are one value for all observations, or one per
    observation (a batch of postbacks, each with its own time and raw row). With `claim`
    (postbacks just stored: their ids), the same statement first claims those rows
    (queries.CLAIM_AND_INSERT_OBSERVATIONS) and only the claimed rows' observations are
    appended; Applied.claimed says which."""
    if not observations and claim is None:
        return Applied()
    n = len(observations)
    now = received_at if isinstance(received_at, Sequence) else [received_at or clock.now()] * n
    postback_ids = postback_id if isinstance(postback_id, Sequence) else [postback_id] * n
    if len(now) != n or len(postback_ids) != n:
        raise ValueError("received_at and postback_id: one value, or one per observation")
    given = rows_json([*observation_row(o), at, pb, o.operator]
                       for o, at, pb in zip(observations, now, postback_ids))
    claimed: list[int] = []
    async with transaction(conn):
        if claim is None:
            rows = await conn.fetch(q.INSERT_OBSERVATIONS, given, source)
        else:
            rows = await conn.fetch(q.CLAIM_AND_INSERT_OBSERVATIONS, given, source, list(claim))
            claimed = sorted({r["claimed_id"] for r in rows})
            rows = [r for r in rows if r["id"] is not None]
        result = await _raise_states(conn, rows)
    count_observations(source, ((r["vendor"], r["state"], r["code"], False) for r in rows))  # (no lookups)
    count_implausible_times((r["vendor"], r["occurred_at"], r["received_at"], r["submitted_at"])
                            for r in rows)
    result.stored = len(rows)
    result.orphan_ids = [r["id"] for r in rows if r["message_id"] is None]
    result.orphans = len(result.orphan_ids)
    result.unmapped = sum(1 for r in rows if r["state"] is None)
    result.claimed = claimed
    return result


async def apply_polls(
    conn: asyncpg.Connection,
    current: Mapping[int, State],
    found: Sequence[tuple[int, Observation]],
    releases: Sequence[tuple[int, datetime, int]],
    *,
    received_at: datetime,
    submitted_at: Mapping[int, datetime],
) -> Applied:
    """The poller's write-back, in the caller's transaction: the same effects as
    `apply(conn, "poll", observations)` followed by handing the messages back, in the same one
    statement (WRITE_MESSAGES), with one row per message.

    The caller holds every message of `current` locked (FOR NO KEY UPDATE, in id order:
    queries.HOLD_CLAIMED) and read its state under that lock. `found` are the poll's
    observations of those messages, as (message id, observation); `releases` are (message id,
    next poll, polls to add) for the messages to hand back; `submitted_at`, the messages' (read
    with their states), bounds their vendor times (core.reduce.plausible): required, so that no
    caller leaves the bound out without a word."""
    reports: list[Report] = []
    reported: set[int] = set()
    if found:
        stored = await insert_observations_of(conn, "poll", found, received_at, count=False,
                                              operators=False)
        for oid, (mid, o) in zip(stored, found):
            reported.add(mid)
            if o.state is not None:
                f = o.failure
                reports.append(Report(oid, mid, o.state, "poll",
                                      report_time(o.event_at, received_at, submitted_at[mid]),
                                      f.code if f else None, f.reason if f else None,
                                      f.permanent if f else None))
    planned = plan(current, reports)
    last = {t.message_id: t for t in planned}  # the last step per message is its new state
    delivered = delivery_times(reports)
    named = {mid: o.operator for mid, o in found if o.operator is not None}
    await write_messages(conn, [
        _message_write(mid, last.get(mid), delivered.get(mid),
                       received_at if mid in reported else None, named.get(mid), received_at,
                       next_at, n)
        for mid, next_at, n in releases], planned)
    unmapped = count_observations("poll", ((o.vendor, o.state, o.code, o.unknown_id) for _, o in found))
    count_implausible_times((o.vendor, o.event_at, received_at, submitted_at[mid]) for mid, o in found)
    vendor_of = {mid: o.vendor for mid, o in found}
    count_transitions(planned, vendor_of)
    return Applied(stored=len(found), unmapped=unmapped, transitions=planned)


async def insert_observations_of(conn: asyncpg.Connection, source: str,
                                 found: Sequence[tuple[int, Observation]], received_at: datetime,
                                 *, count: bool = True, operators: bool = True) -> list[int]:
    """Append observations of messages whose ids are known (the caller holds or made them):
    (message id, observation) each, received at one time. Returns their ids, in the order
    given. Counts them in the metrics unless the caller does (`count`); keeps the operators
    they name on their messages unless the caller writes the messages itself (`operators`)."""
    stored = await conn.fetch(
        q.INSERT_POLL_OBSERVATIONS,
        rows_json([*observation_row(o), mid, o.operator] for mid, o in found), received_at, source)
    if len(stored) != len(found):
        raise RuntimeError("observations stored do not match those given")
    if operators:
        named = {mid: o.operator for mid, o in found if o.operator is not None}
        await write_messages(conn, [message_write(mid, operator=op, operator_at=received_at)
                                    for mid, op in named.items()])
    if count:
        count_observations(source, ((o.vendor, o.state, o.code, o.unknown_id) for _, o in found))
    return sorted(r[0] for r in stored)  # ids follow the order given


def remap(planned: Sequence[PlannedTransition], message_ids: Sequence[int | None],
          observation_ids: Sequence[int | None]) -> list[PlannedTransition]:
    """Transitions planned before their rows had ids (message_id and observation_id were indexes
    into `message_ids` and `observation_ids`), with the ids the database gave; those of messages
    that got no id (None) are dropped."""
    out = []
    for t in planned:
        mid = message_ids[t.message_id]
        if mid is not None:
            r = t.report  # built field by field: dataclasses.replace costs microseconds each
            r = Report(observation_ids[r.observation_id], mid, r.state, r.source, r.occurred_at,
                       r.failure_code, r.failure_reason, r.failure_permanent)
            out.append(PlannedTransition(mid, t.from_state, t.to_state, t.is_correction, r))
    return out


async def insert_transitions(conn: asyncpg.Connection, planned: Sequence[PlannedTransition],
                             vendor_of: Mapping[int, str]) -> None:
    """Append the first transitions of messages just made (intake) and count them (the caller
    notifies, once per batch)."""
    await conn.execute(q.INSERT_TRANSITIONS, transitions_json(planned))
    count_transitions(planned, vendor_of)


async def adopt_orphans(conn: asyncpg.Connection, message_ids: Iterable[int] | None = None, *,
                        observation_ids: Iterable[int] | None = None,
                        max_age_s: float | None = None) -> Applied:
    """Attach waiting reports to their messages (these messages' reports, or these reports, or
    all that can be now: with `max_age_s`, those received that recently) and apply them.

    A report stored while its message is being created (in a transaction not committed yet)
    misses it, and that transaction's own adoption misses the report. Both sides therefore
    look again after they commit (intake for the messages it made, postbacks for the orphans
    they stored): whichever commits second then sees the other."""
    if message_ids is not None:
        query, arg = q.ADOPT_ORPHANS_OF_MESSAGES, list(message_ids)
    elif observation_ids is not None:
        query, arg = q.ADOPT_ORPHAN_REPORTS, list(observation_ids)
    else:
        query, arg = q.ADOPT_RECENT_ORPHANS, max_age_s
    async with transaction(conn):
        rows = await conn.fetch(query + q.ADOPT_WAITING, arg)
        return await _raise_states(conn, rows)


async def adopt_after_commit(conn: asyncpg.Connection, message_ids: Iterable[int] | None = None, *,
                             observation_ids: Iterable[int] | None = None) -> int:
    """adopt_orphans() as the second look after a commit: a failure loses nothing (the orphan
    sweep adopts them later), so it is logged, not raised. Returns the transitions made."""
    try:
        adopted = await adopt_orphans(conn, message_ids, observation_ids=observation_ids)
    except DB_ERRORS as e:
        log.warning("orphans left to the sweep", error=type(e).__name__)
        return 0
    return len(adopted.transitions)


async def _raise_states(conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]) -> Applied:
    """Plan and write what stored reports do to their messages. Each row carries its message's
    state, read under the row lock its statement took (queries.reducer._LOCKED)."""
    current = {r["message_id"]: State[r["current_state"]] for r in rows
               if r["current_state"] is not None}
    reports = [  # occurred_at: the vendor's time, else the time received (core.reduce.report_time)
        Report(r["id"], r["message_id"], State[r["state"]], r["source"],
               report_time(r["occurred_at"], r["received_at"], r["submitted_at"]),
               r["failure_code"], r["failure_reason"], r["failure_permanent"])
        for r in rows
        if r["message_id"] in current and r["state"] is not None
    ]
    touched: dict[int, datetime] = {}  # message -> its latest report's receive time
    named: dict[int, tuple[datetime, str]] = {}  # message -> its latest report naming an operator
    for r in rows:
        mid = r["message_id"]
        if mid not in current:  # no message (an orphan), or none any more
            continue
        at = r["received_at"]
        touched[mid] = max(touched[mid], at) if mid in touched else at
        if r["operator"] is not None and (mid not in named or at >= named[mid][0]):
            named[mid] = (at, r["operator"])
    if not touched:
        return Applied()
    planned = plan(current, reports)
    last = {t.message_id: t for t in planned}  # the last step per message is its new state
    delivered = delivery_times(reports)
    await write_messages(conn, [
        _message_write(mid, last.get(mid), delivered.get(mid), at,
                       *named.get(mid, (None, None))[::-1])
        for mid, at in touched.items()], planned)
    count_transitions(planned, {r["message_id"]: r["vendor"] for r in rows})
    return Applied(transitions=planned)


def _message_write(mid: int, t: PlannedTransition | None, delivered_at: datetime | None,
                   reported_at: datetime | None, operator: str | None = None,
                   operator_at: datetime | None = None, next_poll_at: datetime | None = None,
                   polls: int = 0) -> MessageWrite:
    """A message's row of WRITE_MESSAGES: its last planned step (if any), the delivery time its
    reports give (core.reduce.delivery_times: not the last step's time, which may be a `read`'s)
    and its reports."""
    if t is None:
        return message_write(mid, occurred_at=delivered_at, reported_at=reported_at,
                             operator=operator, operator_at=operator_at,
                             next_poll_at=next_poll_at, polls=polls)
    r = t.report
    return MessageWrite(mid, t.to_state.name, delivered_at, r.failure_code, r.failure_reason,
                        r.failure_permanent, reported_at, operator, operator_at, next_poll_at, polls)


async def write_messages(conn: asyncpg.Connection, rows: Sequence[MessageWrite],
                         planned: Sequence[PlannedTransition] = ()) -> None:
    """The one way message states are written (queries.WRITE_MESSAGES), for every source, with
    the transitions planned for them (and, if any, the batch's one NOTIFY). The caller holds
    the messages locked."""
    if rows:
        await conn.execute(q.WRITE_MESSAGES, rows_json(rows), [row.id for row in rows],
                           transitions_json(planned))
