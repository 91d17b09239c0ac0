"""No row, however malformed, stops or slows the rows after it (issue #10): each bad row is
refused alone, with its reason in tracker.intake_problems, and its batch-mates are tracked."""
from __future__ import annotations

import orjson
import pytest

from tests.faults_support import refusing
from tracker.config_types import Config, IntakeConfig
from tracker.db import reducer
from tracker.intake import take_in

GOOD = "INSERT INTO tracker.submissions (vendor, vendor_ref) VALUES ('skycore', $1) RETURNING id"


async def good(conn, ref: str) -> int:
    return await conn.fetchval(GOOD, ref)


async def bad(conn, sql: str, *args) -> int:
    return await conn.fetchval(sql + " RETURNING id", *args)


def bulk(n: int, deadline: str) -> tuple[str, str]:
    response = {"messages": [{"id": f"EB{deadline[:4]}{i}"} for i in range(n)], "deliveryDeadline": deadline}
    request = {"messages": [{"to": f"63917000{i:04d}"} for i in range(n)]}
    return orjson.dumps(response).decode(), orjson.dumps(request).decode()


async def outcome(conn, sid: int):
    return await conn.fetchrow("SELECT processed_at, error, note, message_count FROM tracker.submissions"
                               " WHERE id = $1", sid)


async def test_every_bad_row_is_refused_alone_with_its_reason(pool):
    ins = "INSERT INTO tracker.submissions (vendor, vendor_ref, recipient, client_ref, submitted_at)" \
          " VALUES ($1, $2, $3, $4, coalesce($5::text::timestamptz, now()))"
    resp = "INSERT INTO tracker.submissions (vendor, response, request) VALUES ($1, $2::jsonb, $3::jsonb)"
    async with pool.acquire() as conn:
        goods, refused = [], {}
        goods.append(await good(conn, "G0"))
        refused[await bad(conn, ins, "sparksender", "1" * 3000, None, None, None)] = "3000 characters"
        goods.append(await good(conn, "G1"))
        refused[await bad(conn, ins, "skycore", "X1", None, "c" * 10_000, None)] = "client_ref is 10000"
        refused[await bad(conn, ins, "sparrow", "batch-1", "9" * 10_000, None, None)] = "recipient is 10000"
        refused[await bad(conn, ins, "sparrow", "batch-1", "9" * 100, None, None)] = "recipient has 100 digits"
        for when in ("infinity", "9999-12-31", "20000-01-01", "4713-01-01 BC", "1990-01-01"):
            refused[await bad(conn, ins, "skycore", f"T-{when}", None, None, when)] = "outside the range"
        goods.append(await good(conn, "G2"))
        for vendor, body in (("engagespark", "[]"), ("engagespark", '{"messages": 5}'),
                             ("sparksender", "42"), ("sparrow", '{"result": []}'),
                             ("skycore", '"text"'), ("sparksender", '{"status": {"deep": [[[]]]}}')):
            refused[await bad(conn, resp, vendor, body, None)] = f"cannot read the {vendor} send response"
        refused[await bad(conn, "INSERT INTO tracker.submissions (vendor, vendor_ref) VALUES ('nope', '1')")] = \
            "unknown vendor 'nope'"
        refused[await bad(conn, "INSERT INTO tracker.submissions (vendor, response, request)"
                                " VALUES ('engagespark', $1::jsonb, $2::jsonb)", *bulk(6, "2030-01-01T00:00:00Z"))] = \
            "at most 5 are taken per row"
        goods.append(await good(conn, "G3"))

        r = await take_in(conn, Config(intake=IntakeConfig(max_messages_per_row=5)))
        assert (r.rows, r.refused, r.messages) == (len(goods) + len(refused), len(refused), len(goods))
        for sid, reason in refused.items():
            row = await outcome(conn, sid)
            assert row["processed_at"] is not None and reason in row["error"], (reason, dict(row))
        shown = {p["id"] for p in await conn.fetch(
            "SELECT id FROM tracker.intake_problems WHERE kind = 'submission' AND is_final")}
        assert shown == set(refused)
        refs = {r[0] for r in await conn.fetch("SELECT vendor_ref FROM tracker.message_status")}
        assert refs == {"G0", "G1", "G2", "G3"}
        # Later rows go in as usual.
        await good(conn, "G4")
        assert (await take_in(conn, Config())).messages == 1


