"""Spark Sender adapter: golden samples, mapping table, requests, fuzzing."""
from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.fixtures import (FUZZ, NOW, PROPERTY, as_json_text, check_send, content_types, encoded, headers,
                                 json_values, load, methods, mostly, ok, queries, raw, raw_bytes, shaped, statuses,
                                 unwrapped, wild_scalars, wild_values)
from tracker.adapters import sparksender as ss
from tracker.adapters.base import NO_REF, AccountError, HttpResponse, MessageRef, NotConfigured, ParseError
from tracker.config_types import VendorConfig
from tracker.core.states import Failure, State

CFG = VendorConfig(name="sparksender", base_url="https://cp.sparksender.com", user_id="u-7", api_key="KEY-secret")


# --- golden samples ---------------------------------------------------------------------------


def test_golden_single_send_takes_recipient_from_request():
    result = ss.parse_send(load("sparksender", "send_single.json"),
                           {"user_id": "u", "api_key": "k", "recipient_contact_no": "+94 71 111 1111"}, NOW)
    assert result.account_error is None
    [o] = result.observations
    assert (o.vendor, o.vendor_ref, o.recipient, o.state, o.code, o.failure, o.event_at) == (
        "sparksender", "14364", "94711111111", State.accepted, "204", None, None)


def test_golden_single_send_raw_bytes_and_query_string_request():
    result = ss.parse_send(raw("sparksender", "send_single.json"),
                           "https://cp.sparksender.com/api/send/?user_id=u&api_key=k&recipient_contact_no=94711111111",
                           NOW)
    assert [(o.vendor_ref, o.recipient) for o in result.observations] == [("14364", "94711111111")]


def test_golden_bulk_send():
    result = ss.parse_send(load("sparksender", "send_bulk.json"), None, NOW)
    got = [(o.vendor_ref, o.recipient, o.state, o.code, o.failure) for o in result.observations]
    invalid = Failure("203", "Contact Number is Invalid or Operator not Support", True)
    assert got == [
        ("1000", "94711111111", State.accepted, "204", None),
        ("1001", "94773333333", State.accepted, "204", None),
        ("1002", "94752222222", State.accepted, "204", None),
        (NO_REF, "94214545455", State.rejected, "203", invalid),
        (NO_REF, "58478", State.rejected, "203", invalid),
    ]
    assert result.account_error is None


def test_golden_status():
    result = ss.parse_status([ok(raw("sparksender", "status.json"))], [MessageRef("14364")], NOW)
    [o] = result.observations
    assert (o.vendor_ref, o.recipient, o.state, o.code, o.text, o.failure, o.event_at) == (
        "14364", None, State.delivered, "2", "Delivered", None, None)
    assert result.account_error is None and result.transient_error is None


# --- mapping table ------------------------------------------------------------------------------


@pytest.mark.parametrize("value,state,failure", [
    (0, State.accepted, None),
    ("1", State.sent, None),
    (" 2 ", State.delivered, None),
    (3, State.failed, Failure("3", "Fail", None)),
    ("4", State.accepted, None),
    (5, None, None),  # invalid msg id: a lookup failure, recorded, not an outcome
    (9, None, None),  # unknown: recorded, never guessed
    ("x7", None, None),
])
def test_status_table(value, state, failure):
    [o] = ss.parse_status([ok({"sms_status": value})], [MessageRef("0077", "+94 77")], NOW).observations
    assert (o.vendor_ref, o.recipient, o.state, o.failure) == ("77", "9477", state, failure)
    assert o.code == str(value).strip()
    assert o.unknown_id == (o.code == "5")  # a lookup, counted apart: never an unmapped code


@pytest.mark.parametrize("value", [6, "7", 8])
def test_status_account_codes_are_account_errors(value):
    result = ss.parse_status([ok({"sms_status": value})], [MessageRef("1")], NOW)
    assert result.observations == []
    assert isinstance(result.account_error, AccountError) and result.account_error.code == str(value)


def test_status_http_problems():
    r = ss.parse_status([ok(b"busy", 429, {"Retry-After": "7"})], [MessageRef("1")], NOW)
    assert (r.transient_error, r.retry_after_s, r.observations) == ("HTTP 429", 7.0, [])
    r = ss.parse_status([ok(b"", 503)], [MessageRef("1")], NOW)
    assert r.transient_error == "HTTP 503" and r.account_error is None
    r = ss.parse_status([ok(b"<html>", 404)], [MessageRef("1")], NOW)
    assert r.account_error.code == "http_404"  # the unpublished status URL is wrong
    with pytest.raises(ParseError, match="not valid JSON"):
        ss.parse_status([ok(b"<html>")], [MessageRef("1")], NOW)
    with pytest.raises(ParseError):
        ss.parse_status([ok({"sms_status": 2})], [], NOW)


