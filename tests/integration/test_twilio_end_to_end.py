"""Twilio end to end, against its sandbox over loopback and a real PostgreSQL: messages sent
through the fake (raw send responses taken in by the intake), polled until the ground truth,
signed status callbacks to a running tracker (valid, invalid, behind a proxy URL, signed with a
SharedKey), with duplicates and disorder; every message one clean chain of transitions."""
from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Callable
from urllib.parse import urlencode

import aiohttp
import orjson
import pytest

from tests.polling_support import all_final, db_states, make_config, send, start_poller, wait_until
from tests.postbacks_support import TOKENS, config_for, metric_value, postback_url, running
from tracker.adapters.twilio_signature import signature
from tracker.sandbox import Sandbox, send_many

VENDOR = "twilio"
POLLED = {"time_scale": 0.01, "latency": "uniform", "latency_s": 100.0,
          "read": 0.0}  # "read" follows "delivered", a final state: only callbacks tell it
PUSHED = {"time_scale": 0.002, "latency_max_s": 250.0, "duplicate_share": 0.3,
          "out_of_order_share": 0.3}
NUMBERS = [f"1415555{i:04d}" for i in range(40)]
PUBLIC = "https://sms.example.com"
SHARED = "sandbox-twilio-shared-key-secret"  # a SharedKey's secret (Twilio's Webhook Rules)


