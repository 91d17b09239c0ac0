"""The sinks' functional core: the event body against its JSON Schema, Standard Webhooks
signatures checked by the reference receiver library, retry schedule and outcome laws,
Retry-After, the concurrency window, filters, JetStream waves."""
from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks import Webhook

from tracker.core.states import State
from tracker.sinks import signing
from tracker.sinks.event import DATA_FIELDS, encode_event, event_body
from tracker.sinks.jetstream import acked_prefix, subject, waves
from tracker.sinks.policy import (DEFAULT_RETRY_SCHEDULE_S, JITTER, MAX_RETRY_AFTER_S, EventFilter,
                                  Outcome, Window, after_failure, classify, jittered, pause_s,
                                  retry_after, verdict)

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs" / "event.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
STATES = [s.name for s in State]

times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                     timezones=st.just(timezone.utc))
texts = st.text(max_size=40)


@st.composite
def transitions(draw) -> dict:
    """A tracker.read_events row as asyncpg gives it (enums as text)."""
    a, b = sorted(draw(st.lists(st.sampled_from(STATES), min_size=2, max_size=2, unique=True)),
                  key=STATES.index)
    return {"event_id": draw(st.integers(1, 2**63 - 1)), "message_id": draw(st.integers(1, 2**63 - 1)),
            "vendor": draw(st.sampled_from(["sparksender", "engagespark", "skycore", "sparrow"])),
            "vendor_ref": draw(texts), "recipient": draw(st.none() | texts),
            "client_ref": draw(st.none() | texts), "from_state": a, "to_state": b,
            "source": draw(st.sampled_from(["submit", "poll", "postback", "tracker"])),
            "occurred_at": draw(times), "recorded_at": draw(times),
            "failure_code": draw(st.none() | texts), "failure_reason": draw(st.none() | texts),
            "failure_permanent": draw(st.none() | st.booleans()), "is_correction": draw(st.booleans()),
            "pos": draw(st.integers(1, 10**9))}


def new_secret(n: int = 32) -> str:
    return "whsec_" + base64.b64encode(bytes(range(n))).decode()


# --- the event body -------------------------------------------------------------------------------


@given(transitions())
@settings(max_examples=300)
def test_every_body_is_valid_against_the_schema(row):
    body = json.loads(encode_event(row))
    VALIDATOR.validate(body)
    assert body["type"] == f"message.{row['to_state']}"
    assert set(body["data"]) == set(DATA_FIELDS)
    assert body["data"]["event_id"] == row["event_id"] and body["timestamp"] == body["data"]["recorded_at"]


def test_an_event_is_at_most_12_kib_whatever_its_texts_hold():
    """docs/events.md: every text of an event is bounded where it is taken in (codes 100
    characters, a failure's reason 1,000, refs 200 and 500, recipients 32); at its worst each
    character is a control character escaped in 6 bytes."""
    from tracker.adapters.datatypes import (MAX_CLIENT_REF_LEN, MAX_CODE_LEN, MAX_REASON_LEN,
                                            MAX_RECIPIENT_LEN, MAX_REF_LEN)
    worst = "\x01"
    row = {"event_id": 2**63 - 1, "message_id": 2**63 - 1, "vendor": "engagespark",
           "vendor_ref": worst * MAX_REF_LEN, "recipient": worst * MAX_RECIPIENT_LEN,
           "client_ref": worst * MAX_CLIENT_REF_LEN, "from_state": "submitted", "to_state": "unknown",
           "source": "postback", "occurred_at": datetime(2100, 1, 1, tzinfo=timezone.utc),
           "recorded_at": datetime(2100, 1, 1, 0, 0, 0, 999999, tzinfo=timezone.utc),
           "failure_code": worst * MAX_CODE_LEN, "failure_reason": worst * MAX_REASON_LEN,
           "failure_permanent": False, "is_correction": True, "pos": 2**63 - 1}
    assert 10_000 < len(encode_event(row)) <= 12 * 1024


@given(transitions())
def test_body_times_are_utc_and_round_trip(row):
    data = json.loads(encode_event(row))["data"]
    for key in ("occurred_at", "recorded_at"):
        assert data[key].endswith("Z")
        assert datetime.fromisoformat(data[key].replace("Z", "+00:00")) == row[key]