@pytest.mark.parametrize("code,permanent", [
    ("203", True), ("205", True), ("206", True), ("207", True), ("209", None), ("212", True),
    ("213", True), ("216", True)])
def test_send_rejection_codes(code, permanent):
    [o] = ss.parse_send({"status_code": int(code)}, {"recipient_contact_no": "94711111111"}, NOW).observations
    assert (o.vendor_ref, o.recipient, o.state, o.code) == (NO_REF, "94711111111", State.rejected, code)
    assert o.failure.code == code and o.failure.permanent is permanent


@pytest.mark.parametrize("code", ["201", "202", "208", "210", "211", "214", "215"])
def test_send_account_codes(code):
    result = ss.parse_send({"status_code": code, "error": "back at 10:00"}, None, NOW)
    assert result.observations == [] and result.account_error.code == code
    bulk = ss.parse_send({"success": [], "unsuccess": [[{"number": "1", "status": int(code)}]]}, None, NOW)
    assert bulk.observations == [] and bulk.account_error.code == code


def test_204_is_the_vendor_taking_the_message_so_accepted():
    # The page: 204 "Successfuly Sent the Message", the only success, with the vendor's msg_id;
    # docs/vendors.md: `accepted` where the vendor says it took the message.
    [o] = ss.parse_send({"status_code": "204", "msg_id": 14364}, {"recipient_contact_no": "94711111111"},
                        NOW).observations
    assert (o.state, o.code, o.text, o.failure) == (State.accepted, "204", "Successfully Sent the Message", None)


@pytest.mark.parametrize("code,words,permanent", [
    ("207", "No Contact Numbers", True), ("209", "Sending the Message is Unsuccessful", None),
    ("216", "Message contains a blocked word", True), ("203", "Contact Number is Invalid or Operator not Support",
                                                       True)])
def test_bulk_call_refused_whole_rejects_each_requested_number(code, words, permanent):
    request = {"user_id": "1001", "sender_id": "SparkDEMO", "message": "buy now",
               "recipient_contacts": "94711111111, 94773333333,+94752222222,"}
    result = ss.parse_send({"status_code": int(code)}, request, NOW)
    assert result.account_error is None
    got = [(o.vendor_ref, o.recipient, o.state, o.code, o.text, o.failure) for o in result.observations]
    failure = Failure(code, words, permanent)
    assert got == [(NO_REF, n, State.rejected, code, words, failure)
                   for n in ("94711111111", "94773333333", "94752222222")]
    assert [o.raw for o in result.observations][1] == {"status_code": code, "number": "94773333333", "index": 1}
    # the same call as a query string, and an unknown code: each number kept, unmapped
    query = "https://cp.sparksender.com/api/bulkSMS/?user_id=u&recipient_contacts=94711111111,94773333333"
    obs = ss.parse_send({"status_code": 299, "error": "new"}, query, NOW).observations
    assert [(o.recipient, o.state, o.code, o.raw["error"]) for o in obs] == [
        ("94711111111", None, "299", "new"), ("94773333333", None, "299", "new")]


def test_send_unknown_code_is_unmapped_and_bulk_is_liberal():
    [o] = ss.parse_send({"status_code": "299"}, None, NOW).observations
    assert (o.state, o.code, o.vendor_ref) == (None, "299", NO_REF)
    flat = ss.parse_send({"success": [{"number": "94 7", "msgId": 1001}], "unsuccess": []}, None, NOW)
    assert [(o.vendor_ref, o.recipient) for o in flat.observations] == [("1001", "947")]


def test_normalize_ref():
    assert ss.normalize_ref(" 0014364 ") == "14364"
    assert ss.normalize_ref(14364) == "14364"
    assert ss.normalize_ref("000") == "0"
    assert ss.normalize_ref(" Ab-01 ") == "Ab-01"
    for bad in ("", "  ", None, True, 1.5):
        with pytest.raises(ParseError):
            ss.normalize_ref(bad)


def test_postbacks_are_refused():
    with pytest.raises(ParseError, match="Spark Sender sends no postbacks"):
        ss.parse_postback("POST", "application/json", {}, b"{}", NOW)


# --- requests -------------------------------------------------------------------------------------


