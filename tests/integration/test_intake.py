"""Intake of tracker.submissions rows on a real PostgreSQL."""
from tests.conftest import until_waiting_on_a_lock
from tracker.config_types import Config
from tracker.intake import take_in


async def test_rows_with_vendor_ref_become_submitted_messages(pool):
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO tracker.submissions (vendor, client_ref, vendor_ref, recipient) VALUES"
            " ('sparksender', 'order-1', ' 14364 ', '94711111111'),"
            " ('sparrow', 'order-2', '5c32728e-340f-43b6-898d-d2b24e8e1426', '+977-980-1234567'),"
            " ('skycore', NULL, 'abcDEF123456', '10000000001')")
        r = await take_in(conn, Config())
        assert (r.rows, r.messages, r.refused) == (3, 3, 0)
        rows = await conn.fetch("SELECT * FROM tracker.message_status ORDER BY message_id")
        assert [(m["vendor"], m["vendor_ref"], m["recipient"], m["state"], m["client_ref"]) for m in rows] == [
            ("sparksender", "14364", "94711111111", "submitted", "order-1"),
            ("sparrow", "5c32728e-340f-43b6-898d-d2b24e8e1426", "9779801234567", "submitted", "order-2"),
            ("skycore", "abcDEF123456", "10000000001", "submitted", None),
        ]
        # Polled vendors get a first poll; Skycore (postback-only) never does. All get a window.
        polls = {m["vendor"]: m["next_poll_at"] for m in rows}
        assert polls["sparksender"] and polls["sparrow"] and polls["skycore"] is None
        assert all(m["window_ends_at"] > m["submitted_at"] for m in rows)
        assert await conn.fetchval("SELECT count(*) FROM tracker.submissions WHERE processed_at IS NULL") == 0
        assert await conn.fetchval("SELECT count(*) FROM tracker.observations WHERE source = 'submit'") == 3


async def test_bad_rows_are_marked_never_dropped(pool):
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO tracker.submissions (vendor, vendor_ref, recipient, response) VALUES"
            " ('nosuch', '1', '1', NULL),"
            " ('sparksender', NULL, NULL, NULL),"
            " ('sparrow', 'batch-1', NULL, NULL),"
            " ('sparksender', NULL, NULL, '\"not a send response\"'::jsonb),"
            " ('sparksender', '77', '9471', NULL)")
        r = await take_in(conn, Config())
        assert (r.rows, r.refused, r.messages) == (5, 4, 1)
        problems = {p["id"]: p["problem"] for p in await conn.fetch(
            "SELECT id, problem FROM tracker.intake_problems WHERE kind = 'submission'")}
        texts = list(problems.values())
        assert any("unknown vendor 'nosuch'" in t for t in texts)
        assert any("neither vendor_ref nor response" in t for t in texts)
        assert any("recipient is required" in t for t in texts)
        assert any("send response" in t for t in texts)
        assert len(problems) == 4
        assert await conn.fetchval("SELECT count(*) FROM tracker.messages") == 1


async def test_resubmitted_vendor_ref_is_one_message_and_each_row_says_so(pool):
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO tracker.submissions (vendor, client_ref, vendor_ref) VALUES"
            " ('sparksender', 'order-1', '5'), ('sparksender', 'order-2', '5 ')")
        await take_in(conn, Config())
        assert await conn.fetchval("SELECT count(*) FROM tracker.messages") == 1
        await conn.execute("INSERT INTO tracker.submissions (vendor, client_ref, vendor_ref) VALUES"
                           " ('sparksender', 'order-3', '005')")  # a later batch: tracked already
        await take_in(conn, Config())
        assert await conn.fetchval("SELECT count(*) FROM tracker.messages") == 1
        assert await conn.fetchval("SELECT client_ref FROM tracker.message_status") == "order-1"
        notes = [tuple(r) for r in await conn.fetch(
            "SELECT s.client_ref, p.kind, p.problem FROM tracker.intake_problems p"
            " JOIN tracker.submissions s USING (id) ORDER BY s.id")]
        assert notes == [
            ("order-2", "submission_note", "1 vendor id(s) named by an earlier row too, e.g. '5' (row "
             f"{await conn.fetchval('SELECT min(id) FROM tracker.submissions')}): tracked once, with that "
             "row's client_ref and recipient; this row adds its reports"),
            ("order-3", "submission_note", "1 vendor id(s) tracked already, e.g. '005': kept with the "
             "earlier row's client_ref and recipient; this row adds its reports")]
        assert await conn.fetchval("SELECT count(*) FROM tracker.submissions WHERE error IS NOT NULL") == 0


