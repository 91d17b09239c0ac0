"""A message's delivery time on a real PostgreSQL: the earliest time any of its `delivered` or
`read` reports gives, however its reports were batched and in whatever order they came, through
every writer (reducer.apply, reducer.apply_polls); the rollup's latency histogram (sql/009, 014)
and the views on it follow message_status.delivered_at."""
from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings, strategies as st

from tracker.adapters.base import Observation
from tracker.core.states import Failure, State
from tracker.db import reducer

T0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=2)
refs = itertools.count()  # each example's messages are its own (no database per example)


def report(ref: str, state: State, secs: int) -> Observation:
    failure = Failure("30", "failed") if state.is_failure else None
    return Observation(vendor="twilio", vendor_ref=ref, recipient=None, state=state,
                       code=state.name, event_at=T0 + timedelta(seconds=secs), failure=failure)


async def make(conn, names: list[str]) -> dict[str, int]:
    rows = await conn.fetch(
        "INSERT INTO tracker.messages (vendor, vendor_ref, submitted_at, next_poll_at)"
        " SELECT 'twilio', unnest($1::text[]), $2, now() RETURNING id, vendor_ref", names, T0)
    return {r["vendor_ref"]: r["id"] for r in rows}


async def apply_batch(conn, how: str, batch: list[Observation], ids: dict[str, int]) -> None:
    if how == "postback":
        await reducer.apply(conn, "postback", batch)
        return
    async with conn.transaction():  # as the poller does: its claim held, read under the lock
        mine = sorted({ids[o.vendor_ref] for o in batch})
        locked = await conn.fetch("SELECT id, state, submitted_at FROM tracker.messages"
                                  " WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE", mine)
        held = {r["id"]: State[r["state"]] for r in locked}
        await reducer.apply_polls(conn, held, [(ids[o.vendor_ref], o) for o in batch],
                                  [(mid, T0 + timedelta(days=1), 1) for mid in mine],
                                  received_at=datetime.now(timezone.utc),
                                  submitted_at={r["id"]: r["submitted_at"] for r in locked})


async def delivered_at(conn, ids: dict[str, int]) -> dict[str, datetime | None]:
    return {r["vendor_ref"]: r["delivered_at"] for r in await conn.fetch(
        "SELECT vendor_ref, delivered_at FROM tracker.message_status WHERE message_id = ANY($1)",
        list(ids.values()))}


async def rollup_agrees(conn) -> None:
    """The rollup's latency counts (route_deltas, not folded here) are those of the messages'
    delivery times, bucket by bucket."""
    rolled = {r[0]: r[1] for r in await conn.fetch(
        "SELECT bucket, sum(n) FROM tracker.route_deltas WHERE bucket IS NOT NULL"
        " GROUP BY 1 HAVING sum(n) <> 0")}
    counted = {r[0]: r[1] for r in await conn.fetch(
        "SELECT tracker.latency_bucket(submitted_at, delivered_at), count(*)"
        " FROM tracker.messages WHERE delivered_at IS NOT NULL GROUP BY 1")}
    assert rolled == counted


async def test_a_read_in_the_same_batch_does_not_stand_for_the_delivery(pool):
    """The review's case: delivered +5 s, read +600 s; in one batch the message was given the
    read's time (600 s); in two, 5 s; read first, then delivered: 600 s."""
    cases = {
        "two-batches": [[State.delivered], [State.read]],
        "one-batch": [[State.delivered, State.read]],
        "read-first": [[State.read], [State.delivered]],
    }
    at = {State.delivered: 5, State.read: 600}
    async with pool.acquire() as conn:
        for how in ("postback", "poll"):
            ids = await make(conn, [f"{how}-{name}" for name in cases])
            for name, batches in cases.items():
                for b in batches:
                    await apply_batch(conn, how, [report(f"{how}-{name}", s, at[s]) for s in b], ids)
            assert set((await delivered_at(conn, ids)).values()) == {T0 + timedelta(seconds=5)}, how
        latency = await conn.fetchrow(
            "SELECT delivered, p50_s, p99_s FROM tracker.delivery_latency WHERE vendor = 'twilio'")
        assert latency["delivered"] == 6 and latency["p99_s"] < 6  # every one within 5 s
        await rollup_agrees(conn)


sequences = st.lists(
    st.tuples(st.integers(0, 2),  # which of three messages
              st.sampled_from([State.accepted, State.sent, State.failed, State.expired,
                               State.delivered, State.read]),
              st.integers(0, 3600)),  # its event time, seconds after submission
    min_size=1, max_size=10)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seq=sequences, cuts=st.lists(st.booleans(), min_size=10, max_size=10),
       how=st.sampled_from(["postback", "poll"]))
