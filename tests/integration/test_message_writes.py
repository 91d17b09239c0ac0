"""One way to write a state: the same reports leave a message the same, whichever way they
come (reducer.apply for postbacks and the tracker, reducer.apply_polls for the poller), since
both write through the one statement WRITE_MESSAGES."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tracker.adapters.base import Observation
from tracker.core.states import Failure, State
from tracker.db import reducer

AT = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
COLUMNS = ("state", "delivered_at", "failure_code", "failure_reason", "failure_permanent",
           "last_report_at", "operator")


def report(ref: str, state: State, minutes: int, *, failure: Failure | None = None,
           operator: str | None = None) -> Observation:
    return Observation(vendor="sparksender", vendor_ref=ref, recipient=None, state=state,
                       code=state.name, event_at=AT + timedelta(minutes=minutes), failure=failure,
                       operator=operator)


STORY = [  # batches of reports about one message, in the order they arrive
    [report("{}", State.sent, 1, operator="Dialog")],
    [report("{}", State.failed, 2, failure=Failure("3", "Fail", None))],
    [report("{}", State.accepted, 0)],  # late and lower: changes nothing but the last report
    [report("{}", State.delivered, 3, operator="Mobitel")],  # a late delivery corrects it
    [report("{}", State.read, 4)],
]


async def message(conn, ref: str) -> tuple:
    row = await conn.fetchrow("SELECT * FROM tracker.messages WHERE vendor_ref = $1", ref)
    return tuple(row[c] for c in COLUMNS)


@pytest.mark.parametrize("steps", [len(STORY), 2, 1])
async def test_every_source_writes_a_message_alike(pool, steps):
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO tracker.messages (vendor, vendor_ref, submitted_at, next_poll_at)"
                           " SELECT 'sparksender', unnest($1::text[]), $2, now()",
                           ["by-postback", "by-tracker", "by-poll"], AT)
        ids = {r["vendor_ref"]: r["id"] for r in await conn.fetch(
            "SELECT id, vendor_ref FROM tracker.messages")}
        for i, batch in enumerate(STORY[:steps]):
            received = AT + timedelta(hours=1, minutes=i)
            for source in ("postback", "tracker"):
                ref = f"by-{source}"
                await reducer.apply(conn, source, [_for(o, ref) for o in batch], received_at=received)
            async with conn.transaction():
                [r] = await conn.fetch("SELECT id, state, submitted_at FROM tracker.messages"
                                       " WHERE id = $1 FOR NO KEY UPDATE", ids["by-poll"])
                mid = ids["by-poll"]
                await reducer.apply_polls(conn, {mid: State[r["state"]]},
                                          [(mid, _for(o, "by-poll")) for o in batch],
                                          [(mid, received + timedelta(minutes=5), 1)],
                                          received_at=received, submitted_at={mid: r["submitted_at"]})
        written = {ref: await message(conn, ref) for ref in ids}
        histories = {ref: [tuple(r) for r in await conn.fetch(
            "SELECT from_state::text, to_state::text, occurred_at, failure_code, is_correction"
            " FROM tracker.transitions WHERE message_id = $1 ORDER BY event_id", mid)]
            for ref, mid in ids.items()}
    assert written["by-postback"] == written["by-tracker"] == written["by-poll"]
    assert histories["by-postback"] == histories["by-tracker"] == histories["by-poll"]
    if steps == len(STORY):
        state, delivered_at, code, reason, permanent, last_report, operator = written["by-poll"]
        assert (state, delivered_at, code, reason, permanent) == ("read", AT + timedelta(minutes=3),
                                                                   None, None, None)
        assert last_report == AT + timedelta(hours=1, minutes=4) and operator == "Mobitel"
        assert [h[1] for h in histories["by-poll"]] == ["sent", "failed", "delivered", "read"]
        assert [h[4] for h in histories["by-poll"]] == [False, False, True, False]


def _for(o: Observation, ref: str) -> Observation:
    from dataclasses import replace
    return replace(o, vendor_ref=ref)