async def test_report_before_submission_then_submission(pool):
    from tracker.adapters.base import Observation
    from tracker.core.states import State
    from tracker.db import reducer

    async with pool.acquire() as conn:
        await reducer.apply(conn, "postback", [Observation(vendor="skycore", vendor_ref="TRK1", recipient="1555", state=State.sent, code="N201"),
                                               Observation(vendor="skycore", vendor_ref="TRK1", recipient="1555", state=State.delivered, code="N202")])
        await conn.execute("INSERT INTO tracker.submissions (vendor, vendor_ref, recipient) VALUES ('skycore','TRK1','1555')")
        await take_in(conn, Config())
        hist = await conn.fetch("SELECT from_state::text, to_state::text, source::text FROM tracker.message_history ORDER BY event_id")
        assert [tuple(h) for h in hist] == [("submitted", "sent", "postback"), ("sent", "delivered", "postback")]


async def test_partial_success_with_account_problem_is_tracked_and_noted(pool):
    request = '{"data": {"text": "hi"}, "session": {"recipients": ["+9779801111111", "+9779802222222"]}}'
    response = ('{"data": {"message": "Draft", "batch_id": "5c32728e-340f-43b6-898d-d2b24e8e1426",'
                ' "valid_recipients": 2, "invalid_recipients": []}, "result": "01", "status": "DRAFT"}')
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO tracker.submissions (vendor, request, response) VALUES ('sparrow', $1, $2)",
                           request, response)
        r = await take_in(conn, Config())
        assert (r.messages, r.refused) == (2, 0)
        p = await conn.fetchrow("SELECT * FROM tracker.intake_problems")
        assert p["kind"] == "submission_note" and "account problem" in p["problem"]


async def _race_a_report_with_intake(pool, block_second_look: bool = False):
    """Intake has made message TRK9 and looked for waiting reports, but not committed (held at
    its last step by a table lock) when a postback for it is stored: an orphan. Then intake
    commits. With `block_second_look`, another session holds the orphan's row meanwhile, so
    intake's look after its commit times out. Returns (intake's result, state, orphans left)."""
    import asyncio

    from tracker.adapters.base import Observation
    from tracker.core.states import State
    from tracker.db import reducer

    async with (pool.acquire() as intake_conn, pool.acquire() as report_conn,
                pool.acquire() as table_gate, pool.acquire() as row_gate):
        await intake_conn.execute(
            "INSERT INTO tracker.submissions (vendor, vendor_ref, recipient) VALUES ('skycore', 'TRK9', '1555')")
        await intake_conn.execute("SET lock_timeout = '2s'")
        hold_table, hold_row = table_gate.transaction(), row_gate.transaction()
        await hold_table.start()
        # Intake's last step (marking the row done) waits on this; its claim does not.
        await table_gate.execute("LOCK TABLE tracker.submissions IN SHARE MODE")
        intake = asyncio.create_task(take_in(intake_conn, Config()))
        await until_waiting_on_a_lock(report_conn, intake_conn.get_server_pid(), "intake")
        assert await report_conn.fetchval("SELECT count(*) FROM tracker.messages") == 0  # not committed
        applied = await reducer.apply(report_conn, "postback", [
            Observation(vendor="skycore", vendor_ref="TRK9", recipient="1555", state=State.delivered, code="N202")])
        assert applied.orphans == 1
        if block_second_look:
            await hold_row.start()
            await row_gate.execute("SELECT 1 FROM tracker.observations WHERE id = $1 FOR UPDATE",
                                   applied.orphan_ids[0])
        await hold_table.rollback()
        result = await intake
        if block_second_look:
            await hold_row.rollback()
        state = await report_conn.fetchval("SELECT state::text FROM tracker.messages WHERE vendor_ref = 'TRK9'")
        orphans = await report_conn.fetchval("SELECT count(*) FROM tracker.observations WHERE message_id IS NULL")
        return result, state, orphans


async def test_a_report_stored_while_its_message_is_being_made_is_adopted_after_commit(pool):
    # The race: a postback stored meanwhile cannot see the uncommitted message, and intake's
    # own look missed the report. Intake looks again once it has committed.
    result, state, orphans = await _race_a_report_with_intake(pool)
    assert result.messages == 1
    assert (state, orphans) == ("delivered", 0)


async def test_when_the_look_after_commit_fails_the_orphan_sweep_adopts(pool):
    # The second look times out on a row lock: intake still reports what it did (its work is
    # committed), and the report waits for the orphan sweep, which applies it.
    from tracker.db import reducer

    result, state, orphans = await _race_a_report_with_intake(pool, block_second_look=True)
    assert result.messages == 1
    assert (state, orphans) == ("submitted", 1)
    async with pool.acquire() as conn:
        await reducer.adopt_orphans(conn)  # what the sweep runs
        state = await conn.fetchval("SELECT state::text FROM tracker.messages WHERE vendor_ref = 'TRK9'")
    assert state == "delivered"


