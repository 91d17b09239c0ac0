"""The reducer on a real PostgreSQL."""
import asyncio
import random

from tests.conftest import until_waiting_on_a_lock
from tracker.adapters.base import Observation
from tracker.core.states import Failure, State
from tracker.db import reducer


def obs(ref, state, vendor="sparksender", recipient=None, code=None, failure=None):
    return Observation(vendor=vendor, vendor_ref=ref, recipient=recipient, state=state,
                       code=code or (state.name if state is not None else "x"), failure=failure)


async def make_messages(conn, vendor, refs):
    rows = await conn.fetch(
        "INSERT INTO tracker.messages (vendor, vendor_ref) SELECT $1, unnest($2::text[]) RETURNING id",
        vendor, refs)
    return [r["id"] for r in rows]


async def test_concurrent_shuffled_batches_end_at_max_rank(pool):
    rnd = random.Random(7)
    refs = [f"m{i}" for i in range(1000)]
    async with pool.acquire() as conn:
        await make_messages(conn, "sparksender", refs)
    reports = []
    for _ in range(10_000):
        reports.append(obs(rnd.choice(refs), rnd.choice(list(State))))
    reports += rnd.sample(reports, 2000)  # duplicates
    rnd.shuffle(reports)
    expected = {}
    for o in reports:
        expected[o.vendor_ref] = max(expected.get(o.vendor_ref, State.submitted), o.state)

    batches = [reports[i:i + 250] for i in range(0, len(reports), 250)]

    async def worker(my_batches):
        async with pool.acquire() as conn:
            for b in my_batches:
                await reducer.apply(conn, "poll", b)

    await asyncio.gather(*(worker(batches[i::6]) for i in range(6)))

    async with pool.acquire() as conn:
        states = {r["vendor_ref"]: State[r["state"]] for r in await conn.fetch(
            "SELECT vendor_ref, state FROM tracker.messages")}
        n_obs = await conn.fetchval("SELECT count(*) FROM tracker.observations")
        chains = await conn.fetch(
            "SELECT m.vendor_ref, array_agg(t.from_state::text ORDER BY t.event_id) AS f,"
            " array_agg(t.to_state::text ORDER BY t.event_id) AS t"
            " FROM tracker.transitions t JOIN tracker.messages m ON m.id = t.message_id"
            " GROUP BY m.vendor_ref")
    assert n_obs == len(reports)
    for ref in refs:
        assert states[ref] == expected.get(ref, State.submitted)
    for row in chains:
        to = [State[s] for s in row["t"]]
        frm = [State[s] for s in row["f"]]
        assert to == sorted(set(to)), row  # strictly increasing, no rank repeated
        assert to[-1] == expected[row["vendor_ref"]]
        assert frm[0] == State.submitted and frm[1:] == to[:-1]  # one unbroken chain


async def test_lower_reports_are_recorded_but_change_nothing(pool):
    async with pool.acquire() as conn:
        [mid] = await make_messages(conn, "sparksender", ["42"])
        r1 = await reducer.apply(conn, "poll", [obs("42", State.delivered)])
        r2 = await reducer.apply(conn, "poll", [obs("42", State.sent), obs("42", State.delivered)])
        assert len(r1.transitions) == 1 and r2.transitions == []
        assert await conn.fetchval("SELECT count(*) FROM tracker.observations WHERE message_id=$1", mid) == 3
        assert await conn.fetchval("SELECT count(*) FROM tracker.transitions WHERE message_id=$1", mid) == 1


async def test_unmapped_code_is_recorded_not_guessed(pool):
    async with pool.acquire() as conn:
        [mid] = await make_messages(conn, "sparksender", ["7"])
        r = await reducer.apply(conn, "poll", [obs("7", None, code="99")])
        assert r.unmapped == 1 and r.transitions == []
        row = await conn.fetchrow("SELECT state, code FROM tracker.observations WHERE message_id=$1", mid)
        assert row["state"] is None and row["code"] == "99"
        assert await conn.fetchval("SELECT state::text FROM tracker.messages WHERE id=$1", mid) == "submitted"


