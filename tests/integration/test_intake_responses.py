"""Must-show: the intake takes raw vendor send responses (tracker.submissions `response` +
`request` jsonb) into messages and states on a real PostgreSQL.

Responses come from two places: the sandbox's vendors, over real HTTP through send_many (the
request is kept as sent, without credentials), and the vendors' own samples (tests/unit/fixtures,
copied literally from the vendor pages). Each row goes through tracker.intake.take_in with the
default configuration unless a test says otherwise; what it made is read back through
tracker.message_status, tracker.message_history and tracker.intake_problems.
"""
from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any, AsyncIterator

import aiohttp
import asyncpg
import orjson
import pytest

from tests.unit.fixtures import load
from tracker.config_types import VENDORS, Config, VendorConfig
from tracker.intake import take_in
from tracker.sandbox import Sandbox, send_many

# time_scale 1: nothing moves at the vendors while a test runs; the deadline is a real day away.
KNOBS = {"time_scale": 1.0}
OK = ["639171230001", "639171230002", "639171230003"]
SHORT = "5847801"  # 7 digits: every vendor refuses it at once
LONG = "9471100000000001"  # 16 digits: Spark Sender 205


@pytest.fixture
async def sb() -> AsyncIterator[Sandbox]:
    async with Sandbox(knobs=KNOBS, seed=9) as sandbox:
        yield sandbox


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        yield s


async def submit(conn: asyncpg.Connection, vendor: str, response: Any, request: Any = None,
                 client_ref: str | None = None) -> int:
    """What the sending application writes: one row per send call."""
    return await conn.fetchval(
        "INSERT INTO tracker.submissions (vendor, client_ref, response, request)"
        " VALUES ($1, $2, $3::jsonb, $4::jsonb) RETURNING id",
        vendor, client_ref, orjson.dumps(response).decode(),
        None if request is None else orjson.dumps(request).decode())


async def messages_of(conn: asyncpg.Connection, sid: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT s.*, m.vendor_deadline FROM tracker.message_status s"
        " JOIN tracker.messages m ON m.id = s.message_id"
        " WHERE s.submission_id = $1 ORDER BY s.message_id", sid)


def brief(rows: list[asyncpg.Record]) -> list[tuple]:
    return [(r["vendor_ref"], r["recipient"], r["state"], r["failure_code"], r["failure_reason"])
            for r in rows]


async def taken(conn: asyncpg.Connection, sid: int, count: int) -> None:
    row = await conn.fetchrow("SELECT * FROM tracker.submissions WHERE id = $1", sid)
    assert row["processed_at"] is not None and row["error"] is None and row["waiting"] is None, dict(row)
    assert row["message_count"] == count


async def history(conn: asyncpg.Connection, message_id: int) -> list[tuple]:
    return [tuple(r) for r in await conn.fetch(
        "SELECT from_state::text, to_state::text, source::text, failure_code"
        " FROM tracker.message_history WHERE message_id = $1 ORDER BY event_id", message_id)]


def refused_ref(sid: int, i: int) -> str:
    """How the intake keys a message the vendor refused before giving it an id."""
    return f"refused:{sid}:{i}"


# -- Spark Sender bulk: success and unsuccess -------------------------------------------------------

SS_203 = "Contact Number is Invalid or Operator not Support"
SS_205 = "Length of Contact is Invalid"


async def test_sparksender_bulk_sample_success_and_unsuccess(pool) -> None:
    request = {"user_id": "1001", "sender_id": "SparkDEMO", "message": "Hi",
               "recipient_contacts": "94711111111, 94773333333, 94752222222, 94214545455, 58478"}
    async with pool.acquire() as conn:
        sid = await submit(conn, "sparksender", load("sparksender", "send_bulk.json"), request,
                           client_ref="campaign-7")
        r = await take_in(conn, Config())
        assert (r.rows, r.messages, r.refused) == (1, 5, 0)
        rows = await messages_of(conn, sid)
        assert brief(rows) == [
            ("1000", "94711111111", "accepted", None, None),
            ("1001", "94773333333", "accepted", None, None),
            ("1002", "94752222222", "accepted", None, None),
            (refused_ref(sid, 3), "94214545455", "rejected", "203", SS_203),
            (refused_ref(sid, 4), "58478", "rejected", "203", SS_203),
        ]
        assert {m["client_ref"] for m in rows} == {"campaign-7"}
        assert [(m["is_final"], m["failure_permanent"]) for m in rows] == [
            (False, None)] * 3 + [(True, True)] * 2
        # Polled (Spark Sender is polled only) unless refused; every one has a window.
        assert [m["next_poll_at"] is not None for m in rows] == [True] * 3 + [False] * 2
        assert await history(conn, rows[0]["message_id"]) == [
            ("submitted", "accepted", "submit", None)]  # 204: the vendor took it
        assert await history(conn, rows[3]["message_id"]) == [
            ("submitted", "rejected", "submit", "203")]
        await taken(conn, sid, 5)