async def test_far_deadlines_are_clamped_with_a_note_and_unconvertible_ones_ignored(pool):
    async with pool.acquire() as conn:
        far = await bad(conn, "INSERT INTO tracker.submissions (vendor, response, request)"
                              " VALUES ('engagespark', $1::jsonb, $2::jsonb)", *bulk(2, "9999-12-31T23:59:59Z"))
        edge = await bad(conn, "INSERT INTO tracker.submissions (vendor, response, request)"
                               " VALUES ('engagespark', $1::jsonb, $2::jsonb)", *bulk(2, "9999-12-31T10:00:00-14:00"))
        r = await take_in(conn, Config())
        assert (r.refused, r.messages) == (0, 4)
        assert "clamped" in (await outcome(conn, far))["note"]
        deadlines = await conn.fetch("SELECT submission_id, vendor_deadline, window_ends_at, submitted_at"
                                     " FROM tracker.messages ORDER BY id")
        for m in deadlines:
            if m["submission_id"] == far:
                assert (m["vendor_deadline"] - m["submitted_at"]).days == 30
            else:
                assert m["submission_id"] == edge and m["vendor_deadline"] is None
            assert m["window_ends_at"] > m["submitted_at"]


async def test_what_a_row_carries_but_is_not_read_is_noted(pool):
    async with pool.acquire() as conn:
        both = await bad(conn, "INSERT INTO tracker.submissions (vendor, vendor_ref, response)"
                               " VALUES ('skycore', 'B1', '{}'::jsonb)")
        letters = await bad(conn, "INSERT INTO tracker.submissions (vendor, vendor_ref, recipient)"
                                  " VALUES ('skycore', 'B2', 'not a number')")
        r = await take_in(conn, Config())
        assert (r.refused, r.messages) == (0, 2)
        assert "response/request were not read" in (await outcome(conn, both))["note"]
        assert "is not a phone number: ignored" in (await outcome(conn, letters))["note"]
        notes = await conn.fetchval("SELECT count(*) FROM tracker.intake_problems WHERE kind = 'submission_note'")
        assert notes == 2
        assert await conn.fetchval("SELECT recipient FROM tracker.messages WHERE vendor_ref = 'B2'") is None


def poison(code: str) -> str:
    """A message row with vendor_ref POISON refused by PostgreSQL with SQLSTATE `code`."""
    return refusing("messages", "NEW.vendor_ref = 'POISON'", code, "poisoned row", name="test_poison")[0]


async def test_a_row_postgresql_refuses_is_found_by_halving_and_refused_alone(pool):
    # PostgreSQL refuses one row's message (as it would an index entry too large or a value out
    # of range): the batch is split until that row is found; the other nine are tracked.
    async with pool.acquire() as conn:
        await conn.execute(poison("22023"))
        ids = [await good(conn, ref) for ref in ("A", "B", "C", "D", "POISON", "E", "F", "G", "H", "I")]
        r = await take_in(conn, Config())
        assert (r.rows, r.refused, r.messages) == (10, 1, 9)
        row = await outcome(conn, ids[4])
        assert "refused by PostgreSQL (22023)" in row["error"] and "poisoned row" in row["error"]
        assert await conn.fetchval("SELECT count(*) FROM tracker.messages") == 9
        assert await conn.fetchval("SELECT count(*) FROM tracker.observations") == 9


async def test_a_recipient_with_digits_int_cannot_read_is_taken_in_by_its_decimal_digits(pool):
    # '²' is a digit to str.isdigit() but not to int(): planning the row's destination raised,
    # and the whole batch with it, again at every retry (intake stopped behind one row)
    async with pool.acquire() as conn:
        ins = "INSERT INTO tracker.submissions (vendor, vendor_ref, recipient) VALUES ('skycore', $1, $2)"
        for ref, to in (("A", "14155550100"), ("SUP", "+4² 7700 900123"), ("B", "+٤٤ ٧٧٠٠ ٩٠٠١٢٣")):
            await conn.execute(ins, ref, to)
        r = await take_in(conn, Config())
        assert (r.rows, r.refused, r.messages) == (3, 0, 3)
        got = dict(await conn.fetch("SELECT vendor_ref, recipient FROM tracker.messages"))
        assert got == {"A": "14155550100", "SUP": "47700900123", "B": "447700900123"}