async def test_failure_details_and_correction(pool):
    async with pool.acquire() as conn:
        [mid] = await make_messages(conn, "sparksender", ["9"])
        await reducer.apply(conn, "poll", [obs("9", State.failed, code="3",
                                               failure=Failure("3", "Fail", None))])
        st = await conn.fetchrow("SELECT * FROM tracker.message_status WHERE message_id=$1", mid)
        assert (st["state"], st["failure_code"], st["failure_reason"], st["is_final"]) == ("failed", "3", "Fail", True)
        await reducer.apply(conn, "poll", [obs("9", State.delivered, code="2")])
        st = await conn.fetchrow("SELECT * FROM tracker.message_status WHERE message_id=$1", mid)
        assert st["state"] == "delivered" and st["failure_code"] is None and st["delivered_at"] is not None
        hist = await conn.fetch("SELECT * FROM tracker.message_history WHERE message_id=$1 ORDER BY event_id", mid)
        assert [(h["from_state"], h["to_state"], h["is_correction"]) for h in hist] == [
            ("submitted", "failed", False), ("failed", "delivered", True)]
        assert hist[0]["failure_code"] == "3"


async def test_report_before_message_is_applied_when_it_appears(pool):
    async with pool.acquire() as conn:
        r = await reducer.apply(conn, "postback", [obs("T1", State.delivered, vendor="skycore")])
        assert r.orphans == 1 and not r.transitions
        problems = await conn.fetch("SELECT * FROM tracker.intake_problems WHERE kind='orphan_report'")
        assert len(problems) == 1
        [mid] = await make_messages(conn, "skycore", ["T1"])
        adopted = await reducer.adopt_orphans(conn, [mid])
        assert [(t.from_state, t.to_state) for t in adopted.transitions] == [(State.submitted, State.delivered)]
        assert await conn.fetchval("SELECT state::text FROM tracker.messages WHERE id=$1", mid) == "delivered"
        assert await conn.fetchval("SELECT count(*) FROM tracker.intake_problems") == 0


async def test_sparrow_messages_are_keyed_by_batch_and_recipient(pool):
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO tracker.messages (vendor, vendor_ref, recipient_key, recipient) VALUES"
            " ('sparrow','b1','9771','9771'), ('sparrow','b1','9772','9772')")
        await reducer.apply(conn, "poll", [obs("b1", State.delivered, vendor="sparrow", recipient="9772")])
        rows = dict(await conn.fetch("SELECT recipient, state::text FROM tracker.messages ORDER BY 1"))
        assert rows == {"9771": "submitted", "9772": "delivered"}


async def test_one_notify_per_batch_and_consumers_hear_only_of_published_events(pool, db_dsn):
    # A writer says once per batch that it committed transitions (to the publisher); consumers
    # hear of them once they have positions, one notification per publication.
    import asyncpg

    from tracker.events import publish_pending

    listener = await asyncpg.connect(db_dsn)
    written, published = [], []
    await listener.add_listener("tracker_transitions", lambda *a: written.append(a[3]))
    await listener.add_listener("tracker_events", lambda *a: published.append(a[3]))
    async with pool.acquire() as conn:
        await make_messages(conn, "sparksender", ["a", "b", "c"])
        await reducer.apply(conn, "poll", [obs(r, s) for r in "abc" for s in (State.sent, State.delivered)])
        await reducer.apply(conn, "poll", [obs("a", State.sent)])  # changes nothing: no notify
    for _ in range(50):
        if written:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    assert (written, published) == (["6"], [])
    assert await publish_pending(pool) == 6
    for _ in range(50):
        if published:
            break
        await asyncio.sleep(0.02)
    await listener.close()
    assert published == ["6"]