async def test_sparksender_bulk_from_the_sandbox(pool, sb: Sandbox, http) -> None:
    [bulk] = await send_many(sb, "sparksender", [OK[0], SHORT, OK[1], LONG], bulk=True,
                             session=http)
    assert bulk.response["unsuccess"] == [[{"number": SHORT, "status": 203},
                                           {"number": LONG, "status": 205}]]
    [single] = await send_many(sb, "sparksender", [OK[2]], session=http)
    [single_bad] = await send_many(sb, "sparksender", ["94-711"], session=http)
    assert single_bad.response == {"status_code": 203}
    async with pool.acquire() as conn:
        sids = [await submit(conn, "sparksender", c.response, c.request)
                for c in (bulk, single, single_bad)]
        r = await take_in(conn, Config())
        assert (r.rows, r.messages, r.refused) == (3, 6, 0)
        ids = [s["msgId"] for s in bulk.response["success"][0]]
        rows = await messages_of(conn, sids[0])
        assert [m["failure_permanent"] for m in rows] == [None, None, True, True]
        assert brief(rows) == [
            (ids[0], OK[0], "accepted", None, None),
            (ids[1], OK[1], "accepted", None, None),
            (refused_ref(sids[0], 2), SHORT, "rejected", "203", SS_203),
            (refused_ref(sids[0], 3), LONG, "rejected", "205", SS_205),
        ]
        # single sends: the recipient comes from the request's recipient_contact_no
        assert brief(await messages_of(conn, sids[1])) == [
            (single.response["msg_id"], OK[2], "accepted", None, None)]
        assert brief(await messages_of(conn, sids[2])) == [
            (refused_ref(sids[2], 0), "94711", "rejected", "203", SS_203)]
    truth = sb.truth()  # the sandbox agrees on every message's fate so far
    assert truth[("sparksender", None, SHORT)]["code"] == "203"
    assert truth[("sparksender", None, LONG)]["code"] == "205"
    assert {k[1] for k in truth if k[1]} == {*ids, single.response["msg_id"]}


# -- engageSPARK bulk with a per-message error ------------------------------------------------------

async def test_engagespark_bulk_sample_with_a_per_message_error(pool) -> None:
    # The vendor's bulk sample, with the second message refused the way its page describes
    # ("[{error}] Shows an error message if an error occurred in a list ... empty message").
    response = copy.deepcopy(load("engagespark", "bulk_response_bulk.json"))
    response["messages"][1].update(id="", estimateMicro=0, estimate="0.00", error="empty message")
    response["acceptedMessages"] = 2
    request = load("engagespark", "bulk_request_bulk.json")
    async with pool.acquire() as conn:
        sid = await submit(conn, "engagespark", response, request)
        await take_in(conn, Config())
        rows = await messages_of(conn, sid)
        assert brief(rows) == [
            ("SMS20190701T053121-123-1235-0", "639123456789", "accepted", None, None),
            (refused_ref(sid, 1), "254771234567", "rejected", "empty message", "empty message"),
            ("SMS20190701T053121-123-1237-2", "13105551212", "accepted", None, None),
        ]
        deadline = datetime.fromisoformat("2019-07-02T05:31:21.814068Z")
        assert [m["vendor_deadline"] for m in rows] == [deadline] * 3
        assert await history(conn, rows[0]["message_id"]) == [
            ("submitted", "accepted", "submit", None)]
        await taken(conn, sid, 3)


async def test_engagespark_bulk_from_the_sandbox_with_a_per_message_error(pool, sb, http) -> None:
    [call] = await send_many(sb, "engagespark", [OK[0], SHORT, OK[1]], bulk=True, session=http)
    msgs = call.response["messages"]
    assert [m["error"] for m in msgs] == ["", "invalid 'to' number", ""]
    assert call.response["acceptedMessages"] == 2
    async with pool.acquire() as conn:
        sid = await submit(conn, "engagespark", call.response, call.request, client_ref="b-1")
        await take_in(conn, Config())
        rows = await messages_of(conn, sid)
        err = "invalid 'to' number"
        assert brief(rows) == [
            (msgs[0]["id"], OK[0], "accepted", None, None),
            (refused_ref(sid, 1), SHORT, "rejected", err, err),
            (msgs[2]["id"], OK[1], "accepted", None, None),
        ]
        assert rows[1]["is_final"] and rows[1]["failure_permanent"] is None
        deadline = datetime.fromisoformat(call.response["deliveryDeadline"])
        assert rows[0]["vendor_deadline"] == deadline
    assert sb.truth()[("engagespark", None, SHORT)]["final"] == "rejected"