def test_status_requests_one_per_message_with_the_id_as_issued():
    reqs = ss.status_requests(CFG, [MessageRef("0014364"), MessageRef("15")])
    assert [(r.method, r.url) for r in reqs] == [("GET", "https://cp.sparksender.com/api/getStatus/")] * 2
    # leading zeros are dropped for matching only (normalize_ref), never in what the vendor gets
    assert reqs[0].params == {"user_id": "u-7", "api_key": "KEY-secret", "msg_id": "0014364"}
    assert reqs[1].params["msg_id"] == "15"


def test_status_url_default_and_override():
    assert ss.status_requests(VendorConfig("sparksender", user_id="u", api_key="k"), [MessageRef("1")])[0].url == \
        "https://cp.sparksender.com/api/getStatus/"
    assert ss.status_requests(VendorConfig("sparksender", base_url="http://127.0.0.1:9/sparksender/",
                                           user_id="u", api_key="k"), [MessageRef("1")])[0].url == \
        "http://127.0.0.1:9/sparksender/api/getStatus/"
    assert ss.status_requests(VendorConfig("sparksender", status_url="https://x.example/st", user_id="u",
                                           api_key="k"), [MessageRef("1")])[0].url == "https://x.example/st"
    with pytest.raises(NotConfigured):
        ss.status_requests(VendorConfig("sparksender"), [MessageRef("1")])


# --- fuzzing and properties ---------------------------------------------------------------------

KEYS = ["sms_status", "status_code", "msg_id", "msgId", "success", "unsuccess", "number", "status", "error",
        "recipient_contact_no"]
WORDS = ["204", "203", "208", "2", "5", "6", " 14364 ", "", "94711111111"]
payloads = shaped(KEYS, WORDS)


@FUZZ
@given(body=encoded(payloads) | st.binary(max_size=200), status=statuses, hdrs=headers,
       ref=st.text(max_size=8) | st.integers())
def test_fuzz_parse_status(body, status, hdrs, ref):
    try:
        unwrapped(ss.parse_status)([HttpResponse(status, hdrs, body)], [MessageRef(ref)], NOW)
    except ParseError:
        pass


@FUZZ
@given(response=payloads | encoded(payloads) | st.binary(max_size=200) | json_values,
       request=st.none() | payloads | st.text(max_size=40) | st.binary(max_size=40))
def test_fuzz_parse_send(response, request):
    try:
        unwrapped(ss.parse_send)(response, request, NOW)
    except ParseError:
        pass


@FUZZ
@given(method=methods, ctype=content_types, query=queries, body=st.binary(max_size=100))
def test_fuzz_parse_postback(method, ctype, query, body):
    with pytest.raises(ParseError):
        ss.parse_postback(method, ctype, query, body, NOW)


@PROPERTY
@given(code=st.integers(0, 300), as_text=st.booleans(), pad=st.sampled_from(["", " ", "\t"]))
def test_property_status_maps_to_table(code, as_text, pad):
    value = f"{pad}{code}{pad}" if as_text else code
    result = ss.parse_status([ok({"sms_status": value})], [MessageRef("9")], NOW)
    key = str(code)
    if key in ss.STATUS_ACCOUNT_CODES:
        assert result.account_error.code == key and not result.observations
    else:
        [o] = result.observations
        assert o.code == key
        assert o.state == ss.STATUS_CODES.get(key, (None,))[0]
        assert (o.failure is not None) == (o.state is not None and o.state.is_failure)


@PROPERTY
@given(ok_items=st.lists(st.tuples(st.integers(0, 10**9), st.from_regex(r"\+?[0-9]{6,13}", fullmatch=True)),
                         max_size=5),
       bad_items=st.lists(st.tuples(st.sampled_from(sorted(ss.SEND_REJECT_CODES) + ["299"]),
                                    st.from_regex(r"[0-9]{3,13}", fullmatch=True)), max_size=5),
       nested=st.booleans())
def test_property_bulk_maps_to_table(ok_items, bad_items, nested):
    success = [{"number": n, "msgId": str(i)} for i, n in ok_items]
    unsuccess = [{"number": n, "status": c} for c, n in bad_items]
    body = {"success": [success] if nested else success, "unsuccess": [unsuccess] if nested else unsuccess}
    obs = ss.parse_send(body, None, NOW).observations
    assert len(obs) == len(ok_items) + len(bad_items)
    for o, (i, n) in zip(obs, ok_items):
        assert (o.vendor_ref, o.recipient, o.state) == (str(i), n.lstrip("+"), State.accepted)
    for o, (c, n) in zip(obs[len(ok_items):], bad_items):
        expected = State.rejected if c in ss.SEND_REJECT_CODES else None
        assert (o.vendor_ref, o.recipient, o.state, o.code) == (NO_REF, n, expected, c)


