"""Intake of tracker.submissions rows on a real PostgreSQL."""
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
            " ('twilio', '1', '1', NULL),"
            " ('sparksender', NULL, NULL, NULL),"
            " ('sparrow', 'batch-1', NULL, NULL),"
            " ('sparksender', NULL, NULL, '\"not a send response\"'::jsonb),"
            " ('sparksender', '77', '9471', NULL)")
        r = await take_in(conn, Config())
        assert (r.rows, r.refused, r.messages) == (5, 4, 1)
        problems = {p["id"]: p["problem"] for p in await conn.fetch(
            "SELECT id, problem FROM tracker.intake_problems WHERE kind = 'submission'")}
        texts = list(problems.values())
        assert any("unknown vendor 'twilio'" in t for t in texts)
        assert any("neither vendor_ref nor response" in t for t in texts)
        assert any("recipient is required" in t for t in texts)
        assert any("send response" in t for t in texts)
        assert len(problems) == 4
        assert await conn.fetchval("SELECT count(*) FROM tracker.messages") == 1


async def test_resubmitted_vendor_ref_is_one_message(pool):
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO tracker.submissions (vendor, vendor_ref) VALUES ('sparksender', '5'), ('sparksender', '5 ')")
        await take_in(conn, Config())
        assert await conn.fetchval("SELECT count(*) FROM tracker.messages") == 1


async def test_report_before_submission_then_submission(pool):
    from tracker.adapters.base import Observation
    from tracker.core.states import State
    from tracker.db import reducer

    async with pool.acquire() as conn:
        await reducer.apply(conn, "postback", [Observation("skycore", "TRK1", "1555", State.sent, "N201"),
                                               Observation("skycore", "TRK1", "1555", State.delivered, "N202")])
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
