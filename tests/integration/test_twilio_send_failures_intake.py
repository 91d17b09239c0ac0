"""Through tracker.intake.take_in on a real PostgreSQL: a Twilio send call that failed as a call
is no verdict the tracker invents. A 500 (Twilio: a retried send "may reach the customer twice")
is `unknown`, never polled; a 429 ("never processed") is `rejected`, not permanent; both rows are
noted in tracker.intake_problems. A refusal of the number (21211) is rejected, with no note."""
from __future__ import annotations

import orjson

from tracker.config_types import Config
from tracker.intake import take_in


async def submit(conn, response, to) -> int:
    return await conn.fetchval(
        "INSERT INTO tracker.submissions (vendor, response, request) VALUES"
        " ('twilio', $1::jsonb, $2::jsonb) RETURNING id",
        orjson.dumps(response).decode(), orjson.dumps({"To": to, "Body": "hi"}).decode())


async def test_500_is_unknown_429_rejected_and_both_rows_noted(pool) -> None:
    async with pool.acquire() as conn:
        down = await submit(conn, {"code": 20500, "message": "Internal Server Error", "status": 500},
                            "+14155550101")
        busy = await submit(conn, {"code": 20429, "message": "Too Many Requests", "status": 429},
                            "+14155550102")
        bad = await submit(conn, {"code": 21211, "message": "The 'To' number is not valid", "status": 400},
                           "+1415")
        r = await take_in(conn, Config())
        assert (r.rows, r.refused, r.messages) == (3, 0, 3)
        got = {m["submission_id"]: m for m in await conn.fetch("SELECT * FROM tracker.message_status")}
        assert {k: (m["state"], m["is_final"], m["next_poll_at"], m["failure_code"], m["failure_permanent"])
                for k, m in got.items()} == {
            down: ("unknown", True, None, None, None),
            busy: ("rejected", True, None, "20429", False),
            bad: ("rejected", True, None, "21211", True),
        }
        problems = {p["id"]: p["problem"] for p in await conn.fetch("SELECT * FROM tracker.intake_problems")}
        assert set(problems) == {down, busy}
        assert "whether Twilio sent the message is unknown" in problems[down]
        assert "sending it again is safe" in problems[busy]
