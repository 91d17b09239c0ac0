"""Skycore adapter: v2 JSON and v1 XML postbacks, E202 by STATUS text, send responses, fuzzing."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.fixtures import (FUZZ, NOW, PROPERTY, as_json_text, check_send, content_types, encoded, json_values,
                                 load, methods, mostly, queries, raw, raw_bytes, shaped, unwrapped, wild_scalars,
                                 wild_values)
from tracker.adapters import skycore as sc
from tracker.adapters.base import NO_REF, HttpResponse, MessageRef, ParseError, StatusResult
from tracker.config_types import VendorConfig
from tracker.core.states import Failure, State

UTC = timezone.utc


def v1(code: str, status: str, **extra: str) -> bytes:
    more = "".join(f"<{k}>{v}</{k}>" for k, v in extra.items())
    return (f"<?xml version='1.0'?><POSTBACK><ORIGIN>SMS_MT</ORIGIN><CODE>{code}</CODE><STATUS>{status}</STATUS>"
            f"<FROM>00000</FROM><TO>10000000000</TO><TRACKINGID>trk-1</TRACKINGID><SPID>0001470</SPID>"
            f"<TIMESTAMP>2013-11-05T05:41:15-05:00</TIMESTAMP>{more}</POSTBACK>").encode()


# --- golden samples ---------------------------------------------------------------------------


def test_golden_v2_postback():
    [o] = sc.parse_postback("POST", "application/json", {}, raw("skycore", "postback_v2.json"), NOW)
    assert (o.vendor, o.vendor_ref, o.recipient, o.state, o.code, o.text, o.failure) == (
        "skycore", "xxxxxxxxxxxx", "10000000000", State.sent, "N201", "Sent", None)
    assert o.event_at == datetime(2021, 1, 26, 18, 0, 7, 990498, tzinfo=UTC)
    assert o.raw["operator-name"] == "AT&T"


def test_golden_v1_xml_postback():
    [o] = sc.parse_postback("POST", "text/xml", {}, raw("skycore", "postback_v1.xml"), NOW)
    assert (o.vendor_ref, o.recipient, o.state, o.code, o.text, o.failure) == (
        "xxxxxxxxxxxx", "10000000000", State.delivered, "N202", "Message Sent/Delivered", None)
    assert o.event_at == datetime(2013, 11, 5, 5, 41, 15, tzinfo=timezone(timedelta(hours=-5)))
    assert o.raw["operator-id"] == "0001470"


def test_golden_send_success_and_failure():
    [o] = sc.parse_send(load("skycore", "send_success.json"), load("skycore", "send_request.json"), NOW).observations
    assert (o.vendor_ref, o.recipient, o.state, o.code, o.text, o.failure) == (
        "xxxxxxxxxxxx", "10000000001", State.accepted, "Success", "SMS request accepted and queued for delivery", None)
    [f] = sc.parse_send(raw("skycore", "send_failure.json"), None, NOW).observations
    assert (f.vendor_ref, f.recipient, f.state, f.code, f.text, f.failure) == (
        NO_REF, "10000000001", State.rejected, "E111", "Invalid Sender.", Failure("E111", "Invalid Sender.", None))
    auth = sc.parse_send(load("skycore", "error_auth.json"), None, NOW)
    assert auth.observations == [] and auth.account_error.code == "E100"


# --- mapping ------------------------------------------------------------------------------------


@pytest.mark.parametrize("code,status,state,permanent", [
    ("N201", "Message Sent", State.sent, None),
    ("N202", "Message Sent/Delivered", State.delivered, None),
    ("E201", "Message Failed", State.failed, None),
    ("E202", "Message Sent/Failed", State.failed, None),
    ("E202", "Message Sent/Expired", State.expired, False),
    ("E202", "Message Sent/NotSupported", State.rejected, True),
])
def test_v1_table(code, status, state, permanent):
    [o] = sc.parse_postback("POST", "application/xml", {}, v1(code, status, STATUSDETAILS="x"), NOW)
    assert (o.vendor_ref, o.state, o.code) == ("trk-1", state, code)
    assert o.text == f"{status} (x)"
    assert (o.failure.permanent if o.failure else None) == permanent
    assert (o.failure is not None) == state.is_failure


@pytest.mark.parametrize("code,status,state", [
    ("N201", "Sent", State.sent), ("N202", "Delivered", State.delivered), ("E201", "Failed", State.failed),
    ("E202", "Rejected", State.rejected), ("E202", "Mystery", None), ("E999", "Sent", None)])
def test_v2_table(code, status, state):
    body = orjson.dumps({"code": code, "status": status, "tracking-id": " t1 ", "to": "1"})
    [o] = sc.parse_postback("POST", "application/json", {}, body, NOW)
    assert (o.vendor_ref, o.state, o.code) == ("t1", state, code)


def test_entity_bombs_and_dtds_are_refused():
    bomb = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
            b"<POSTBACK><CODE>N201</CODE><TRACKINGID>&lol2;</TRACKINGID></POSTBACK>")
    with pytest.raises(ParseError, match="DOCTYPE"):
        sc.parse_postback("POST", "text/xml", {}, bomb, NOW)
    external = b'<!DOCTYPE x SYSTEM "file:///etc/passwd"><POSTBACK/>'
    with pytest.raises(ParseError):
        sc.parse_postback("POST", "text/xml", {}, external, NOW)
    utf16 = "<?xml version='1.0' encoding='utf-16'?><!DOCTYPE x><POSTBACK/>".encode("utf-16-le")
    with pytest.raises(ParseError):
        sc.parse_postback("POST", "text/xml", {}, utf16, NOW)
    with pytest.raises(ParseError, match="root"):
        sc.parse_postback("POST", "text/xml", {}, b"<OTHER><CODE>N201</CODE></OTHER>", NOW)


def test_v1_xml_in_a_form_field_and_v2_in_the_query():
    body = urlencode({"xml": v1("E202", "Message Sent/Expired").decode()}).encode()
    [o] = sc.parse_postback("POST", "application/x-www-form-urlencoded", {}, body, NOW)
    assert (o.state, o.vendor_ref) == (State.expired, "trk-1")
    [q] = sc.parse_postback("GET", "", {"code": "N202", "status": "Delivered", "tracking-id": "t9", "to": "+1 555"},
                            b"", NOW)
    assert (q.state, q.vendor_ref, q.recipient) == (State.delivered, "t9", "1555")


def test_postback_without_tracking_id_or_code():
    with pytest.raises(ParseError, match="tracking-id"):
        sc.parse_postback("POST", "application/json", {}, b'{"code": "N201"}', NOW)
    with pytest.raises(ParseError, match="code"):
        sc.parse_postback("POST", "application/json", {}, b'{"tracking-id": "t"}', NOW)


def test_never_polled():
    cfg = VendorConfig("skycore", api_key="k")
    assert sc.POLLS is False and sc.PUSHES is True
    assert sc.status_requests(cfg, [MessageRef("t")]) == []
    assert sc.parse_status([HttpResponse(200, {}, b"{}")], [MessageRef("t")], NOW) == StatusResult()


def test_normalize_ref():
    assert sc.normalize_ref(" AbC123 ") == "AbC123"
    with pytest.raises(ParseError):
        sc.normalize_ref(" ")


# --- fuzzing and properties ---------------------------------------------------------------------

KEYS = ["origin", "code", "status", "to", "from", "timestamp", "tracking-id", "status-details", "error-code",
        "error-info", "xml"]
WORDS = ["N201", "N202", "E201", "E202", "Success", "Failure", "Message Sent/Expired", "E103",
         "2021-01-26T18:00:07.990498+00:00", "xxxxxxxxxxxx"]
payloads = shaped(KEYS, WORDS)
xml_text = st.lists(st.sampled_from(["<", ">", "/", "POSTBACK", "CODE", "TRACKINGID", "STATUS", "N201", "E202",
                                     "<!DOCTYPE", "&amp;", "&lol;", "<?xml version='1.0'?>", "]]>", "<![CDATA[", "x"]),
                    max_size=30).map("".join)


@FUZZ
@given(method=methods, ctype=content_types, query=queries,
       body=encoded(payloads) | st.binary(max_size=200) | xml_text.map(str.encode)
       | st.text(max_size=80).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_fuzz_parse_postback(method, ctype, query, body):
    try:
        unwrapped(sc.parse_postback)(method, ctype, query, body, NOW)
    except ParseError:
        pass


@FUZZ
@given(response=payloads | encoded(payloads) | st.binary(max_size=100) | json_values,
       request=st.none() | payloads | st.binary(max_size=40))
def test_fuzz_parse_send(response, request):
    try:
        unwrapped(sc.parse_send)(response, request, NOW)
    except ParseError:
        pass


V1_TEXTS = {"N201": ["Message Sent"], "N202": ["Message Sent/Delivered"], "E201": ["Message Failed"],
            "E202": ["Message Sent/Failed", "Message Sent/Expired", "Message Sent/NotSupported"]}
V2_TEXTS = {"N201": ["Sent"], "N202": ["Delivered"], "E201": ["Failed"], "E202": ["Rejected"]}
EXPECTED = {"Message Sent": State.sent, "Sent": State.sent, "Message Sent/Delivered": State.delivered,
            "Delivered": State.delivered, "Message Failed": State.failed, "Failed": State.failed,
            "Message Sent/Failed": State.failed, "Message Sent/Expired": State.expired,
            "Message Sent/NotSupported": State.rejected, "Rejected": State.rejected}


@PROPERTY
@given(data=st.data(), version=st.sampled_from([1, 2]),
       ref=st.from_regex(r"[A-Za-z0-9]{4,20}", fullmatch=True), to=st.from_regex(r"\+?[0-9]{8,15}", fullmatch=True))
def test_property_postbacks_map_to_table(data, version, ref, to):
    code = data.draw(st.sampled_from(sorted(V1_TEXTS)))
    status = data.draw(st.sampled_from((V1_TEXTS if version == 1 else V2_TEXTS)[code]))
    if version == 1:
        body = (f"<POSTBACK><CODE>{code}</CODE><STATUS>{status}</STATUS><TO>{to}</TO>"
                f"<TRACKINGID>{ref}</TRACKINGID></POSTBACK>").encode()
    else:
        body = orjson.dumps({"origin": "SMS_MT", "code": code, "status": status, "to": to, "tracking-id": ref})
    [o] = sc.parse_postback("POST", data.draw(content_types), {}, body, NOW)
    assert (o.vendor_ref, o.recipient, o.code, o.state) == (ref, to.lstrip("+"), code, EXPECTED[status])


# --- hostile input (issue #10) ------------------------------------------------------------------


def test_send_response_at_scale_is_linear():
    # Skycore answers one message per send call: a response swollen with 100,000 elements, or a
    # 100,000-character number, is still one message whose raw is that response, read in linear time.
    for n in (1_000, 100_000):
        response = {"status": "Success", "tracking-id": "trk-1", "to": "1" * n, "extra": ["x"] * n,
                    "status-details": "queued " * n}
        [o] = sc.parse_send(response, {"to": "2" * n}, NOW).observations
        assert (o.vendor_ref, o.issued_ref, len(o.recipient), len(o.text)) == ("trk-1", "trk-1", n, 200)
        assert raw_bytes([o]) == len(orjson.dumps(response))
        [f] = sc.parse_send({"status": "Failure", "error-code": "E111", "error-info": "x" * n}, {"to": "3" * n},
                            NOW).observations
        assert (f.recipient, len(f.text), f.vendor_ref, f.issued_ref) == ("3" * n, 200, NO_REF, None)


send_responses = st.fixed_dictionaries(
    {"status": mostly(st.sampled_from(["Success", "Failure", "success"]), wild_scalars)},
    optional={"tracking-id": mostly(st.sampled_from(["xxxxxxxxxxxx", " t1 ", "", 77]), wild_scalars),
              "to": mostly(st.from_regex(r"\+?1[0-9]{10}", fullmatch=True), wild_scalars),
              "status-details": wild_scalars, "error-code": mostly(st.sampled_from(["E111", "E103", "e100"]), wild_scalars),
              "error-info": wild_scalars})


@PROPERTY
@given(response=mostly(send_responses | as_json_text(send_responses), wild_values | payloads),
       request=mostly(st.none() | st.fixed_dictionaries({"to": st.sampled_from(["10000000001", "+1 555"])}),
                      wild_values))
def test_property_parse_send_gives_a_result_or_parse_error(response, request):
    try:
        result = unwrapped(sc.parse_send)(response, request, NOW)
    except ParseError:
        return
    check_send(sc, result, response, request)
