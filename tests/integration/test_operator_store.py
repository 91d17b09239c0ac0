"""messages.operator: the operator the latest report naming one gave, whichever way the report
came in (a postback through the reducer, an orphan adopted at intake, a poll's write-back)."""
from datetime import datetime, timedelta, timezone

from tracker.adapters.base import Observation
from tracker.config_types import Config
from tracker.core.states import State
from tracker.db import reducer
from tracker.intake import take_in

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def report(ref, state, operator=None, vendor="skycore"):
    return Observation(vendor=vendor, vendor_ref=ref, recipient=None, state=state, code=state.name if state else "X99", operator=operator)


async def operator_of(conn, ref):
    return await conn.fetchval("SELECT operator FROM tracker.messages WHERE vendor_ref = $1", ref)


async def test_postback_operator_kept_latest_wins_never_cleared(pool):
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO tracker.messages (vendor, vendor_ref) VALUES ('skycore', 'a')")
        await reducer.apply(conn, "postback", [report("a", State.sent, "AT&T")], received_at=T0)
        assert await operator_of(conn, "a") == "AT&T"
        # A report without one (or an unmapped code) keeps it.
        await reducer.apply(conn, "postback", [report("a", None)], received_at=T0 + timedelta(seconds=5))
        await reducer.apply(conn, "postback", [report("a", State.delivered)],
                            received_at=T0 + timedelta(seconds=6))
        assert await operator_of(conn, "a") == "AT&T"
        # A later report naming another (the number was ported) replaces it ...
        await reducer.apply(conn, "postback", [report("a", State.delivered, "T-Mobile")],
                            received_at=T0 + timedelta(seconds=10))
        assert await operator_of(conn, "a") == "T-Mobile"
        # ... an older one received late does not.
        await reducer.apply(conn, "postback", [report("a", State.sent, "Sprint")],
                            received_at=T0 + timedelta(seconds=1))
        assert await operator_of(conn, "a") == "T-Mobile"
        # In one batch, the latest received wins, whichever comes first in the batch.
        await reducer.apply(conn, "postback",
                            [report("a", State.read, "Later"), report("a", State.read, "Earlier")],
                            received_at=[T0 + timedelta(seconds=30), T0 + timedelta(seconds=20)])
        assert await operator_of(conn, "a") == "Later"
        await reducer.apply(conn, "postback",
                            [report("a", State.read, "Earlier again"), report("a", State.read, "Latest")],
                            received_at=[T0 + timedelta(seconds=40), T0 + timedelta(seconds=50)])
        assert await operator_of(conn, "a") == "Latest"
        stored = await conn.fetchval("SELECT count(*) FROM tracker.observations WHERE operator IS NOT NULL")
        assert stored == 7


async def test_older_report_names_the_operator_where_none_is_known(pool):
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO tracker.messages (vendor, vendor_ref) VALUES ('skycore', 'b')")
        await reducer.apply(conn, "postback", [report("b", State.sent)], received_at=T0 + timedelta(hours=1))
        await reducer.apply(conn, "postback", [report("b", State.sent, "Vodafone")], received_at=T0)
        assert await operator_of(conn, "b") == "Vodafone"


async def test_orphan_report_gives_its_operator_when_adopted_at_intake(pool):
    async with pool.acquire() as conn:
        applied = await reducer.apply(conn, "postback", [report("c", State.delivered, "Ncell")])
        assert applied.orphans == 1
        await conn.execute(
            "INSERT INTO tracker.submissions (vendor, vendor_ref, recipient) VALUES ('skycore', 'c', '9779801234567')")
        await take_in(conn, Config())
        row = await conn.fetchrow("SELECT operator, state, country FROM tracker.messages WHERE vendor_ref = 'c'")
        assert (row["operator"], row["state"], row["country"]) == ("Ncell", "delivered", "NP")


async def test_known_message_observations_store_the_operator(pool):
    async with pool.acquire() as conn:
        mid = await conn.fetchval(
            "INSERT INTO tracker.messages (vendor, vendor_ref) VALUES ('sparksender', 'd') RETURNING id")
        async with conn.transaction():
            await reducer.insert_observations_of(conn, "poll", [(mid, report("d", State.sent, "Dialog", "sparksender"))],
                                                 T0)
        assert await operator_of(conn, "d") == "Dialog"
        assert await conn.fetchval("SELECT operator FROM tracker.observations WHERE message_id = $1", mid) == "Dialog"