async def test_a_submission_notified_while_intake_is_busy_is_taken_in_at_once(pool, db_dsn):
    # The NOTIFY of a row that arrives while intake works on the previous one must not be lost
    # (it once was: the loop cleared its wake-up after working, then slept a whole sweep).
    # One intake loop: with two, the idle one would take the second row and hide a lost wake-up.
    import asyncio
    import time

    from tests.sinks_support import wait_until
    from tracker.app import Tracker
    from tracker.config_types import DatabaseConfig, HttpConfig, IntakeConfig

    tracker = Tracker(Config(database=DatabaseConfig(dsn=db_dsn), http=HttpConfig(listen="127.0.0.1:0"),
                             intake=IntakeConfig(sweep_interval_s=60.0, workers=1)))
    await tracker.start()
    loop_health = tracker.supervisor.components["intake"]
    try:
        async with pool.acquire() as conn, pool.acquire() as gate:
            async def listening() -> bool:  # the daemon's LISTEN has run on its connection
                return bool(await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle'"
                    " AND query ILIKE 'LISTEN%tracker_intake%'"))

            await wait_until(listening, 5, "the intake listener's LISTEN")
            # The wake-up the listener gives on listening has been used: the loop looked, found
            # nothing, and waits (not busy, no wake-up pending).
            await wait_until(lambda: loop_health.busy_since is None and not tracker.intake.wake.is_set(),
                             5, "the intake loop idle after its first look")
            hold = gate.transaction()
            await hold.start()
            await gate.execute("LOCK TABLE tracker.observations IN SHARE MODE")  # intake waits here
            await conn.execute("INSERT INTO tracker.submissions (vendor, vendor_ref) VALUES ('skycore', 'A1')")
            for _ in range(200):
                if await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                                       " AND query LIKE '%tracker.observations%'"):
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("intake never started on the first row")
            assert loop_health.busy_since is not None  # the loop is inside its look at A1
            await conn.execute("INSERT INTO tracker.submissions (vendor, vendor_ref) VALUES ('skycore', 'A2')")
            # Its NOTIFY reaches the daemon while intake is still busy (blocked on A1): the
            # wake-up is set during the look, and must not be cleared when the look ends.
            await wait_until(tracker.intake.wake.is_set, 5, "the NOTIFY of A2 while intake is busy")
            assert loop_health.busy_since is not None
            await hold.rollback()
            began = time.monotonic()
            while await conn.fetchval("SELECT count(*) FROM tracker.messages") < 2:
                assert time.monotonic() - began < 5, "the second row waited for the next sweep"
                await asyncio.sleep(0.05)
    finally:
        await tracker.stop()


async def test_ids_are_matched_normalized_and_shown_as_the_vendor_issued_them(pool):
    # Spark Sender ids lose leading zeros and engageSPARK ids their case for matching only.
    from tracker.adapters.base import Observation
    from tracker.core.states import State
    from tracker.db import reducer

    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO tracker.submissions (vendor, vendor_ref) VALUES"
                           " ('sparksender', ' 000123 '), ('engagespark', 'abC-42')")
        await take_in(conn, Config())
        shown = dict(await conn.fetch("SELECT vendor, vendor_ref FROM tracker.message_status"))
        assert shown == {"sparksender": "000123", "engagespark": "abC-42"}
        matched = dict(await conn.fetch("SELECT vendor, vendor_ref FROM tracker.messages"))
        # Matched as normalize_ref makes them: leading zeros off (Spark Sender), upper case (engageSPARK).
        assert matched == {"sparksender": "123", "engagespark": "ABC-42"}
        # A report naming the normalized id finds the message, and events show the id as issued.
        for vendor, ref in matched.items():
            await reducer.apply(conn, "postback", [Observation(vendor=vendor, vendor_ref=ref, recipient=None,
                                                               state=State.delivered, code="d")])
        await conn.execute("SELECT tracker.publish_waiting()")  # the daemon's publisher
        events = await conn.fetch("SELECT vendor, vendor_ref FROM tracker.read_events('t', 10)")
        assert dict(events) == shown
        # A webhook sink's reads too (they showed the normalized id before sql/015).
        sent = await conn.fetch("SELECT vendor, vendor_ref FROM tracker.read_sink_batch('s', 0, 10)")
        assert dict(sent) == shown