# -- Sparrow compose with invalid recipients --------------------------------------------------------

async def test_sparrow_compose_from_the_sandbox_with_invalid_recipients(pool, sb, http) -> None:
    recipients = ["+977-980-000-0001", "+977 (980) 0000002", SHORT, "+977-980-000-0001"]
    [call] = await send_many(sb, "sparrow", recipients, bulk=True, session=http)
    data = call.response["data"]
    assert (call.response["result"], data["valid_recipients"], data["invalid_recipients"]) == (
        "00", 2, [SHORT])
    [nothing_valid] = await send_many(sb, "sparrow", ["+977-1234"], session=http)
    assert nothing_valid.response["result"] == "11"
    async with pool.acquire() as conn:
        sid = await submit(conn, "sparrow", call.response, call.request)
        sid_none = await submit(conn, "sparrow", nothing_valid.response, nothing_valid.request)
        r = await take_in(conn, Config())
        assert (r.rows, r.messages, r.refused) == (2, 4, 0)
        batch = data["batch_id"]
        invalid = "invalid recipient"
        # one message per (batch, recipient); the duplicate recipient is one message
        assert brief(await messages_of(conn, sid)) == [
            (batch, "9779800000001", "accepted", None, None),
            (batch, "9779800000002", "accepted", None, None),
            (batch, SHORT, "rejected", "invalid_recipient", invalid),
        ]
        assert brief(await messages_of(conn, sid_none)) == [
            (refused_ref(sid_none, 0), "9771234", "rejected", "invalid_recipient", invalid)]
    truth = sb.truth()
    assert truth[("sparrow", batch, SHORT)]["final"] == "rejected"
    assert truth[("sparrow", None, "9771234")]["final"] == "rejected"
    assert {k[2] for k in truth if k[1] == batch} == {"9779800000001", "9779800000002", SHORT}


async def test_sparrow_compose_sample(pool) -> None:
    async with pool.acquire() as conn:
        sid = await submit(conn, "sparrow", load("sparrow", "compose_response_ok.json"),
                           load("sparrow", "compose_request.json"))
        await take_in(conn, Config())
        batch = "5c32728e-340f-43b6-898d-d2b24e8e1426"
        assert brief(await messages_of(conn, sid)) == [
            (batch, "9779801234567", "accepted", None, None),
            (batch, "9115522942", "accepted", None, None),
        ]


async def test_sparrow_compose_with_a_digitless_invalid_recipient_keeps_the_batch(
        pool, sb, http) -> None:
    [call] = await send_many(sb, "sparrow", ["9779800000001", "N/A"], bulk=True, session=http)
    assert call.response["data"]["invalid_recipients"] == ["N/A"]
    async with pool.acquire() as conn:
        sid = await submit(conn, "sparrow", call.response, call.request)
        r = await take_in(conn, Config())
        assert r.refused == 0, await conn.fetchval(
            "SELECT problem FROM tracker.intake_problems WHERE id = $1", sid)
        assert [m["recipient"] for m in await messages_of(conn, sid)] == ["9779800000001"]


# -- Skycore Failure -------------------------------------------------------------------------------

async def test_skycore_failure_and_success(pool, sb, http) -> None:
    [bad] = await send_many(sb, "skycore", [SHORT], session=http)
    assert bad.response == {"status": "Failure", "error-code": "E110",
                            "error-info": "Invalid Recipient.", "to": SHORT}
    [good] = await send_many(sb, "skycore", ["+" + OK[0]], session=http)
    async with pool.acquire() as conn:
        sample = await submit(conn, "skycore", load("skycore", "send_failure.json"),
                              load("skycore", "send_request.json"))
        sid_bad = await submit(conn, "skycore", bad.response, bad.request)
        sid_good = await submit(conn, "skycore", good.response, good.request)
        sample_ok = await submit(conn, "skycore", load("skycore", "send_success.json"))
        r = await take_in(conn, Config())
        assert (r.rows, r.messages, r.refused) == (4, 4, 0)
        assert brief(await messages_of(conn, sample)) == [
            (refused_ref(sample, 0), "10000000001", "rejected", "E111", "Invalid Sender.")]
        assert brief(await messages_of(conn, sid_bad)) == [
            (refused_ref(sid_bad, 0), SHORT, "rejected", "E110", "Invalid Recipient.")]
        [ok] = await messages_of(conn, sid_good)
        assert brief([ok]) == [(good.response["tracking-id"], OK[0], "accepted", None, None)]
        assert ok["next_poll_at"] is None  # postback-only: never polled
        assert brief(await messages_of(conn, sample_ok)) == [
            ("xxxxxxxxxxxx", "10000000001", "accepted", None, None)]
    assert sb.truth()[("skycore", None, SHORT)]["code"] == "E110"