async def test_a_bug_met_while_planning_one_row_refuses_that_row_alone(pool, monkeypatch):
    # Whatever else in the tracker's own code fails on one row's values: that row is found by
    # halving and refused with a pointer to the log; the rest are tracked, nothing is retried.
    import tracker.intake as intake
    real = intake.plan_chunk

    def plan(rows, vendors, now):
        if any(o.vendor_ref == "BUG" for r in rows for o in r.observations):
            raise ValueError("a bug meets this row")
        return real(rows, vendors, now)

    monkeypatch.setattr(intake, "plan_chunk", plan)
    async with pool.acquire() as conn:
        ids = [await good(conn, ref) for ref in ("A", "B", "BUG", "C", "D")]
        r = await take_in(conn, Config())
        assert (r.rows, r.refused, r.messages) == (5, 1, 4)
        row = await outcome(conn, ids[2])
        assert row["processed_at"] is not None
        assert row["error"] == "internal error while writing this row (ValueError); see the tracker's log"
        assert await conn.fetchval("SELECT count(*) FROM tracker.messages") == 4


async def test_a_response_postgresql_cannot_hand_over_is_refused_alone(pool):
    # 180 million control characters: stored compressed in about 2 MB, under the row limit, but
    # written out as JSON text ('\\u0001' each) past PostgreSQL's 1 GB: every claim that
    # fetched it failed (54000), and intake stopped behind it for good.
    async with pool.acquire() as conn:
        first = await good(conn, "A")
        huge = await conn.fetchval(
            "INSERT INTO tracker.submissions (vendor, response) VALUES ('sparrow',"
            " jsonb_build_object('x', repeat(chr(1), 180000000))) RETURNING id")
        after = [await good(conn, ref) for ref in ("B", "C")]
        taken = refused = 0
        for _ in range(4):  # the row is found and refused within a few batches
            r = await take_in(conn, Config())
            taken, refused = taken + r.rows, refused + r.refused
            if not r.rows:
                break
        assert (taken, refused) == (4, 1)
        row = await outcome(conn, huge)
        assert row["processed_at"] is not None
        assert row["error"].startswith("cannot be handed over: refused by PostgreSQL (54000)")
        for sid in (first, *after):
            assert (await outcome(conn, sid))["error"] is None
        assert await conn.fetchval("SELECT count(*) FROM tracker.messages") == 3


async def test_a_database_problem_that_is_not_the_rows_fault_is_retried_not_refused(pool):
    # Anything else PostgreSQL says (here: a state the database is in) is not a row's fault:
    # take_in raises (the intake loop's supervisor logs it, counts it and starts it again) and
    # changes nothing.
    async with pool.acquire() as conn:
        await conn.execute(poison("55000"))
        for ref in ("A", "POISON", "B"):
            await good(conn, ref)
        with pytest.raises(Exception, match="poisoned row"):
            await take_in(conn, Config())
        assert await conn.fetchval("SELECT count(*) FROM tracker.submissions WHERE processed_at IS NULL") == 3
        assert await conn.fetchval("SELECT count(*) FROM tracker.messages") == 0
        await conn.execute("DROP TRIGGER test_poison ON tracker.messages")
        assert (await take_in(conn, Config())).messages == 3


