"""Through tracker.intake.take_in on a real PostgreSQL: engageSPARK's 409 duplicate clientDedup
(from the sandbox, over HTTP) and its documented 500 are no `rejected` messages: `unknown`, never
polled, the code kept, and the row noted in tracker.intake_problems. A 400 still rejects."""
from __future__ import annotations

import aiohttp
import orjson

from tracker.adapters import engagespark as es
from tracker.config_types import Config
from tracker.intake import take_in
from tracker.sandbox import Sandbox

BULK = {"orgid": 1234, "messages": [{"to": "639170000002", "from": "x", "message": "a"},
                                    {"to": "639170000003", "from": "x", "message": "b"}]}


async def submit(conn, response, request) -> int:
    return await conn.fetchval(
        "INSERT INTO tracker.submissions (vendor, response, request) VALUES"
        " ('engagespark', $1::jsonb, $2::jsonb) RETURNING id",
        orjson.dumps(response).decode(), orjson.dumps(request).decode())


async def test_409_and_500_rows_are_unknown_unpolled_and_noted(pool) -> None:
    req = {"orgId": 1234, "to": "639170000001", "from": "engageSPARK", "message": "hi", "clientDedup": "order-42"}
    async with Sandbox(knobs={"time_scale": 1.0}, seed=9) as sb, aiohttp.ClientSession() as http:
        url = sb.base_url("engagespark") + "/v1/sms/phonenumber"
        answers = []
        for _ in range(2):  # the application's retry of a call whose answer it lost
            async with http.post(url, json=req, headers={"Authorization": "Token sandbox-engagespark-key"}) as r:
                answers.append((r.status, await r.json()))
    (s1, first), (s2, dup) = answers
    assert s1 == 200 and s2 == 409, answers
    async with pool.acquire() as conn:
        first_sid = await submit(conn, first, req)
        dup_sid = await submit(conn, dup, req)
        err_sid = await submit(conn, {"error": "internal service error"}, BULK)
        bad_sid = await submit(conn, {"error": "invalid 'to' number", "errorCode": "invalid_request",
                                      "messageId": "", "to": "12"}, {**req, "to": "12"})
        r = await take_in(conn, Config())
        assert (r.rows, r.refused, r.messages) == (4, 0, 5)
        got = {(m["submission_id"], m["vendor_ref"]): m for m in await conn.fetch(
            "SELECT * FROM tracker.message_status")}
        assert got[(first_sid, es.normalize_ref(first["messageId"]))]["state"] == "accepted"
        for sid, n, code in ((dup_sid, 1, "duplicate"), (err_sid, 2, "http_500")):
            for i in range(n):
                m = got[(sid, f"refused:{sid}:{i}")]
                assert (m["state"], m["is_final"], m["next_poll_at"], m["failure_code"]) == (
                    "unknown", True, None, None), dict(m)
                codes = await conn.fetch("SELECT code, state FROM tracker.observations WHERE message_id = $1",
                                         m["message_id"])
                assert [(c["code"], c["state"]) for c in codes] == [(code, "unknown")]
        assert got[(bad_sid, f"refused:{bad_sid}:0")]["state"] == "rejected"
        problems = {p["id"]: p for p in await conn.fetch("SELECT * FROM tracker.intake_problems")}
        assert set(problems) == {dup_sid, err_sid}
        assert {p["kind"] for p in problems.values()} == {"submission_note"}
        assert "earlier call with the same clientDedup" in problems[dup_sid]["problem"]
        assert problems[err_sid]["problem"].startswith("the vendor reported an account problem: http_500 ")
        assert await conn.fetchval("SELECT count(*) FROM tracker.messages WHERE state = 'rejected'") == 1