async def test_a_campaign_of_bulk_rows_is_shared_by_batches_and_no_row_is_taken_twice(pool, monkeypatch):
    # engageSPARK bulk rows of 100 messages: a batch claims FIRST_CLAIM rows, then only as many
    # as bring it to about BATCH_MESSAGES messages, and leaves the rest unlocked, so that another
    # intake loop takes the next rows while this batch is still being written.
    import asyncio

    import orjson

    import tracker.intake.claims as claims

    monkeypatch.setattr(claims, "FIRST_CLAIM", 2)
    monkeypatch.setattr(claims, "BATCH_MESSAGES", 300)

    def bulk(row: int) -> tuple[str, str]:
        response = {"messages": [{"id": f"EC{row}-{i}"} for i in range(100)],
                    "deliveryDeadline": "2030-01-01T00:00:00Z"}
        request = {"messages": [{"to": f"639170{row:02d}{i:04d}"} for i in range(100)]}
        return orjson.dumps(response).decode(), orjson.dumps(request).decode()

    async with pool.acquire() as conn, pool.acquire() as other, pool.acquire() as gate:
        await conn.executemany("INSERT INTO tracker.submissions (vendor, response, request)"
                               " VALUES ('engagespark', $1::jsonb, $2::jsonb)", [bulk(r) for r in range(10)])
        first = await take_in(conn, Config())
        assert (first.rows, first.messages) == (3, 300)  # 2 rows, then 1 more for 300 messages
        # A batch held up while it writes (the gate's lock) leaves the rows after its own free.
        hold = gate.transaction()
        await hold.start()
        await gate.execute("LOCK TABLE tracker.observations IN SHARE MODE")
        held = asyncio.create_task(take_in(conn, Config()))
        await until_waiting_on_a_lock(gate, conn.get_server_pid(), "the first batch")
        beside = asyncio.create_task(take_in(other, Config()))
        await until_waiting_on_a_lock(gate, other.get_server_pid(), "the batch beside it")
        await hold.rollback()
        a, b = await held, await beside
        assert (a.rows, b.rows) == (3, 3)
        assert (await take_in(conn, Config())).rows == 1
        assert await conn.fetchval("SELECT count(*) FROM tracker.submissions WHERE processed_at IS NULL") == 0
        assert await conn.fetchval("SELECT sum(message_count) FROM tracker.submissions") == 1000
        assert await conn.fetchval("SELECT count(*) FROM tracker.messages") == 1000
        assert await conn.fetchval("SELECT count(*) FROM tracker.observations") == 1000  # none twice



async def test_messages_an_earlier_release_left_unpolled_are_made_due_at_the_start(db_dsn, pool):
    # A replica of an earlier release with the vendor disabled took rows in with no first poll;
    # during a rolling upgrade it goes on doing so until it is replaced: each start repairs it.
    from tests.postbacks_support import config_for, running
    from tests.sinks_support import wait_until

    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO tracker.messages (vendor, vendor_ref, state, next_poll_at) VALUES"
            " ('sparksender', 'left', 'accepted', NULL), ('twilio', 'left', 'submitted', NULL),"
            " ('skycore', 'push-only', 'sent', NULL), ('sparksender', 'final', 'delivered', NULL),"
            " ('engagespark', 'due', 'sent', now() + interval '1 hour')")

    async def due() -> dict:
        return {(r["vendor"], r["vendor_ref"]): r["due"] for r in await pool.fetch(
            "SELECT vendor, vendor_ref, next_poll_at <= now() AS due FROM tracker.messages")}

    async with running(config_for(db_dsn)):  # its first window sweep, within 10 s
        await wait_until(lambda: due_now(due), 30, "the messages left unpolled due")
    assert await due() == {("sparksender", "left"): True, ("twilio", "left"): True,
                           ("skycore", "push-only"): None, ("sparksender", "final"): None,
                           ("engagespark", "due"): False}


async def due_now(due) -> bool:
    return (await due())[("sparksender", "left")] is True


async def test_a_twilio_send_scheduled_for_later_is_tracked_and_first_polled_from_then(pool):
    # Twilio's SendAt (up to 35 days ahead): from the submission, the 48 h window ended the
    # message `unknown` before Twilio sent it, and the polls until then were spent on nothing
    import orjson
    from datetime import datetime, timedelta, timezone

    from tracker.config_types import VendorConfig
    send_at = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=10)
    sid = "SM" + "a" * 32
    config = Config(vendors={"twilio": VendorConfig.from_keys("twilio", tracking_window_s=172800.0,
                                                               first_poll_s=30.0)})
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO tracker.submissions (vendor, request, response) VALUES ('twilio', $1::jsonb, $2::jsonb)",
            orjson.dumps({"To": "+14155552345", "SendAt": send_at.isoformat(), "MessagingServiceSid": "MG1"}).decode(),
            orjson.dumps({"sid": sid, "status": "scheduled", "to": "+14155552345"}).decode())
        r = await take_in(conn, config)
        assert (r.rows, r.messages, r.refused) == (1, 1, 0)
        m = await conn.fetchrow("SELECT * FROM tracker.message_status WHERE vendor = 'twilio'")
    assert (m["state"], m["vendor_ref"]) == ("accepted", sid)
    assert m["window_ends_at"] == send_at + timedelta(days=2)
    assert m["next_poll_at"] == send_at + timedelta(seconds=30)
