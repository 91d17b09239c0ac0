"""Sparrow adapter: login, compose responses, batch reports, DLR callbacks, fuzzing."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.fixtures import (FUZZ, NOW, PROPERTY, as_json_text, check_send, content_types, mostly, encoded, headers, json_values,
                                 load, methods, ok, queries, raw, raw_bytes, shaped, statuses, unwrapped,
                                 wild_scalars, wild_values)
from tracker.adapters import sparrow as sp
from tracker.adapters import sparrow_recipients as sp_recipients
from tracker.adapters.base import (MAX_REF_LEN, AccountError, HttpResponse, LoginResult, MessageRef,
                                   NotConfigured, ParseError)
from tracker.config_types import VendorConfig
from tracker.core.states import Failure, State

CFG = VendorConfig(name="sparrow", base_url="https://ent-api.sparrowsms.com", api_token="API-secret",
                   partner_token="PARTNER-secret")
NPT = timezone(timedelta(hours=5, minutes=45))
BATCH = "5c32728e-340f-43b6-898d-d2b24e8e1426"
B2 = "b8d2516c-f78d-42d9-bdf4-6b5ec421402d"


# --- golden samples ---------------------------------------------------------------------------


def test_golden_login():
    login = sp.parse_login(ok(raw("sparrow", "login.json")), NOW)
    assert login.token == "<JWT>" and login.account_error is None
    assert login.expires_on == datetime(2022, 8, 21, 18, 0, 55, 400174, tzinfo=NPT)


def test_golden_compose_ok():
    result = sp.parse_send(load("sparrow", "compose_response_ok.json"), load("sparrow", "compose_request.json"), NOW)
    assert result.account_error is None
    got = [(o.vendor_ref, o.recipient, o.state, o.code, o.text, o.failure) for o in result.observations]
    assert got == [(BATCH, "9779801234567", State.accepted, "00", "Queued successfully", None),
                   (BATCH, "9115522942", State.accepted, "00", "Queued successfully", None)]


def test_golden_compose_data_error():
    result = sp.parse_send(HttpResponse(400, {}, raw("sparrow", "compose_response_error.json")),
                           raw("sparrow", "compose_request.json"), NOW)
    # Billing: the operator must act; like other vendors' no-funds answers, no message is made.
    assert result.observations == []
    assert result.account_error == AccountError("11", "Billing Error")


def test_golden_empty_reports_give_nothing():
    refs = [MessageRef(B2, "9779801234567")]
    result = sp.parse_status([ok(raw("sparrow", "report_delivery.json")), ok(raw("sparrow", "report_failed.json"))],
                             refs, NOW)
    assert result.observations == [] and result.account_error is None and result.transient_error is None


def test_golden_instant_dlr_literal_sample():
    # The sample's placeholders are kept literally: "<batch uuid>" and "97798xxxxxxxx".
    [o] = sp.parse_postback("POST", "application/json", {}, raw("sparrow", "dlr_instant.json"), NOW)
    assert (o.vendor_ref, o.recipient, o.state, o.code, o.text, o.failure) == (
        "<batch uuid>", "97798", State.delivered, "00", "delivered", None)
    assert o.event_at == datetime(2023, 1, 23, 14, 31, 30, tzinfo=NPT)  # naive: Nepal time


def test_golden_batch_complete():
    # The sample elides rejected_numbers ("[...]"); the fixture fills in two numbers.
    obs = sp.parse_postback("POST", "application/json", {}, raw("sparrow", "dlr_batch_complete.json"), NOW)
    assert [(o.vendor_ref, o.recipient, o.state, o.code, o.failure.permanent) for o in obs] == [
        (BATCH, "9779801234567", State.rejected, "rejected", True),
        (BATCH, "9115522942", State.rejected, "rejected", True)]


# --- login ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["Invalid Partner Token", "Invalid API Token", "API Token Expired",
                                  "Account is Expired", "Invalid User"])
def test_login_errors_are_account_errors(text):
    body = {"data": {"errors": text}, "result": "11", "status": "UNAUTHORIZED"}
    assert sp.parse_login(ok(body, 401), NOW) == LoginResult(account_error=AccountError("11", text))
    assert sp.parse_login(ok({"message": text}, 403), NOW).account_error == AccountError("http_403", text)


def test_login_edge_cases():
    no_expiry = sp.parse_login(ok({"data": {"token": "t"}, "result": "00"}), NOW)
    assert (no_expiry.token, no_expiry.expires_on) == ("t", NOW + timedelta(hours=24))
    naive = sp.parse_login(ok({"data": {"token": "t", "expires_on": "2024-05-02 17:45:00"}, "result": "00"}), NOW)
    assert naive.expires_on == datetime(2024, 5, 2, 12, tzinfo=timezone.utc)
    busy = sp.parse_login(ok(b"", 503, {"Retry-After": "60"}), NOW)  # the vendor, not the account
    assert busy == LoginResult(transient_error="HTTP 503", retry_after_s=60.0)
    with pytest.raises(ParseError) as e:
        sp.parse_login(ok({"data": {"message": "Success", "token": 7}, "result": "00"}), NOW)
    assert "7" not in str(e.value)
    assert sp.parse_login(ok(b"<html>", 401), NOW).account_error == AccountError("http_401", "login refused")


def test_login_request():
    r = sp.login_request(CFG)
    assert (r.method, r.url, r.json) == ("POST", "https://ent-api.sparrowsms.com/v1/autho/apitoken/login/",
                                         {"api_token": "API-secret", "partner_token": "PARTNER-secret"})
    with pytest.raises(NotConfigured):
        sp.login_request(VendorConfig("sparrow"))


# --- reports ----------------------------------------------------------------------------------------


def report(**records):
    return ok({"data": {"uuid": B2, "records": records}, "meta": {}, "result": "00", "status": "OK"})


def test_status_requests_two_per_batch_with_the_id_as_issued():
    # Grouped by the normalized batch id; each URL carries its group's first id verbatim
    # (percent-encoded for the path), never the normalized form.
    refs = [MessageRef(B2.upper(), "+977 980"), MessageRef(B2, "9771"), MessageRef("{" + BATCH + "}", "1")]
    reqs = sp.status_requests(CFG, refs, token="JWT-secret")
    base = "https://ent-api.sparrowsms.com/v1/intlsms/compose/report/"
    assert [(r.method, r.url) for r in reqs] == [
        ("GET", f"{base}{B2.upper()}/delivery/"), ("GET", f"{base}{B2.upper()}/failed/"),
        ("GET", f"{base}%7B{BATCH}%7D/delivery/"), ("GET", f"{base}%7B{BATCH}%7D/failed/")]
    [one, _] = sp.status_requests(CFG, [MessageRef(B2, "1")], token="t")
    assert one.url == f"{base}{B2}/delivery/"
    assert all(r.headers["Authorization"] == "Bearer JWT-secret" for r in reqs)
    with pytest.raises(ValueError):
        sp.status_requests(CFG, refs)


def test_reports_map_records():
    refs = [MessageRef(B2, n) for n in ("9771", "9772", "9773", "9774", "9775", "9776")]
    delivery = report(delivered=["9771", {"to": "+977-2", "ts": "2023-01-23 14:31:30"}],
                      seen=[{"number": "9773", "timestamp": "2023-01-23T09:00:00Z"}, "1234"])
    failed = report(rejected=[{"mobile": "9774"}], expired=[{"recipient": "9775", "time": "bad"}])
    r = sp.parse_status([delivery, failed], refs, NOW)
    got = [(o.vendor_ref, o.recipient, o.state, o.code, o.event_at, o.failure) for o in r.observations]
    assert got == [
        (B2, "9771", State.delivered, "delivered", None, None),
        (B2, "9772", State.delivered, "delivered", datetime(2023, 1, 23, 14, 31, 30, tzinfo=NPT), None),
        (B2, "9773", State.read, "seen", datetime(2023, 1, 23, 9, tzinfo=timezone.utc), None),
        (B2, "9774", State.rejected, "rejected", None, Failure("rejected", "rejected", True)),
        (B2, "9775", State.expired, "expired", None, Failure("expired", "expired", False)),
    ]  # 9776 is in neither list: nothing; 1234 was not asked about: nothing


def test_reports_unknown_list_is_unmapped():
    [o] = sp.parse_status([report(bounced=["9771"]), report()], [MessageRef(B2, "9771")], NOW).observations
    assert (o.state, o.code) == (None, "bounced")


def test_report_http_answers():
    refs = [MessageRef(B2, "9771")]
    r = sp.parse_status([ok({}, 401), ok({}, 401)], refs, NOW)
    assert r.account_error.code == "http_401" and r.observations == []
    batch_missing = {"data": {"errors": "Batch not found"}, "meta": {}, "result": "11", "status": "DATA_ERROR"}
    r = sp.parse_status([ok(batch_missing, 404), ok(batch_missing, 404)], refs, NOW)
    assert [(o.recipient, o.state, o.code) for o in r.observations] == [("9771", None, "404")]
    r = sp.parse_status([ok(b"", 429, {"Retry-After": "12"}), report()], refs, NOW)
    assert (r.transient_error, r.retry_after_s) == ("HTTP 429", 12.0)
    with pytest.raises(ParseError, match="two responses"):
        sp.parse_status([report()], refs, NOW)
    with pytest.raises(ParseError, match="record"):
        sp.parse_status([report(delivered=[{"ts": "x"}]), report()], refs, NOW)


# --- compose responses beyond the samples ----------------------------------------------------------


def test_compose_invalid_recipients_rejected():
    body = {"data": {"message": "Queued successfully", "batch_id": BATCH.upper(), "invalid_recipients": ["+1-23"]},
            "result": "00", "status": "OK"}
    req = {"session": {"recipients": ["+977 980 1234567", "123", "9779801234567"]}}
    got = [(o.vendor_ref, o.recipient, o.state, o.code, o.failure) for o in sp.parse_send(body, req, NOW).observations]
    assert got == [(BATCH, "9779801234567", State.accepted, "00", None),
                   (BATCH, "123", State.rejected, "invalid_recipient",
                    Failure("invalid_recipient", "invalid recipient", True))]


def test_compose_recipients_without_digits_are_named_not_dropped_silently():
    req = {"session": {"recipients": ["9779800000001", "N/A", "", "N/A", 9779800000002]}}
    assert sp_recipients.request_recipients(req) == ["9779800000001", "9779800000002"]
    assert sp_recipients.digitless_recipients(req) == ["N/A", ""]
    assert sp_recipients.digitless_recipients({"session": {"recipients": "9771,N/A, 9772"}}) == ["N/A"]


def test_compose_draft_is_an_account_problem_and_messages_stay_submitted():
    body = {"data": {"message": "Saved as draft (Billing Error)", "batch_id": BATCH, "invalid_recipients": []},
            "result": "01", "status": "DRAFT"}
    result = sp.parse_send(body, {"session": {"recipients": ["9771", "9772"]}}, NOW)
    assert result.account_error.code == "01"
    assert [(o.vendor_ref, o.recipient, o.state, o.code) for o in result.observations] == [
        (BATCH, "9771", State.submitted, "01"), (BATCH, "9772", State.submitted, "01")]


def test_compose_needs_the_request_and_a_result():
    with pytest.raises(ParseError, match="request"):
        sp.parse_send(load("sparrow", "compose_response_ok.json"), None, NOW)
    with pytest.raises(ParseError, match="result"):
        sp.parse_send({"data": {}}, {"session": {"recipients": ["1"]}}, NOW)
    [o] = sp.parse_send({"result": "42", "data": {"batch_id": BATCH}}, {"session": {"recipients": ["1"]}}, NOW).observations
    assert (o.state, o.code) == (None, "42")


# --- callbacks --------------------------------------------------------------------------------------


@pytest.mark.parametrize("status,state,permanent", [
    ("00", State.delivered, None), ("01", State.read, None), ("02", State.expired, False), ("07", None, None)])
def test_instant_dlr_table(status, state, permanent):
    body = orjson.dumps({"dlr_type": "instant", "dlr_data": [
        {"ts": "2023-01-23 14:31:30", "to": "+9779801234567", "id": BATCH.upper(), "status": status}]})
    [o] = sp.parse_postback("POST", "application/json", {}, body, NOW)
    assert (o.vendor_ref, o.recipient, o.state, o.code) == (BATCH, "9779801234567", state, status)
    assert (o.failure.permanent if o.failure else None) == permanent


def test_callbacks_edge_cases():
    # accepted counts alone say nothing per message
    assert sp.parse_postback("POST", "", {}, orjson.dumps({"dlr_type": "batch_complete", "dlr_data": {
        "uuid": BATCH, "status": "dispatched", "accepted_count": "10", "rejected_count": "0"}}), NOW) == []
    with pytest.raises(ParseError, match="dlr_type"):
        sp.parse_postback("POST", "", {}, b'{"dlr_type": "weekly", "dlr_data": []}', NOW)
    with pytest.raises(ParseError):
        sp.parse_postback("POST", "", {}, b'{"dlr_type": "instant", "dlr_data": [{"to": "1", "status": "00"}]}', NOW)
    [o] = sp.parse_postback("POST", "", {}, orjson.dumps({"dlr_data": [{"to": "1", "id": BATCH, "status": 0}]}), NOW)
    assert (o.code, o.state) == ("00", State.delivered)


def test_normalize_ref():
    assert sp.normalize_ref(" 5C32728E340F43B6898DD2B24E8E1426 ") == BATCH
    assert sp.normalize_ref("urn:uuid:" + BATCH) == BATCH
    assert sp.normalize_ref(" Not-A-UUID ") == "not-a-uuid"
    with pytest.raises(ParseError):
        sp.normalize_ref(12)


# --- fuzzing and properties ---------------------------------------------------------------------

KEYS = ["data", "result", "status", "token", "expires_on", "records", "delivered", "seen", "rejected", "expired",
        "to", "number", "mobile", "ts", "dlr_type", "dlr_data", "id", "uuid", "rejected_numbers", "batch_id",
        "invalid_recipients", "errors", "message", "session", "recipients"]
numbers_like = st.sampled_from(["9771", "+977-2", "", "abc", 9771])
WORDS = ["00", "01", "02", "11", "instant", "batch_complete", BATCH, "2023-01-23 14:31:30", "9771", "+977-1"]
payloads = shaped(KEYS, WORDS)
# Near-valid skeletons, so that fuzzing reaches the record and item readers.
reports = st.builds(
    lambda recs, result: {"data": {"records": recs}, "result": result},
    st.dictionaries(st.sampled_from(["delivered", "seen", "rejected", "expired", "x"]),
                    st.lists(json_values | payloads | numbers_like, max_size=3) | json_values, max_size=4)
    | json_values,
    st.sampled_from(["00", "11", None, 0, "0"]))
dlrs = st.builds(
    lambda kind, data: {"dlr_type": kind, "dlr_data": data},
    st.sampled_from(["instant", "batch_complete", "INSTANT", None, 3]),
    st.lists(st.dictionaries(st.sampled_from(["id", "uuid", "to", "status", "ts", "number"]),
                             json_values | st.sampled_from(WORDS), max_size=5), max_size=3)
    | st.dictionaries(st.sampled_from(["uuid", "id", "rejected_numbers", "status"]),
                      st.lists(json_values | numbers_like, max_size=3) | json_values | st.sampled_from(WORDS),
                      max_size=4)
    | json_values)
composes = st.builds(
    lambda result, data: {"result": result, "data": data},
    st.sampled_from(["00", "01", "11", "42", 0, 11, None]),
    st.dictionaries(st.sampled_from(["batch_id", "invalid_recipients", "message", "errors"]),
                    json_values | st.sampled_from(WORDS) | st.lists(json_values | numbers_like, max_size=3),
                    max_size=4) | json_values)
bodies = encoded(payloads | reports | dlrs | composes) | st.binary(max_size=200)


@FUZZ
@given(body=bodies, status=statuses, hdrs=headers)
def test_fuzz_parse_login(body, status, hdrs):
    try:
        unwrapped(sp.parse_login)(HttpResponse(status, hdrs, body), NOW)
    except ParseError:
        pass


@FUZZ
@given(b1=bodies, b2=bodies, s1=statuses, s2=statuses, hdrs=headers,
       refs=st.lists(st.builds(MessageRef, st.sampled_from([B2, BATCH, " x "]) | st.text(max_size=5),
                               st.none() | st.sampled_from(["9771", "+977-2"]) | st.text(max_size=5)),
                     min_size=1, max_size=3))
def test_fuzz_parse_status(b1, b2, s1, s2, hdrs, refs):
    try:
        unwrapped(sp.parse_status)([HttpResponse(s1, hdrs, b1), HttpResponse(s2, {}, b2)], refs, NOW)
    except ParseError:
        pass


@FUZZ
@given(method=methods, ctype=content_types, query=queries, body=bodies)
def test_fuzz_parse_postback(method, ctype, query, body):
    try:
        unwrapped(sp.parse_postback)(method, ctype, query, body, NOW)
    except ParseError:
        pass


@FUZZ
@given(response=payloads | composes | bodies | json_values | st.builds(HttpResponse, statuses, headers, bodies),
       request=st.none() | payloads | st.binary(max_size=40)
       | st.builds(lambda r: {"session": {"recipients": r}}, json_values))
def test_fuzz_parse_send(response, request):
    try:
        unwrapped(sp.parse_send)(response, request, NOW)
    except ParseError:
        pass


numbers = st.from_regex(r"\+?977[0-9]{7,10}", fullmatch=True)


@PROPERTY
@given(items=st.lists(st.tuples(st.uuids().map(str), numbers, st.sampled_from(sorted(sp.DLR_STATUS) + ["03", "99"]),
                                st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1))),
                      min_size=1, max_size=5))
def test_property_instant_dlrs_map_to_table(items):
    body = orjson.dumps({"dlr_type": "instant", "dlr_data": [
        {"id": u.upper(), "to": n, "status": s, "ts": t.strftime("%Y-%m-%d %H:%M:%S")} for u, n, s, t in items]})
    obs = sp.parse_postback("POST", "application/json", {}, body, NOW)
    for o, (u, n, s, t) in zip(obs, items, strict=True):
        assert (o.vendor_ref, o.recipient, o.code) == (u, n.lstrip("+"), s)
        assert o.state == sp.DLR_STATUS.get(s, (None,))[0]
        assert o.event_at == t.replace(microsecond=0, tzinfo=NPT)


@PROPERTY
@given(wanted=st.lists(numbers, min_size=1, max_size=6, unique_by=lambda n: n.lstrip("+")),
       placement=st.data(), bare=st.booleans())
def test_property_reports_map_to_table(wanted, placement, bare):
    lists = {"delivered": [], "seen": [], "rejected": [], "expired": []}
    where = {}
    for n in wanted:
        key = placement.draw(st.sampled_from([None, *lists]))
        if key is not None:
            lists[key].append(n if bare else {"to": n})
            where[n.lstrip("+")] = key
    refs = [MessageRef(B2, n) for n in wanted]
    delivery = report(delivered=lists["delivered"], seen=lists["seen"])
    failed = report(rejected=lists["rejected"], expired=lists["expired"])
    obs = sp.parse_status([delivery, failed], refs, NOW).observations
    assert {o.recipient: o.code for o in obs} == where
    for o in obs:
        assert o.state == sp.REPORT_LISTS[o.code][0]


# --- campaign scale and hostile input (issue #10) -------------------------------------------------


def _campaign(n: int, invalid_every: int) -> tuple[dict, dict]:
    numbers = [f"+97798{i:08d}" for i in range(n)]
    invalid = numbers[::invalid_every] if invalid_every else []
    response = {"data": {"message": "Queued successfully", "batch_id": BATCH, "invalid_recipients": invalid},
                "result": "00", "status": "OK"}
    return response, {"session": {"recipients": numbers, "message": "hello"}}


@pytest.mark.parametrize("invalid_every", [0, 1, 2])
def test_compose_at_campaign_scale_is_linear(invalid_every):
    # 100,000 recipients (all valid, all invalid, half invalid). Each message keeps only its own
    # part as raw; a quadratic step (list membership, the whole `data` per message) would take
    # minutes and gigabytes here. Checked at 1,000 first, so that a regression fails, not OOMs.
    for n in (1_000, 100_000):
        response, request = _campaign(n, invalid_every)
        obs = sp.parse_send(response, request, NOW).observations
        assert len(obs) == n
        rejected = [o for o in obs if o.state == State.rejected]
        assert len(rejected) == (len(range(0, n, invalid_every)) if invalid_every else 0)
        assert all(o.code == "invalid_recipient" and o.raw["invalid_recipient"].startswith("+977")
                   for o in rejected)
        size_in = len(orjson.dumps(response)) + len(orjson.dumps(request))
        assert max(len(orjson.dumps(o.raw)) for o in obs) < 150
        assert raw_bytes(obs) < 8 * size_in


def test_compose_raw_is_each_messages_own_part():
    body = {"data": {"message": "Queued successfully", "batch_id": BATCH.upper(),
                     "invalid_recipients": [{"to": "+1-23", "reason": "bad"}, "+1-23"]}, "result": "00"}
    req = {"session": {"recipients": ["+977 980 1234567", "9779801234567", "123"]}}
    ok_, bad = sp.parse_send(body, req, NOW).observations
    assert (ok_.raw, ok_.issued_ref, ok_.vendor_ref) == (
        {"batch_id": BATCH.upper(), "result": "00", "recipient": "9779801234567"}, BATCH.upper(), BATCH)
    assert bad.raw == {"batch_id": BATCH.upper(), "result": "00", "invalid_recipient": {"to": "+1-23", "reason": "bad"}}
    # A batch id too long to store would be copied into every message: the row is refused once.
    with pytest.raises(ParseError, match="batch_id is longer"):
        sp.parse_send({"data": {"batch_id": "b" * (MAX_REF_LEN + 1)}, "result": "00"}, req, NOW)


# Shapes close to the real compose request and response, with odd values mixed in.
compose_requests = st.builds(
    lambda r: {"session": {"recipients": r}},
    mostly(st.lists(numbers, max_size=6) | st.lists(numbers, max_size=6).map(",".join),
           st.lists(numbers_like | wild_scalars, max_size=6) | wild_values))
compose_responses = st.builds(
    lambda result, batch, invalid, extra: {"result": result, "status": "OK", "data": {
        "batch_id": batch, "invalid_recipients": invalid, "message": "Queued successfully", **extra}},
    mostly(st.sampled_from(["00", "00", "01", "11", "42", 0, 11]), wild_scalars),
    mostly(st.sampled_from([BATCH, BATCH.upper(), " x ", "", "x" * (MAX_REF_LEN + 1)]), wild_scalars),
    mostly(st.lists(numbers | st.fixed_dictionaries({"to": numbers}), max_size=5),
           st.lists(numbers_like | wild_scalars | st.fixed_dictionaries({"to": wild_scalars}), max_size=5)
           | wild_values),
    st.dictionaries(st.sampled_from(["errors", "message", "batch_id"]), wild_values, max_size=2))


@PROPERTY
@given(response=mostly(compose_responses | as_json_text(compose_responses), wild_values | composes),
       request=mostly(compose_requests, st.none() | wild_values))
def test_property_parse_send_gives_a_result_or_parse_error(response, request):
    try:
        result = unwrapped(sp.parse_send)(response, request, NOW)
    except ParseError:
        return
    check_send(sp, result, response, request)


def test_report_naming_another_batch_is_malformed():
    # Campaigns reach the same numbers: a report about another batch must not move this one's.
    refs = [MessageRef(B2, "9771")]
    other = ok({"data": {"uuid": BATCH, "records": {"delivered": ["9771"]}}, "result": "00"})
    with pytest.raises(ParseError, match="another batch"):
        sp.parse_status([other, report()], refs, NOW)
    same = ok({"data": {"uuid": B2.upper(), "records": {"delivered": ["9771"]}}, "result": "00"})
    [o] = sp.parse_status([same, report()], refs, NOW).observations
    assert (o.vendor_ref, o.state) == (B2, State.delivered)