# -- engageSPARK single send: the window follows deliveryDeadline -------------------------------------

def config_with(vendor: str, **changes: Any) -> Config:
    vendors = {v: VendorConfig(name=v) for v in VENDORS}
    vendors[vendor] = VendorConfig(name=vendor, **changes)
    return Config(vendors=vendors)


async def test_engagespark_single_send_window_is_deadline_plus_margin(pool, sb, http) -> None:
    [call] = await send_many(sb, "engagespark", [OK[0]], session=http)
    deadline = datetime.fromisoformat(call.response["deliveryDeadline"])  # a vendor day away
    config = config_with("engagespark", tracking_window_s=3600.0, deadline_margin_s=1800.0)
    async with pool.acquire() as conn:
        sid = await submit(conn, "engagespark", call.response, call.request)
        sample = await submit(conn, "engagespark", load("engagespark", "contact_response_to.json"),
                              load("engagespark", "contact_request_to.json"))
        await take_in(conn, config)
        [m] = await messages_of(conn, sid)
        assert brief([m]) == [(call.response["messageId"], OK[0], "accepted", None, None)]
        assert m["vendor_deadline"] == deadline
        # The vendor retries until its deadline: the tracker waits for it, plus the margin,
        # although its own window (an hour) would end far sooner.
        assert m["window_ends_at"] == deadline + timedelta(seconds=1800)
        assert m["window_ends_at"] - m["submitted_at"] > timedelta(hours=23)
        # The sample's deadline (2019) is long past: the tracker's own window applies.
        [s] = await messages_of(conn, sample)
        assert brief([s]) == [("SMS20190723T154425-123-0123", "639123456789", "accepted", None, None)]
        assert s["vendor_deadline"] == datetime.fromisoformat("2019-07-24T13:49:16.387856Z")
        assert s["window_ends_at"] == s["submitted_at"] + timedelta(seconds=3600)


# -- account-level errors: the row is refused, with a clear reason, and no message is made ------------

async def test_account_level_errors_refuse_the_row_and_make_no_message(pool) -> None:
    calls: list[tuple[str, Any, Any, str]] = []
    async with Sandbox(knobs={**KNOBS, "bad_credentials": True}, seed=9) as bad:
        for vendor, expect in (("sparksender", "202 Invalid API Key"),
                               ("engagespark", "401 Invalid Token"),
                               ("skycore", "E103 Invalid API Key.")):
            [c] = await send_many(bad, vendor, [OK[0]])
            calls.append((vendor, c.response, c.request, expect))
        [c] = await send_many(bad, "sparksender", [OK[0], OK[1]], bulk=True)
        calls.append(("sparksender", c.response, c.request, "202 Invalid API Key"))
    async with Sandbox(knobs=KNOBS, seed=9, vendor_knobs={"sparksender": {
            "account": "maintenance"}, "engagespark": {"account": "no_funds"}}) as broke:
        [c] = await send_many(broke, "sparksender", OK[:2], bulk=True)
        calls.append(("sparksender", c.response, c.request, "215 Scheduled maintenance: "
                      "Scheduled maintenance in progress"))
        [c] = await send_many(broke, "engagespark", OK[:2], bulk=True)
        calls.append(("engagespark", c.response, c.request, "402 insufficient funds"))
    calls.append(("engagespark", load("engagespark", "error_401.json"), None, "401 Invalid Token"))
    async with pool.acquire() as conn:
        sids = [await submit(conn, v, resp, req) for v, resp, req, _ in calls]
        good = await submit(conn, "skycore", load("skycore", "send_success.json"))
        r = await take_in(conn, Config())
        assert (r.rows, r.refused, r.messages) == (len(calls) + 1, len(calls), 1)
        problems = {p["id"]: p for p in await conn.fetch(
            "SELECT * FROM tracker.intake_problems WHERE kind = 'submission'")}
        assert set(problems) == set(sids)
        for sid, (vendor, _, _, expect) in zip(sids, calls):
            p = problems[sid]
            assert p["vendor"] == vendor and p["is_final"], dict(p)
            assert p["problem"] == f"the vendor reported an account problem: {expect}", dict(p)
            assert await messages_of(conn, sid) == []
        assert await conn.fetchval(
            "SELECT count(*) FROM tracker.messages WHERE submission_id <> $1", good) == 0
        assert await conn.fetchval("SELECT count(*) FROM tracker.transitions") == 1  # the good one
        assert await conn.fetchval(
            "SELECT count(*) FROM tracker.submissions WHERE processed_at IS NULL") == 0