async def test_a_batch_is_split_by_bytes_and_rows_over_the_row_limit_are_refused(pool, monkeypatch):
    import tracker.intake.claims as claims

    monkeypatch.setattr(claims, "BATCH_BYTES", 1500)
    monkeypatch.setattr(claims, "ROW_BYTES", 2500)
    async with pool.acquire() as conn:
        sizes = [await bad(conn, "INSERT INTO tracker.submissions (vendor, response, request)"
                                 " VALUES ('engagespark', $1::jsonb, $2::jsonb)", *bulk(n, "2030-01-01T00:00:00Z"))
                 for n in (20, 20, 1000)]
        first = await take_in(conn, Config())
        assert first.rows < 3  # the byte budget cut the batch short
        while (await take_in(conn, Config())).rows:
            pass
        assert (await outcome(conn, sizes[0]))["message_count"] == 20
        huge = await outcome(conn, sizes[2])
        assert "bytes as JSON text; at most 2500 are taken" in huge["error"]


async def test_the_orphan_sweep_looks_only_at_recent_orphans_intake_adopts_any_by_key(pool):
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO tracker.observations (vendor, vendor_ref, source, state, code, received_at) VALUES"
            " ('skycore', 'OLD', 'postback', 'delivered', 'N202', now() - interval '2 days'),"
            " ('skycore', 'NEW', 'postback', 'delivered', 'N202', now())")
        # Messages that appeared some other way (not through intake): only the sweep finds them.
        await conn.execute("INSERT INTO tracker.messages (vendor, vendor_ref) VALUES ('skycore', 'OLD'), ('skycore', 'NEW')")
        swept = await reducer.adopt_orphans(conn, max_age_s=600)
        assert [t.to_state.name for t in swept.transitions] == ["delivered"]
        assert await conn.fetchval("SELECT count(*) FROM tracker.observations WHERE message_id IS NULL") == 1
        # Intake adopts the orphans of the messages it makes, however old.
        await conn.execute(
            "INSERT INTO tracker.observations (vendor, vendor_ref, source, state, code, received_at) VALUES"
            " ('skycore', 'OLD2', 'postback', 'delivered', 'N202', now() - interval '30 days')")
        await good(conn, "OLD2")
        await take_in(conn, Config())
        assert await conn.fetchval("SELECT state::text FROM tracker.messages WHERE vendor_ref = 'OLD2'") == "delivered"


async def test_a_row_larger_than_a_slice_is_written_whole_with_duplicates_orphans_and_old_keys(pool):
    # 5,000 recipients (more than one statement's slice), some refused at once by the vendor,
    # one listed twice, one already known (a resubmission), one with a report waiting.
    import uuid

    batch = str(uuid.uuid4())
    numbers = [f"97798{i:07d}" for i in range(5000)]
    invalid = numbers[100:200]
    request = {"session": {"recipients": numbers + [numbers[0]]}, "data": {"text": "hi"}}
    response = {"data": {"batch_id": batch, "invalid_recipients": invalid}, "result": "00", "status": "OK"}
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO tracker.messages (vendor, vendor_ref, recipient_key, recipient)"
                           " VALUES ('sparrow', $1, $2, $2)", batch, numbers[4999])
        await conn.execute("INSERT INTO tracker.observations (vendor, vendor_ref, recipient_key, source, state,"
                           " code) VALUES ('sparrow', $1, $2, 'postback', 'delivered', 'delivered')",
                           batch, numbers[3000])
        sid = await bad(conn, "INSERT INTO tracker.submissions (vendor, request, response)"
                              " VALUES ('sparrow', $1::jsonb, $2::jsonb)",
                        orjson.dumps(request).decode(), orjson.dumps(response).decode())
        r = await take_in(conn, Config())
        assert r.refused == 0
        states = dict(await conn.fetch("SELECT state::text, count(*) FROM tracker.messages GROUP BY 1"))
        assert states == {"accepted": 4899, "rejected": 100, "delivered": 1}
        # The known message is raised through the reducer (one transition), the waiting report
        # adopted (accepted, then delivered), every other new message one step.
        assert await conn.fetchval("SELECT count(*) FROM tracker.observations WHERE message_id IS NULL") == 0
        assert await conn.fetchval("SELECT count(*) FROM tracker.transitions") == 4899 + 100 + 1 + 1
        assert await conn.fetchval("SELECT count(*) FROM tracker.observations WHERE source = 'submit'") == 5000  # the vendor lists a number once
        assert (await outcome(conn, sid))["message_count"] == 5000