# --- campaign scale and hostile input (issue #10) -------------------------------------------------


def test_bulk_at_campaign_scale_is_linear():
    # 100,000 sent and 100,000 refused, nested as the vendor nests them: each message keeps its
    # own element as raw (checked at 1,000 first, so that a regression fails, not exhausts memory).
    for n in (1_000, 100_000):
        success = [{"number": f"9471{i:07d}", "msgId": str(10**6 + i)} for i in range(n)]
        unsuccess = [{"number": f"9421{i:07d}", "status": 203 if i % 2 else "216"} for i in range(n)]
        response = {"success": [success], "unsuccess": [unsuccess]}
        obs = ss.parse_send(response, None, NOW).observations
        assert len(obs) == 2 * n and sum(o.state == State.rejected for o in obs) == n
        assert (obs[0].raw, obs[0].issued_ref, obs[n].raw) == (success[0], "1000000", unsuccess[0])
        assert raw_bytes(obs) <= len(orjson.dumps(response))


def test_issued_ref_keeps_what_normalize_ref_drops():
    [o] = ss.parse_send({"status_code": 204, "msg_id": " 0014364"}, {"recipient_contact_no": "947"}, NOW).observations
    assert (o.vendor_ref, o.issued_ref, o.raw) == ("14364", " 0014364", {"status_code": 204, "msg_id": " 0014364"})
    [n] = ss.parse_send({"success": [{"number": "947", "msgId": 1001}]}, None, NOW).observations
    assert (n.vendor_ref, n.issued_ref) == ("1001", "1001")


single_responses = st.fixed_dictionaries(
    {"status_code": mostly(st.sampled_from([204, "204", 203, "216", 208, 299]), wild_scalars)},
    optional={"msg_id": mostly(st.sampled_from(["14364", "0014364", 14364, ""]), wild_scalars),
              "error": wild_scalars})
bulk_items = mostly(st.fixed_dictionaries({"number": st.from_regex(r"\+?94[0-9]{9}", fullmatch=True),
                                           "msgId": st.sampled_from(["1000", "01001", 1002])}),
                    st.dictionaries(st.sampled_from(["number", "msgId", "msg_id", "status"]), wild_values, max_size=3)
                    | wild_values)
bad_items = mostly(st.fixed_dictionaries({"number": st.sampled_from(["94214545455", "58478"]),
                                          "status": st.sampled_from([203, "205", 208, "299"])}),
                   st.dictionaries(st.sampled_from(["number", "status", "status_code"]), wild_values, max_size=3)
                   | wild_values)
bulk_responses = st.builds(lambda ok_, bad, nest: {"success": [ok_] if nest else ok_, "unsuccess": [bad] if nest else bad},
                           st.lists(bulk_items, max_size=5), st.lists(bad_items, max_size=5), st.booleans())
requests = mostly(st.fixed_dictionaries({"recipient_contact_no": st.sampled_from(["+94 71 111 1111", "94711111111"])})
                  | st.fixed_dictionaries({"recipient_contacts": st.sampled_from(["94711111111,94773333333", ""])})
                  | st.just("https://cp.sparksender.com/api/send/?recipient_contact_no=94711111111") | st.none(),
                  wild_values)


@PROPERTY
@given(response=mostly(bulk_responses | single_responses | as_json_text(bulk_responses), wild_values | payloads),
       request=requests)
def test_property_parse_send_gives_a_result_or_parse_error(response, request):
    try:
        result = unwrapped(ss.parse_send)(response, request, NOW)
    except ParseError:
        return
    check_send(ss, result, response, request)


def test_status_answer_naming_another_message_is_malformed():
    # The documented answer names no message; one that names another is not written to this one.
    ref = MessageRef("014364", "8801700000000")
    with pytest.raises(ParseError, match="another message"):
        ss.parse_status([HttpResponse(200, {}, orjson.dumps({"sms_status": 2, "msg_id": "14365"}))], [ref], NOW)
    for body in ({"sms_status": 2, "msg_id": 14364}, {"sms_status": 2}):
        [o] = ss.parse_status([HttpResponse(200, {}, orjson.dumps(body))], [ref], NOW).observations
        assert (o.vendor_ref, o.state) == ("14364", State.delivered)