@pytest.mark.usefixtures("no_secrets_registered")
async def test_an_account_error_echoing_our_key_is_shown_with_the_key_masked(pool) -> None:
    """A vendor's account error may repeat the key it was sent ("Invalid Token <key>"): the
    row's refusal (intake_problems, the status page) and a row's note show it masked, as every
    stored vendor word is."""
    from tracker.masking import register_secret
    key = "EsparkKeySECRET0042"
    register_secret(key, sent=True)
    async with Sandbox(knobs=KNOBS, seed=9, vendor_knobs={"sparrow": {"account": "no_funds"}}) as sb:
        [call] = await send_many(sb, "sparrow", [OK[0]], bulk=True)
    draft = copy.deepcopy(call.response)
    draft["data"]["message"] = f"Saved as draft (billing error for token {key})"
    async with pool.acquire() as conn:
        refused = await submit(conn, "engagespark", {"error": f"Invalid Token {key}"})
        noted = await submit(conn, "sparrow", draft, call.request)
        r = await take_in(conn, Config())
        assert (r.rows, r.refused) == (2, 1)
        problems = {p["id"]: p["problem"] for p in await conn.fetch(
            "SELECT * FROM tracker.intake_problems WHERE id = ANY($1::bigint[])", [refused, noted])}
        assert problems[refused] == "the vendor reported an account problem: 401 Invalid Token ***"
        assert key not in problems[noted] and "***" in problems[noted], problems[noted]
        assert await conn.fetchval("SELECT count(*) FROM tracker.submissions"
                                   " WHERE error LIKE $1 OR note LIKE $1", f"%{key}%") == 0


async def test_sparrow_draft_keeps_the_batch_and_notes_the_account_problem(pool) -> None:
    """01 DRAFT ("partial success, billing error"): the batch exists at the vendor, so its
    messages are tracked (submitted: nothing says they went out), and the account problem is
    shown next to the row."""
    async with Sandbox(knobs=KNOBS, seed=9, vendor_knobs={"sparrow": {"account": "no_funds"}}) as sb:
        [call] = await send_many(sb, "sparrow", [OK[0], SHORT, OK[1]], bulk=True)
    assert (call.response["result"], call.response["status"]) == ("01", "DRAFT")
    batch = call.response["data"]["batch_id"]
    async with pool.acquire() as conn:
        sid = await submit(conn, "sparrow", call.response, call.request)
        r = await take_in(conn, Config())
        assert (r.rows, r.messages, r.refused) == (1, 3, 0)
        rows = await messages_of(conn, sid)
        assert [(m["vendor_ref"], m["recipient"], m["state"], m["failure_code"]) for m in rows] == [
            (batch, OK[0], "submitted", None), (batch, OK[1], "submitted", None),
            (batch, SHORT, "rejected", "invalid_recipient")]
        assert rows[0]["next_poll_at"] is not None  # its reports will tell; the window ends it
        [p] = await conn.fetch("SELECT * FROM tracker.intake_problems WHERE id = $1", sid)
        assert p["kind"] == "submission_note" and p["problem"].startswith(
            "the vendor reported an account problem: 01 DRAFT"), dict(p)


async def test_sparrow_billing_error_sample_is_visible_and_leaves_nothing_waiting(pool) -> None:
    """The vendor's own error sample, {"errors": "Billing Error"}, result 11: nothing was sent.
    Whatever the intake makes of it, the billing problem is shown with the row and no message
    is left waiting for reports that will never come. (Open question: the adapter makes it
    `rejected` messages plus an account problem, where Spark Sender 208 and engageSPARK 402,
    the same situation, make no message at all; the vendors should agree.)"""
    async with pool.acquire() as conn:
        sid = await submit(conn, "sparrow", load("sparrow", "compose_response_error.json"),
                           load("sparrow", "compose_request.json"))
        await take_in(conn, Config())
        [p] = await conn.fetch("SELECT * FROM tracker.intake_problems WHERE id = $1", sid)
        assert p["problem"] == "the vendor reported an account problem: 11 Billing Error"
        rows = await messages_of(conn, sid)
        assert all(m["is_final"] and m["next_poll_at"] is None for m in rows)
        assert all((m["failure_code"], m["failure_reason"]) == ("11", "Billing Error") for m in rows)