async def test_a_100000_recipient_row_goes_in_while_the_event_loop_keeps_answering(pool, monkeypatch):
    # The row is read and planned in a thread, written a slice at a time, and the cyclic
    # garbage collector waits meanwhile: the loop keeps running other tasks while the row is
    # read (bench/intake.py measures how long the loop is held; here, that it is not held).
    import asyncio
    import gc
    import threading
    import uuid

    import tracker.intake as intake_module

    numbers = [f"9779{i:08d}" for i in range(100_000)]
    request = {"session": {"recipients": numbers}, "data": {"text": "hi"}}
    response = {"data": {"batch_id": str(uuid.uuid4()), "invalid_recipients": numbers[::2]},
                "result": "00", "status": "OK"}
    real_read, reading = intake_module._read, threading.Event()
    ran_while_reading = 0
    done = False

    def read(*args):
        reading.set()
        try:
            return real_read(*args)
        finally:
            reading.clear()

    monkeypatch.setattr(intake_module, "_read", read)

    async def probe() -> None:  # another task on the loop: it runs only if the loop is free
        nonlocal ran_while_reading
        while not done:
            if reading.is_set():
                ran_while_reading += 1
            await asyncio.sleep(0.001)

    async with pool.acquire() as conn:
        sid = await bad(conn, "INSERT INTO tracker.submissions (vendor, request, response)"
                              " VALUES ('sparrow', $1::jsonb, $2::jsonb)",
                        orjson.dumps(request).decode(), orjson.dumps(response).decode())
        probing = asyncio.create_task(probe())
        try:
            r = await take_in(conn, Config())
        finally:
            done = True
            await probing
        assert (r.refused, r.messages) == (0, 100_000)
        assert (await outcome(conn, sid))["message_count"] == 100_000
        states = dict(await conn.fetch("SELECT state::text, count(*) FROM tracker.messages GROUP BY 1"))
        assert states == {"accepted": 50_000, "rejected": 50_000}
    assert gc.isenabled()
    assert ran_while_reading > 0, "the event loop ran nothing else while the row was read"


async def test_the_running_daemon_refuses_bad_rows_takes_the_rest_and_stays_ready(db_dsn):
    # The rows that once stopped intake for good (issue #10), sent to a running daemon.
    import asyncio

    from tests.postbacks_support import config_for, running, session

    async with running(config_for(db_dsn)) as (tr, base), session() as s:
        async with tr.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO tracker.submissions (vendor, vendor_ref, client_ref, recipient, submitted_at) VALUES"
                " ('sparksender', repeat('7', 3000), NULL, NULL, now()),"
                " ('skycore', 'K1', repeat('c', 10000), NULL, now()),"
                " ('sparrow', 'b-1', NULL, repeat('9', 10000), now()),"
                " ('skycore', 'K2', NULL, NULL, 'infinity'),"
                " ('skycore', 'K3', NULL, NULL, '20000-01-01'),"
                " ('skycore', 'OK1', NULL, NULL, now())")
            await conn.execute("INSERT INTO tracker.submissions (vendor, response, request)"
                               " VALUES ('engagespark', $1::jsonb, $2::jsonb)", *bulk(3, "9999-12-31T23:59:59Z"))
            await conn.execute("INSERT INTO tracker.submissions (vendor, vendor_ref) VALUES ('skycore', 'OK2')")
        loop = asyncio.get_running_loop()
        end = loop.time() + 10
        while await tr.pool.fetchval("SELECT count(*) FROM tracker.submissions WHERE processed_at IS NULL"):
            assert loop.time() < end, "intake stopped"
            await asyncio.sleep(0.05)
        assert await tr.pool.fetchval("SELECT count(*) FROM tracker.submissions WHERE error IS NOT NULL") == 5
        assert await tr.pool.fetchval("SELECT count(*) FROM tracker.messages") == 5  # OK1, OK2, 3 of the bulk
        ops = "http://%s:%d" % tr.listen_addresses.get("ops_listen", tr.listen_addresses["listen"])
        async with s.get(ops + "/readyz") as r:
            assert (r.status, await r.json()) == (200, {"status": "ready"})
