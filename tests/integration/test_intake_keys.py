"""The messages intake makes, by key: sends refused before an id (keyed by their row), keys two
workers share, and what a row's outcome says of them (tracker.intake.plan, tracker.intake)."""
from __future__ import annotations

import asyncio

from tests.conftest import until_waiting_on_a_lock
from tracker.config_types import Config
from tracker.intake import take_in


async def test_a_send_refused_with_an_unmapped_code_is_rejected_and_never_polled(pool):
    # No vendor id was given, so nothing can be asked about it: it was polled with its made-up
    # key ('refused:<row>:<i>') until the window closed. DESIGN: a refused send is `rejected`;
    # its unmapped code stays recorded as unmapped, not guessed.
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO tracker.submissions (vendor, response, request) VALUES"
            " ('twilio', '{\"code\": 99999, \"message\": \"new error\", \"status\": 400}', '{\"To\": \"+15550102030\"}'),"
            " ('sparksender', '{\"status_code\": 299}', '{\"recipient_contact_no\": \"94711111111\"}'),"
            " ('sparrow', '{\"result\": \"77\", \"status\": \"X\"}', '{\"session\": {\"recipients\": [\"9779801234567\"]}}')")
        r = await take_in(conn, Config())
        assert (r.rows, r.refused, r.messages) == (3, 0, 3)
        got = await conn.fetch("SELECT vendor, vendor_ref LIKE 'refused:%' AS by_row, state::text, next_poll_at,"
                               " failure_code, failure_permanent FROM tracker.messages ORDER BY id")
        assert [tuple(m) for m in got] == [("twilio", True, "rejected", None, "99999", None),
                                           ("sparksender", True, "rejected", None, "299", None),
                                           ("sparrow", True, "rejected", None, "77", None)]
        # The codes are still recorded as unmapped (what tracker.vendor_health shows).
        unmapped = await conn.fetch("SELECT vendor, code FROM tracker.observations WHERE state IS NULL ORDER BY id")
        assert [tuple(o) for o in unmapped] == [("twilio", "99999"), ("sparksender", "299"), ("sparrow", "77")]
        assert await conn.fetchval("SELECT count(*) FROM tracker.transitions WHERE to_state = 'rejected'") == 3


async def test_two_workers_with_the_same_keys_in_opposite_orders_both_succeed(pool):
    # Rows 1-2 name A then B, rows 3-4 (a resubmission) B then A; two workers take one pair each.
    # A test trigger holds each worker's second new message until both have got that far (a
    # lock the test holds): inserted in their order of appearance, each worker then waited for
    # the key the other had inserted first, and PostgreSQL killed one batch (deadlock).
    async with pool.acquire() as conn:
        await conn.execute("""
            CREATE FUNCTION public.second_key_waits() RETURNS trigger LANGUAGE plpgsql AS $$
            DECLARE n int := coalesce(nullif(current_setting('test.keys', true), ''), '0')::int;
            BEGIN
                IF n = 1 THEN
                    PERFORM pg_advisory_xact_lock_shared(4242);
                END IF;
                PERFORM set_config('test.keys', (n + 1)::text, true);
                RETURN NEW;
            END $$;
            CREATE TRIGGER second_key_waits BEFORE INSERT ON tracker.messages
                FOR EACH ROW EXECUTE FUNCTION public.second_key_waits();
            INSERT INTO tracker.submissions (vendor, vendor_ref) VALUES
                ('skycore', 'A'), ('skycore', 'B'), ('skycore', 'B'), ('skycore', 'A');
        """)
        await conn.execute("SELECT pg_advisory_lock(4242)")
        async with pool.acquire() as c1, pool.acquire() as c2:
            workers = [asyncio.create_task(take_in(c, Config(), 2)) for c in (c1, c2)]
            for c in (c1, c2):
                await until_waiting_on_a_lock(conn, c.get_server_pid(), "a worker")
            await conn.execute("SELECT pg_advisory_unlock(4242)")
            results = await asyncio.gather(*workers, return_exceptions=True)
        assert [r for r in results if isinstance(r, BaseException)] == []
        assert sorted((r.rows, r.refused) for r in results) == [(2, 0), (2, 0)]
        assert await conn.fetchval("SELECT count(*) FROM tracker.submissions WHERE processed_at IS NULL"
                                   " OR error IS NOT NULL") == 0
        assert sorted(await conn.fetch("SELECT vendor_ref FROM tracker.messages")) == [("A",), ("B",)]
        assert await conn.fetchval("SELECT count(*) FROM tracker.observations WHERE message_id IS NOT NULL") == 4


async def test_a_row_s_outcome_counts_messages_and_names_what_it_left_out(pool):
    async with pool.acquire() as conn:
        twice = await conn.fetchval(
            "INSERT INTO tracker.submissions (vendor, response) VALUES ('engagespark',"
            """ '{"messages": [{"id": "SMS1-1-0"}, {"id": "SMS1-1-0"}, {"id": "SMS1-1-1"}]}') RETURNING id""")
        digitless = await conn.fetchval(
            "INSERT INTO tracker.submissions (vendor, request, response) VALUES ('sparrow',"
            """ '{"session": {"recipients": ["9779800000001", "N/A"]}}',"""
            """ '{"result": "00", "status": "OK", "data": {"batch_id": "b-1", "invalid_recipients": ["N/A"]}}')"""
            " RETURNING id")
        partial = await conn.fetchval(
            "INSERT INTO tracker.submissions (vendor, request, response) VALUES ('engagespark',"
            """ '{"messages": [{"to": "639170000001"}, {"to": "639170000002"}]}',"""
            """ '{"messages": [{"id": "SMS20240101T000000-1-1-0"}, {"error": "not sent", "errorCode": "X"}],"""
            """   "error": "Insufficient balance: 1 of 2 messages not sent"}') RETURNING id""")
        r = await take_in(conn, Config())
        assert (r.rows, r.refused, r.messages) == (3, 0, 5)
        counts = dict(await conn.fetch("SELECT id, message_count FROM tracker.submissions"))
        assert (counts[twice], counts[digitless], counts[partial]) == (2, 1, 2)
        problems = dict(await conn.fetch("SELECT id, problem FROM tracker.intake_problems"
                                         " WHERE kind = 'submission_note'"))
        assert problems == {
            digitless: "1 recipient(s) of the request have no digits and name no message: 'N/A'",
            partial: "the vendor reported an account problem: 402 Insufficient balance: 1 of 2 messages not sent"}
        got = await conn.fetch("SELECT vendor_ref, recipient, state::text FROM tracker.messages"
                               " WHERE submission_id = $1 ORDER BY id", partial)
        assert [tuple(m) for m in got] == [("SMS20240101T000000-1-1-0", "639170000001", "accepted"),
                                           (f"refused:{partial}:1", "639170000002", "rejected")]