async def test_two_adoptions_at_once_apply_each_waiting_report_once(pool):
    # Intake's look, the postback worker's and the sweep may run together: the second to
    # reach a report waits for the first and then leaves it (no second transition).
    async with pool.acquire() as a, pool.acquire() as b:
        applied = await reducer.apply(a, "postback", [obs("w1", State.sent), obs("w2", State.delivered)])
        assert applied.orphans == 2
        await make_messages(a, "sparksender", ["w1", "w2"])
        first = a.transaction()
        await first.start()
        took = await reducer.adopt_orphans(a)  # holds both reports until it commits
        assert len(took.transitions) == 2
        second = asyncio.create_task(reducer.adopt_orphans(b))
        await until_waiting_on_a_lock(a, b.get_server_pid(), "the second adoption")
        assert not second.done()  # waiting for the first
        await first.commit()
        assert (await second).transitions == []
        n = await a.fetchval("SELECT count(*) FROM tracker.transitions")
        left = await a.fetchval("SELECT count(*) FROM tracker.observations WHERE message_id IS NULL")
    assert (n, left) == (2, 0)


async def test_unmapped_codes_are_counted_per_vendor_never_as_labels(pool):
    # 2,000 random codes once made 1,788 metric series: a code is never a label.
    import structlog

    from tracker.metrics import REGISTRY

    def series() -> list:
        return [s for m in REGISTRY.collect() if m.name == "tracker_unmapped_codes"
                for s in m.samples if s.name.endswith("_total")]

    before = {tuple(sorted(s.labels.items())): s.value for s in series()}
    with structlog.testing.capture_logs() as logs:
        async with pool.acquire() as conn:
            for batch in range(4):
                await reducer.apply(conn, "postback", [
                    Observation(vendor="skycore", vendor_ref=f"U{batch}-{i}", recipient=None, state=None,
                            code=f"code-{batch}-{i}") for i in range(500)])
    after = series()
    assert {tuple(s.labels) for s in after} <= {("vendor",)}
    sky = next(s.value for s in after if s.labels == {"vendor": "skycore"})
    assert sky - before.get((("vendor", "skycore"),), 0) == 2000
    warned = [e for e in logs if e["event"].startswith("vendor codes not in the mapping")]
    assert len(warned) <= 1 and all(len(e["codes"]) <= 5 for e in warned)


async def test_a_consumer_woken_by_a_notification_always_finds_its_events(pool, db_dsn):
    # The race that once left consumers asleep: another session holds the publisher row (as
    # read_events did before sql/022, in its transaction) when a writer commits. The publisher
    # waits for the row instead of skipping it, and the notification comes with the publication.
    import asyncpg

    from tracker.events import publish_pending

    consumer = await asyncpg.connect(db_dsn)
    woken = asyncio.Event()
    await consumer.add_listener("tracker_events", lambda *a: woken.set())
    async with pool.acquire() as reader, pool.acquire() as writer:
        await make_messages(writer, "sparksender", ["w1"])
        hold = reader.transaction()
        await hold.start()
        await reader.execute("SELECT FROM tracker.event_publisher FOR UPDATE")  # holds the row
        await reducer.apply(writer, "poll", [obs("w1", State.delivered)])
        publishing = asyncio.create_task(publish_pending(pool))
        await until_waiting_on_a_lock(writer, await _backend_of(pool, writer), "the publisher")
        assert not woken.is_set()  # nothing published: nobody woken to read nothing
        await hold.rollback()
        assert await publishing == 1
        await asyncio.wait_for(woken.wait(), 5)
        events = await consumer.fetch("SELECT * FROM tracker.read_events('billing', 10)")
        assert [e["to_state"] for e in events] == ["delivered"]
    await consumer.close()


async def _backend_of(pool, exclude) -> int:
    """The server pid of the session waiting on the publisher row (the one that is not ours)."""
    for _ in range(200):
        pid = await exclude.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE query LIKE '%event_publisher FOR UPDATE%'"
            " AND pid <> pg_backend_pid() AND wait_event_type = 'Lock' LIMIT 1")
        if pid:
            return pid
        await asyncio.sleep(0.02)
    raise AssertionError("the publisher never waited for the row")