async def test_delivery_time_is_the_earliest_delivery_reported_however_batched(pool, seq, cuts, how):
    tag = next(refs)
    names = [f"p{tag}-{i}" for i in range(3)]
    batches, batch = [], []
    for (i, state, secs), cut in zip(seq, cuts):  # the reports in arrival order, cut into batches
        batch.append(report(names[i], state, secs))
        if cut:
            batches.append(batch)
            batch = []
    batches += [batch] if batch else []
    async with pool.acquire() as conn:
        ids = await make(conn, names)
        for b in batches:
            await apply_batch(conn, how, b, ids)
        got = await delivered_at(conn, ids)
        await rollup_agrees(conn)
    for i, name in enumerate(names):
        times = [secs for j, state, secs in seq if j == i and state >= State.delivered]
        assert got[name] == (T0 + timedelta(seconds=min(times)) if times else None), name


async def test_a_vendor_time_no_report_can_mean_is_kept_but_the_time_received_stands_for_it(pool, monkeypatch):
    # engageSPARK's successT as Go's zero time made a delivery time the year 1 for good (the
    # earliest is kept), one 400 days ahead moved the day's p90 to 191 days, and Sparrow's UTC
    # times read as Nepal's put every delivery 5 h 45 min before its submission (latency 0).
    import structlog

    from tracker import metrics
    from tracker.db import counts
    from tracker.throttle import Throttle

    monkeypatch.setattr(counts, "_times_log", Throttle(every_s=0.0))  # every batch's line

    def odd(ref: str, at: datetime) -> Observation:
        return Observation(vendor="twilio", vendor_ref=ref, recipient=None, state=State.delivered,
                           code="delivered", event_at=at)

    counted = metrics.event_times_replaced.labels("twilio")
    async with pool.acquire() as conn:
        for how in ("postback", "poll"):
            zero, ahead, early, fine = (f"{how}-{w}" for w in ("zero", "ahead", "early", "fine"))
            ids = await make(conn, [zero, ahead, early, fine])
            before = counted._value.get()
            with structlog.testing.capture_logs() as logs:
                await apply_batch(conn, how, [odd(zero, datetime(1, 1, 1, tzinfo=timezone.utc)),
                                              odd(ahead, datetime.now(timezone.utc) + timedelta(days=400)),
                                              odd(early, T0 - timedelta(hours=5, minutes=45)),
                                              report(fine, State.delivered, 60)], ids)
            got = await delivered_at(conn, ids)
            now = datetime.now(timezone.utc)
            assert all(abs((got[r] - now).total_seconds()) < 60 for r in (zero, ahead, early)), (how, got)
            assert got[fine] == T0 + timedelta(seconds=60)
            assert counted._value.get() - before == 3
            [line] = [e for e in logs if e["event"].startswith("vendor event times no report can mean")]
            assert (line["vendor"], line["reports"]) == ("twilio", 3)
            kept = {r[0] for r in await conn.fetch(
                "SELECT event_at FROM tracker.observations WHERE message_id = $1", ids[zero])}
            assert kept == {datetime(1, 1, 1, tzinfo=timezone.utc)}  # the vendor's, as it said
            occurred = await conn.fetchval("SELECT occurred_at FROM tracker.transitions"
                                           " WHERE message_id = $1 AND to_state = 'delivered'", ids[ahead])
            assert abs((occurred - now).total_seconds()) < 60
        await rollup_agrees(conn)



async def test_claimed_postbacks_never_take_a_time_long_before_submission(pool):
    # The claim path (process_received: CLAIM_AND_INSERT_OBSERVATIONS) bounds a vendor time by
    # the message's submission as the other paths do (reviewer B, session 28).
    t0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=2)
    async with pool.acquire() as conn:
        mid = await conn.fetchval("INSERT INTO tracker.messages (vendor, vendor_ref, submitted_at)"
                                  " VALUES ('twilio', 'claim-early', $1) RETURNING id", t0)
        pid = await conn.fetchval("INSERT INTO tracker.postbacks (vendor, method, body, received_at)"
                                  " VALUES ('twilio', 'POST', '{}', now()) RETURNING id")
        early = t0 - timedelta(hours=5, minutes=45)
        o = Observation(vendor="twilio", vendor_ref="claim-early", recipient=None,
                        state=State.delivered, code="delivered", event_at=early)
        await reducer.apply(conn, "postback", [o], postback_id=pid, claim=[pid])
        at = await conn.fetchval("SELECT delivered_at FROM tracker.messages WHERE id = $1", mid)
        assert at is not None and at >= t0, at