def test_body_of_a_correction_with_failure_details():
    row = {"event_id": 1714564801000512, "message_id": 1714564700000003, "vendor": "skycore", "vendor_ref": "AB12", "recipient": "15550100",
           "client_ref": None, "from_state": "failed", "to_state": "delivered", "source": "postback",
           "occurred_at": datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc),
           "recorded_at": datetime(2024, 5, 1, 12, 0, 1, 500, tzinfo=timezone.utc),
           "failure_code": None, "failure_reason": None, "failure_permanent": None, "is_correction": True}
    assert event_body(row) == {"type": "message.delivered", "timestamp": row["recorded_at"], "data": row}
    assert b'"recorded_at":"2024-05-01T12:00:01.000500Z"' in encode_event(row)


def test_schema_refuses_a_body_missing_a_field_or_with_a_bad_type():
    row = {"event_id": 1, "message_id": 1, "vendor": "sparrow", "vendor_ref": "x", "recipient": None,
           "client_ref": None, "from_state": "submitted", "to_state": "sent", "source": "poll",
           "occurred_at": datetime(2024, 1, 1, tzinfo=timezone.utc),
           "recorded_at": datetime(2024, 1, 1, tzinfo=timezone.utc), "failure_code": None,
           "failure_reason": None, "failure_permanent": None, "is_correction": False}
    body = json.loads(encode_event(row))
    VALIDATOR.validate(body)
    del body["data"]["failure_permanent"]
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR.validate(body)
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR.validate({**json.loads(encode_event(row)), "type": "message.submitted"})


# --- signatures -------------------------------------------------------------------------------------


@given(st.binary(max_size=2000), st.integers(1, 2**62), st.integers(24, 64), st.integers(24, 64))
@settings(max_examples=100)
def test_the_reference_receiver_accepts_each_of_two_rotating_secrets(body, event_id, n_old, n_new):
    old, new = new_secret(n_old), "whsec_" + base64.b64encode(bytes(range(100, 100 + n_new))).decode()
    now = int(datetime.now(timezone.utc).timestamp())
    text = body.decode("latin-1").encode()  # the receiver library reads the body as UTF-8 text
    headers = signing.headers([signing.parse_secret(old), signing.parse_secret(new)], str(event_id), now, text)
    assert headers["webhook-id"] == str(event_id) and len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        Webhook(secret).verify(text, headers, json_parse=False)  # raises if not verified
    with pytest.raises(Exception):
        Webhook("whsec_" + base64.b64encode(bytes(range(200, 240))).decode()).verify(text, headers, json_parse=False)


def test_a_tampered_body_or_id_fails_verification():
    secret = new_secret()
    now = int(datetime.now(timezone.utc).timestamp())
    headers = signing.headers([signing.parse_secret(secret)], "42", now, b'{"a":1}')
    Webhook(secret).verify(b'{"a":1}', headers, json_parse=False)
    with pytest.raises(Exception):
        Webhook(secret).verify(b'{"a":2}', headers, json_parse=False)
    with pytest.raises(Exception):
        Webhook(secret).verify(b'{"a":1}', {**headers, "webhook-id": "43"}, json_parse=False)


@pytest.mark.parametrize("bad", ["", "secret", "whsec_", "whsec_!!!notbase64", "whsec_" + base64.b64encode(b"short").decode(),
                                 "whsec_" + base64.b64encode(bytes(65)).decode(), "WHSEC_" + base64.b64encode(bytes(32)).decode()])
def test_unusable_secrets_are_refused_without_quoting_them(bad):
    with pytest.raises(signing.BadSecret) as e:
        signing.parse_secret(bad)
    assert bad.removeprefix("whsec_") not in str(e.value) or not bad.removeprefix("whsec_")


def test_unpadded_base64_secret_is_accepted_like_the_reference_libraries():
    padded = "whsec_" + base64.b64encode(bytes(range(25))).decode()
    assert padded.endswith("=")
    assert signing.parse_secret(padded.rstrip("=")) == signing.parse_secret(padded) == bytes(range(25))


# --- outcomes, retries, slowing down ------------------------------------------------------------------


@given(st.integers(100, 599))
def test_outcome_by_status(status):
    outcome = classify(status)
    if 200 <= status < 300:
        assert outcome is Outcome.delivered
    elif status == 410:
        assert outcome is Outcome.gone
    elif status in (429, 502, 503, 504):
        assert outcome is Outcome.throttled
    else:
        assert outcome is Outcome.failed  # 3xx too: redirects are not followed
    assert classify(None) is Outcome.failed


schedules = st.lists(st.floats(0, 100_000, allow_nan=False), min_size=1, max_size=12).map(tuple)