async def eventually(check: Callable[[], object], timeout: float = 20.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        result = await check()
        if not result or loop.time() > end:
            return result
        await asyncio.sleep(0.1)


def pushing(sb: Sandbox) -> Callable[[], object]:
    """How many of Twilio's callbacks are still to be answered: the states can match the truth
    while a duplicate is stored and its 200 not yet logged by the sandbox."""
    async def pending() -> int:
        return sb.pending_postbacks(VENDOR)
    return pending


async def submit(pool, calls) -> None:
    await pool.executemany(
        "INSERT INTO tracker.submissions (vendor, request, response) VALUES ($1, $2::jsonb, $3::jsonb)",
        [(c.vendor, orjson.dumps(c.request).decode(), orjson.dumps(c.response).decode())
         for c in calls])


async def wrong(pool, sb: Sandbox, field: str = "final") -> list:
    """Twilio messages whose state is not the truth's `field` (final, or last_real)."""
    have = await db_states(pool)
    return sorted((k, have.get(k), t[field]) for k, t in sb.truth().items()
                  if k[0] == VENDOR and k[1] is not None and have.get(k) != t[field])


async def clean_chains(pool) -> None:
    rows = await pool.fetch(
        "SELECT array_agg(from_state::text ORDER BY event_id) AS f,"
        " array_agg(to_state::text ORDER BY event_id) AS t FROM tracker.transitions GROUP BY message_id")
    assert rows
    for r in rows:
        assert r["f"][0] == "submitted" and r["f"][1:] == r["t"][:-1], r  # unbroken
        assert len(set(r["t"])) == len(r["t"]), r  # no state entered twice


async def poll_until_final(config, pool) -> None:
    """Poll Twilio (windows swept too) until every message is final."""
    poller = await start_poller(config, pool)
    try:
        async def done() -> bool:
            await poller.sweep_windows()
            return await all_final(pool, VENDOR)
        await wait_until(done, 30, step=0.2)
    finally:
        await poller.stop()


async def test_twilio_is_polled_until_the_ground_truth(pool, db_dsn):
    async with Sandbox(POLLED, seed=3) as sb:
        config = make_config(sb, db_dsn)
        made = await send(sb, pool, config, VENDOR, NUMBERS + ["12"])  # "12": refused at once
        assert made == len(NUMBERS) + 1
        await poll_until_final(config, pool)
        assert await wrong(pool, sb) == []
        async with pool.acquire() as conn:
            rejected = await conn.fetchrow("SELECT * FROM tracker.messages WHERE vendor = 'twilio'"
                                           " AND recipient = '12'")
            polls = await conn.fetchval("SELECT sum(poll_count) FROM tracker.messages WHERE vendor = 'twilio'")
            codes = {r["code"] for r in await conn.fetch(
                "SELECT DISTINCT code FROM tracker.observations WHERE vendor = 'twilio' AND source = 'poll'")}
        assert (rejected["state"], rejected["failure_code"]) == ("rejected", "21211")
        assert polls > len(NUMBERS) and {"queued", "sent"} & codes and "delivered" in codes
        answers = [r["status"] for r in sb.requests if r["vendor"] == VENDOR]
        assert set(answers) == {200, 201, 400} and answers.count(400) == 1  # "12" refused
        await clean_chains(pool)


async def test_twilio_is_polled_with_an_api_key_instead_of_the_auth_token(pool, db_dsn):
    """Twilio's advice for production: an API key (SK...) and its secret as the API's basic
    credentials, revocable, not the account's master token. With no auth token configured at
    all (callbacks signed with a SharedKey need none)."""
    import tracker.sandbox.twilio as fake
    async with Sandbox(POLLED, seed=3) as sb:
        config = make_config(sb, db_dsn, twilio={"auth_token": None, **fake.Twilio.API_KEY})
        assert await send(sb, pool, config, VENDOR, NUMBERS[:10]) == 10
        await poll_until_final(config, pool)
        assert await wrong(pool, sb) == []
        polls = [r for r in sb.requests if r["vendor"] == VENDOR and r["method"] == "GET"]
        assert polls and {r["status"] for r in polls} == {200}


@pytest.mark.parametrize("behind_proxy", [False, True], ids=["direct", "behind-a-proxy"])
async def test_signed_callbacks_with_duplicates_and_disorder_end_in_the_truth(db_dsn, behind_proxy):
    async with Sandbox(PUSHED, seed=7) as sb:
        creds = dict(sb.credentials[VENDOR], **({"public_base_url": PUBLIC} if behind_proxy else {}))
        async with running(config_for(db_dsn, twilio=creds)) as (tr, base):
            url = postback_url(base, VENDOR)
            if behind_proxy:  # Twilio calls (and signs) the public URL; the proxy forwards it here
                sb.set_proxy(PUBLIC, base)
                url = f"{PUBLIC}/postbacks/{VENDOR}/{TOKENS[VENDOR]}"
            calls = await send_many(sb, VENDOR, NUMBERS, client_push_url=url, concurrency=16)
            await submit(tr.pool, calls)
            assert await eventually(lambda: wrong(tr.pool, sb, "last_real")) == []
            await clean_chains(tr.pool)
            assert await eventually(pushing(sb)) == 0  # a duplicate stored but not yet answered
            answered = [p for p in sb.postbacks if p["vendor"] == VENDOR]
            assert answered and {p["status"] for p in answered} == {200}
            assert any(p["duplicate"] for p in answered)
            stored = await tr.pool.fetchval("SELECT count(*) FROM tracker.postbacks WHERE vendor = 'twilio'")
            assert stored == len(answered)


@pytest.mark.parametrize("algorithm", ["HMAC_SHA1", "HMAC_SHA256"])
async def test_callbacks_signed_with_a_shared_key_end_in_the_truth(db_dsn, algorithm):
    # A Webhook Rule with a SharedKey: Twilio signs with its secret and algorithm and says so in
    # X-Twilio-Webhooks-Signature-Settings; the tracker, given the secret, verifies and stores them
    async with Sandbox(PUSHED, seed=13) as sb:
        sb.vendors[VENDOR].use_shared_key(SHARED, algorithm)
        creds = dict(sb.credentials[VENDOR])
        assert creds["shared_key_secret"] == SHARED
        async with running(config_for(db_dsn, twilio=creds)) as (tr, base):
            calls = await send_many(sb, VENDOR, NUMBERS[:20], client_push_url=postback_url(base, VENDOR),
                                    concurrency=16)
            await submit(tr.pool, calls)
            assert await eventually(lambda: wrong(tr.pool, sb, "last_real")) == []
            await clean_chains(tr.pool)
            assert await eventually(pushing(sb)) == 0
            answered = [p for p in sb.postbacks if p["vendor"] == VENDOR]
            assert answered and {p["status"] for p in answered} == {200}
            stored = await tr.pool.fetchval("SELECT count(*) FROM tracker.postbacks WHERE vendor = 'twilio'")
            assert stored == len(answered)


@pytest.mark.parametrize("case", ["wrong-token", "proxy-url-not-configured", "shared-key-not-configured",
                                  "wrong-shared-key"])
async def test_callbacks_that_do_not_verify_are_refused_and_change_nothing(db_dsn, case):
    async with Sandbox({**PUSHED, "duplicate_share": 0.0, "no_receipt": 0.0}, seed=9) as sb:
        if case in ("shared-key-not-configured", "wrong-shared-key"):  # the auth token is right
            sb.vendors[VENDOR].use_shared_key(SHARED)
        creds = dict(sb.credentials[VENDOR])
        if case == "wrong-token":
            creds["auth_token"] = "not-the-account-s-token"
        elif case == "shared-key-not-configured":
            del creds["shared_key_secret"]
        elif case == "wrong-shared-key":
            creds["shared_key_secret"] = "not-the-shared-key-s-secret"
        async with running(config_for(db_dsn, twilio=creds)) as (tr, base):
            url = postback_url(base, VENDOR)
            if case == "proxy-url-not-configured":
                sb.set_proxy(PUBLIC, base)
                url = f"{PUBLIC}/postbacks/{VENDOR}/{TOKENS[VENDOR]}"
            calls = await send_many(sb, VENDOR, NUMBERS[:10], client_push_url=url)
            await submit(tr.pool, calls)

            async def waiting() -> int:
                return sb.pending_postbacks(VENDOR) or not all(t["settled"] for t in sb.truth().values())
            assert not await eventually(waiting)
            answered = [p for p in sb.postbacks if p["vendor"] == VENDOR]
            assert answered and {p["status"] for p in answered} == {403}
            assert await tr.pool.fetchval("SELECT count(*) FROM tracker.postbacks") == 0
            states = await tr.pool.fetch("SELECT DISTINCT state::text FROM tracker.messages")
            assert [r["state"] for r in states] == ["accepted"]  # as the send response left them


NEVER_SENT = {"delivered": 0.0, "read": 0.0, "failed": 0.0, "rejected": 0.0, "no_receipt": 0.0,
              "expired": 1.0}  # every message outlives its validity period in Twilio's queue


async def test_a_message_that_expired_in_twilios_queue_is_never_sent_and_ends_expired(pool, db_dsn):
    # Twilio: "Twilio does not send the message" (30036, validity period expired): `failed`
    # with the code, never `sent` before it; by the code the tracker says `expired`
    async with Sandbox({**POLLED, **NEVER_SENT}, seed=5) as sb:
        config = make_config(sb, db_dsn)
        assert await send(sb, pool, config, VENDOR, NUMBERS[:8]) == 8
        await poll_until_final(config, pool)
        assert await wrong(pool, sb) == []
        rows = await pool.fetch("SELECT state::text, failure_code FROM tracker.messages")
        assert {(r["state"], r["failure_code"]) for r in rows} == {("expired", "30036")}
        codes = {r["code"] for r in await pool.fetch(
            "SELECT DISTINCT code FROM tracker.observations WHERE source = 'poll'")}
        assert "30036" in codes and "sent" not in codes


async def test_a_message_that_expired_in_twilios_queue_calls_back_once_failed(db_dsn):
    async with Sandbox({**PUSHED, **NEVER_SENT, "duplicate_share": 0.0}, seed=11) as sb:
        async with running(config_for(db_dsn, twilio=dict(sb.credentials[VENDOR]))) as (tr, base):
            calls = await send_many(sb, VENDOR, NUMBERS[:8], client_push_url=postback_url(base, VENDOR))
            await submit(tr.pool, calls)
            assert await eventually(lambda: wrong(tr.pool, sb, "last_real")) == []
            answered = [p for p in sb.postbacks if p["vendor"] == VENDOR]
            assert len(answered) == 8 and {(p["kind"], p["status"]) for p in answered} == {("expired", 200)}
            states = await tr.pool.fetch("SELECT DISTINCT state::text FROM tracker.messages")
            assert [r["state"] for r in states] == ["expired"]


async def test_a_callback_url_with_escapes_verifies_as_twilio_signed_it(db_dsn):
    # Twilio signs the StatusCallback exactly as given, escapes and all ("including ... URL-
    # encoded characters", its error 57012): the URL must not be normalized before the check
    creds = {"account_sid": "AC" + "0" * 32, "auth_token": "the-auth-token"}
    async with running(config_for(db_dsn, twilio=creds)) as (tr, base):
        params = {"MessageSid": "SM" + "a" * 32, "MessageStatus": "sent"}
        async with aiohttp.ClientSession() as s:
            for query in ("ref=order%2F42", "x=%7Etilde&y=%3d", "plain=1"):
                url = postback_url(base, VENDOR) + "?" + query
                sig = signature(creds["auth_token"], url, params)
                async with s.post(aiohttp.client.URL(url, encoded=True), data=urlencode(params),
                                  headers={"X-Twilio-Signature": sig, "Content-Type":
                                           "application/x-www-form-urlencoded"}) as r:
                    assert r.status == 200, (query, await r.text())


async def test_a_callback_signed_with_the_secret_being_rotated_out_is_counted(db_dsn):
    # tracker_postbacks_previous_token_total tells when the old auth token is no longer used
    creds = {"account_sid": "AC" + "0" * 32, "auth_token": "the-new-auth-token",
             "previous_auth_token": "the-old-auth-token"}
    series = 'tracker_postbacks_previous_token_total{vendor="twilio"}'
    async with running(config_for(db_dsn, twilio=creds)) as (tr, base), aiohttp.ClientSession() as s:
        url = postback_url(base, VENDOR)
        before = await metric_value(base, series)
        for token, status in (("the-old-auth-token", 200), ("the-new-auth-token", 200),
                              ("a-third-token", 403)):
            params = {"MessageSid": "SM" + token[:5].encode().hex().ljust(32, "0"), "MessageStatus": "sent"}
            async with s.post(url, data=urlencode(params), headers={
                    "X-Twilio-Signature": signature(token, url, params),
                    "Content-Type": "application/x-www-form-urlencoded"}) as r:
                assert r.status == status, (token, await r.text())
        assert await metric_value(base, series) - before == 1  # the old one's only


async def test_an_undelivered_message_with_a_code_not_in_the_table_is_not_polled_again_and_ends_saying_it(
        pool, db_dsn, monkeypatch):
    """Twilio's `undelivered` does not change, whatever its ErrorCode: one we cannot map is not
    guessed (state None, counted), and not asked about again for the rest of the window (it was,
    every max_poll_interval_s, for two days a message); the window ends it `unknown` naming it."""
    import tracker.sandbox.twilio as fake
    monkeypatch.setitem(fake.Twilio.CODES, "failed", ("30099",))  # a code Twilio may add tomorrow
    monkeypatch.setitem(fake.ERRORS, "30099", "Some new carrier refusal")
    knobs = {**POLLED, "delivered": 0.0, "failed": 1.0, "rejected": 0.0, "no_receipt": 0.0,
             "expired": 0.0, "latency_s": 50.0}  # outcomes within 0.5 s, windows of 4 s
    async with Sandbox(knobs, seed=3) as sb:
        config = make_config(sb, db_dsn)
        assert await send(sb, pool, config, VENDOR, NUMBERS[:5]) == 5
        await poll_until_final(config, pool)
        rows = await pool.fetch(
            "SELECT m.state::text, m.window_ends_at, m.failure_code, m.failure_reason, o.text,"
            " (SELECT count(*) FROM tracker.observations o WHERE o.message_id = m.id"
            "  AND o.code = '30099') AS asked,"
            " (SELECT min(o.received_at) FROM tracker.observations o WHERE o.message_id = m.id"
            "  AND o.code = '30099') AS first_told"
            " FROM tracker.messages m JOIN tracker.transitions t ON t.message_id = m.id"
            " AND t.to_state = 'unknown' JOIN tracker.observations o ON o.id = t.observation_id"
            " WHERE m.vendor = 'twilio'")
    assert len(rows) == 5
    for r in rows:
        assert r["state"] == "unknown"
        said = ("tracking window ended without a final report; the vendor's last report, not in "
                "our mapping: 30099 (Some new carrier refusal)")
        assert (r["text"], r["failure_code"], r["failure_reason"]) == (said, "30099", said)
        assert r["first_told"] < r["window_ends_at"] - timedelta(seconds=2)  # told early on
        assert 1 <= r["asked"] <= 2, r  # then once more at most, as the window closed