@given(schedules, st.integers(1, 20), st.floats(0, 1, exclude_max=True), st.none() | st.floats(0, 86400))
def test_retry_delay_follows_the_schedule_within_jitter_and_never_before_retry_after(schedule, attempts, rand, wait):
    nxt = after_failure(attempts, schedule, rand, wait)
    if attempts >= len(schedule):
        assert nxt.dead  # a schedule of n entries allows n attempts
        return
    base = schedule[attempts]
    assert not nxt.dead
    assert nxt.retry_in_s >= (wait or 0.0)
    if wait is None or wait <= base * (1 - JITTER):
        assert base * (1 - JITTER) - 1e-9 <= nxt.retry_in_s <= base * (1 + JITTER) + 1e-9


@given(schedules, st.floats(0, 1, exclude_max=True))
def test_an_event_failing_every_time_is_tried_exactly_as_often_as_the_schedule_says(schedule, rand):
    attempts = 0
    while True:
        outcome, _ = verdict(500, attempts, schedule, rand)
        attempts += 1
        if outcome is Outcome.dead:
            break
        assert outcome is Outcome.failed
    assert attempts == len(schedule)


def test_default_schedule_is_the_standard_webhooks_one():
    assert DEFAULT_RETRY_SCHEDULE_S == (0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)


def test_verdict_gone_and_delivered_do_not_count_retry_after_only_with_throttling():
    assert verdict(410, 3, (0, 1), 0.5) == (Outcome.gone, 0.0)
    assert verdict(204, 0, (0, 1), 0.5) == (Outcome.delivered, 0.0)
    assert verdict(429, 0, (0, 1), 0.5, 30.0) == (Outcome.throttled, 30.0)
    assert verdict(500, 0, (0, 1), 0.5, 30.0) == (Outcome.failed, 1.0)  # Retry-After ignored
    assert verdict(301, 0, (0, 1), 0.5) == (Outcome.failed, 1.0)


def test_jitter_spreads_and_keeps_zero():
    assert jittered(0.0, 0.99) == 0.0
    assert jittered(100.0, 0.0) == pytest.approx(90.0) and jittered(100.0, 0.5) == pytest.approx(100.0)


def test_retry_after_forms():
    now = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    assert retry_after("120", now) == 120.0
    assert retry_after(" 1.5 ", now) == 1.5
    assert retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90.0
    assert retry_after(format_datetime(now - timedelta(seconds=90), usegmt=True), now) == 0.0
    assert retry_after("-5", now) == 0.0
    assert retry_after("99999999", now) == MAX_RETRY_AFTER_S
    for junk in (None, "", "soon", "nan", "inf", "Wed, 99 Foo 2024"):
        assert retry_after(junk, now) is None


def test_pause_honours_retry_after_else_doubles_to_a_cap():
    assert pause_s(7.0, 5) == 7.0
    assert pause_s(0.0, 1) == 1.0 and pause_s(0.0, 3) == 4.0  # "Retry-After: 0" still throttles
    assert [pause_s(None, n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert pause_s(None, 50) == 60.0


@given(st.integers(1, 64), st.lists(st.booleans(), max_size=300))
def test_window_stays_between_one_and_its_limit_and_recovers(limit, answers):
    w = Window(limit)
    for throttled in answers:
        w.throttled() if throttled else w.delivered()
        assert 1 <= w.size <= limit
    for _ in range(limit * limit + 1):
        w.delivered()
    assert w.size == limit


@given(st.sets(st.sampled_from(["a", "b", "c"])), st.sets(st.sampled_from(STATES)),
       st.sampled_from(["a", "b", "c"]), st.sampled_from(STATES))
def test_filter_law_empty_means_all_else_membership(vendors, states, vendor, state):
    f = EventFilter.of(vendors, states)
    assert f.matches(vendor, state) == ((not vendors or vendor in vendors) and (not states or state in states))
    assert EventFilter().matches(vendor, state)


# --- JetStream waves ------------------------------------------------------------------------------


@given(st.lists(st.integers(1, 5), max_size=40))
def test_waves_hold_each_event_once_and_a_messages_events_in_order(message_ids):
    rows = [{"message_id": m} for m in message_ids]
    ws = waves(rows)
    flat = [i for w in ws for i in w]
    assert sorted(flat) == list(range(len(rows)))
    for w in ws:
        assert len({rows[i]["message_id"] for i in w}) == len(w)  # one event per message per wave
    wave_of = {i: k for k, w in enumerate(ws) for i in w}
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            if rows[i]["message_id"] == rows[j]["message_id"]:
                assert wave_of[i] < wave_of[j]


def test_acked_prefix_and_subject():
    assert acked_prefix([True, True, False, True]) == 2
    assert acked_prefix([False, True]) == 0 and acked_prefix([]) == 0
    assert subject("sms.events", "skycore", "delivered") == "sms.events.skycore.delivered"
