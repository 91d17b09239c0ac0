"""engageSPARK adapter: golden samples, the status-object mapping, list paging, pushes, fuzzing."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.fixtures import (EDGE_DATES, FUZZ, NOW, PROPERTY, as_json_text, check_send, content_types, encoded,
                                 headers, json_values, load, methods, mostly, ok, queries, raw, raw_bytes, shaped,
                                 statuses, unwrapped, wild_scalars, wild_values)
from tracker.adapters import engagespark as es
from tracker.adapters.base import (NO_REF, HttpRequest, HttpResponse, MessageRef, NotConfigured,
                                   Observation, ParseError)
from tracker.config_types import VendorConfig
from tracker.core.states import Failure, State

CFG = VendorConfig(name="engagespark", base_url="https://api.engagespark.com", org_id="1234", api_key="KEY-secret")
UTC = timezone.utc


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --- golden samples ---------------------------------------------------------------------------


def test_golden_bulk_single():
    result = es.parse_send(load("engagespark", "bulk_response_single.json"),
                           load("engagespark", "bulk_request_single.json"), NOW)
    [o] = result.observations
    assert (o.vendor, o.vendor_ref, o.recipient, o.state, o.code, o.failure, o.event_at) == (
        "engagespark", "SMS20190701T052154-123-1234-0", "639123456789", State.accepted,
        "accepted", None, None)
    assert o.deadline == datetime(2019, 7, 2, 5, 21, 54, 837208, tzinfo=UTC)


def test_golden_bulk_three_matched_by_position():
    result = es.parse_send(raw("engagespark", "bulk_response_bulk.json"),
                           raw("engagespark", "bulk_request_bulk.json"), NOW)
    got = [(o.vendor_ref, o.recipient, o.state, o.failure) for o in result.observations]
    assert got == [
        ("SMS20190701T053121-123-1235-0", "639123456789", State.accepted, None),
        ("SMS20190701T053121-123-1236-1", "254771234567", State.accepted, None),
        ("SMS20190701T053121-123-1237-2", "13105551212", State.accepted, None),
    ]
    assert {o.deadline for o in result.observations} == {datetime(2019, 7, 2, 5, 31, 21, 814068, tzinfo=UTC)}


@pytest.mark.parametrize("name,ref,deadline", [
    ("to", "SMS20190723T154425-123-0123", datetime(2019, 7, 24, 13, 49, 16, 387856, tzinfo=UTC)),
    ("contactid", "SMS20190723T154425-123-3210", datetime(2019, 7, 24, 15, 39, 41, 71667, tzinfo=UTC)),
])
def test_golden_send_to_contact(name, ref, deadline):
    result = es.parse_send(load("engagespark", f"contact_response_{name}.json"),
                           load("engagespark", f"contact_request_{name}.json"), NOW)
    [o] = result.observations
    assert (o.vendor_ref, o.recipient, o.state, o.code, o.failure, o.deadline) == (
        ref, "639123456789", State.accepted, "accepted", None, deadline)


def test_golden_status_old_field_names():
    result = es.parse_status([ok(raw("engagespark", "status.json"))],
                             [MessageRef("SMS20190701T053121-123-1235-0")], NOW)
    [o] = result.observations
    assert (o.vendor_ref, o.recipient, o.state, o.code, o.failure) == (
        "SMS20190701T053121-123-1235-0", "639123456789", State.delivered, "confirmed", None)
    assert o.event_at == datetime(2019, 7, 1, 5, 31, 23, 187897, tzinfo=UTC)  # successT


def test_golden_invalid_token_is_account_error():
    r = es.parse_status([ok(raw("engagespark", "error_401.json"), 401)], [MessageRef("X")], NOW)
    assert (r.account_error.code, r.account_error.reason, r.observations) == ("http_401", "Invalid Token", [])
    s = es.parse_send(HttpResponse(401, {}, raw("engagespark", "error_401.json")), None, NOW)
    assert s.account_error.code == "401" and s.observations == []
    assert es.parse_send(load("engagespark", "error_401.json"), None, NOW).account_error.code == "401"


# --- the status object ----------------------------------------------------------------------------

FUTURE = (NOW + timedelta(hours=3)).isoformat()
PAST = (NOW - timedelta(hours=3)).isoformat()


def status(**fields):
    obj = {"id": "SMS1-1", "recipient": "639123456789", **fields}
    [o] = es.parse_status([ok(obj)], [MessageRef("sms1-1")], NOW).observations
    return o


def test_new_field_names():
    assert status(deliveredToTelco=False, deliveredToPhone="unknown", done=False).state == State.accepted
    o = status(deliveredToTelco=True, deliveredToPhone="unknown", done=False, successT=None)
    assert (o.state, o.code, o.event_at) == (State.sent, "deliveredToTelco", None)
    o = status(deliveredToTelco=True, deliveredToPhone="confirmed", done=True, successT="2024-05-01T11:00:00Z")
    assert (o.vendor_ref, o.state, o.code, o.event_at) == (
        "SMS1-1", State.delivered, "confirmed", datetime(2024, 5, 1, 11, tzinfo=UTC))
    assert status(deliveredToVendor=True, deliveredByVendor=False).state == State.sent


def test_failure_while_vendor_retries_is_not_final():
    # While the vendor retries, a failure is at most accepted/sent, with its code and words kept.
    o = status(deliveredToTelco=True, deliveredToPhone="failed", deliveryError="network error", done=False)
    assert (o.state, o.code, o.text, o.failure) == (State.sent, "network error", "network error", None)
    o = status(deliveredToTelco=False, error="telco timeout", done=False)
    assert (o.state, o.code, o.text) == (State.accepted, "error", "telco timeout")
    # no `done`: the deadline decides
    o = status(deliveredToTelco=False, error="telco timeout", deliveryDeadline=FUTURE)
    assert o.state == State.accepted and o.deadline == NOW + timedelta(hours=3)
    o = status(deliveredToTelco=False, error="telco timeout", deliveryDeadline=PAST)
    assert (o.state, o.failure) == (State.failed, Failure("error", "telco timeout", None))


def stored(ref: MessageRef, **fields) -> Observation:
    """A status answer in the shape of the vendor's own page: no `done`, no deadline."""
    obj = {"id": "SMS1-1", "recipient": "639123456789", **fields}
    [o] = es.parse_status([ok(obj)], [ref], NOW).observations
    return o


def test_without_done_or_deadline_in_the_answer_the_deadline_stored_at_intake_decides():
    failing = dict(deliveredToTelco=False, error="telco timeout")
    assert stored(MessageRef("SMS1-1", deadline=NOW + timedelta(hours=1)), **failing).state == State.accepted
    assert stored(MessageRef("SMS1-1", deadline=NOW - timedelta(seconds=1)), **failing).state == State.failed
    # none stored (a vendor_ref row): the documented 24 h from submission stand in
    young = MessageRef("SMS1-1", submitted_at=NOW - timedelta(hours=23))
    old = MessageRef("SMS1-1", submitted_at=NOW - timedelta(hours=25))
    assert stored(young, **failing).state == State.accepted
    assert stored(old, **failing).state == State.failed
    # nothing known at all (a push): not final; the next poll, which knows, decides
    [o] = es.parse_postback("POST", "application/json", {},
                            orjson.dumps({"id": "SMS1-1", **failing}), NOW)
    assert (o.state, o.code, o.text, o.failure) == (State.accepted, "error", "telco timeout", None)


@pytest.mark.parametrize("derror,state,permanent", [
    ("contact absent - permanent", State.failed, True),
    ("not mobile number", State.rejected, True),
    ("no route", State.rejected, True),
    ("blocked", State.rejected, True),
    ("anti-spam filter", State.rejected, True),
    ("opted out of promotional messaging", State.rejected, True),
    ("Opted out of marketing", State.rejected, True),
    ("contact absent - temporary", State.failed, False),
    ("network error", State.failed, False),
    ("unreachable", State.failed, False),
    ("expired", State.expired, False),
    ("unknown", State.failed, None),
])
def test_delivery_error_table(derror, state, permanent):
    o = status(deliveredToTelco=True, deliveredToPhone="failed", deliveryError=derror, done=True)
    assert (o.state, o.code, o.failure) == (state, derror, Failure(derror, derror, permanent))


def test_unknown_delivery_error_is_unmapped():
    # unmapped, and settled when the vendor is done (not polled again); while it still retries,
    # no outcome and polled as usual
    o = status(deliveredToTelco=True, deliveredToPhone="failed", deliveryError="sim swapped", done=True)
    assert (o.state, o.code, o.failure, o.settled) == (None, "sim swapped", None, True)
    o = status(deliveredToTelco=True, deliveredToPhone="bounced", done=True)
    assert (o.state, o.code, o.settled) == (None, "deliveredToPhone:bounced", True)
    o = status(deliveredToTelco=True, deliveredToPhone="failed", deliveryError="sim swapped", done=False)
    assert (o.state, o.code, o.settled) == (State.sent, "sim swapped", False)


def test_multipart_delivered_only_when_all_parts_are():
    o = status(deliveredToTelco=True, deliveredToPhone="confirmed", parts=3, successPartCount=2, done=False)
    assert (o.state, o.code) == (State.sent, "partial")
    o = status(deliveredToTelco=True, deliveredToPhone="confirmed", parts=3, successPartCount=2, done=True)
    assert (o.state, o.failure) == (State.failed, Failure("partial", "2 of 3 parts delivered", None))
    o = status(deliveredToTelco=True, deliveredToPhone="confirmed", parts=3, successPartCount=3, done=True)
    assert o.state == State.delivered


def test_status_http_answers():
    refs = [MessageRef("a", "+63 912"), MessageRef("b"), MessageRef("c"), MessageRef("d")]
    r = es.parse_status([ok({"error": "not found"}, 404), ok({"id": "b", "deliveredToTelco": True}),
                         ok(b"", 429, {"Retry-After": "30"}), ok(b"", 500)], refs, NOW)
    [lookup, sent] = r.observations
    assert (lookup.vendor_ref, lookup.recipient, lookup.state, lookup.code, lookup.text) == (
        "A", "63912", None, "404", "not found")
    assert lookup.unknown_id and not sent.unknown_id
    assert (sent.vendor_ref, sent.state) == ("B", State.sent)
    assert (r.transient_error, r.retry_after_s, r.account_error) == ("HTTP 429", 30.0, None)
    r = es.parse_status([ok({"error": "insufficient funds"}, 402)], [MessageRef("a")], NOW)
    assert (r.account_error.code, r.account_error.reason) == ("http_402", "insufficient funds")


def test_a_200_holding_only_an_error_is_no_status_and_fails_nothing():
    """{"error": "internal service error"} with a 200 (no delivery field) is the vendor's
    error answer: read as a failed hand-off, it made every message past its retry deadline
    `failed`, counted as a good poll. Now it is malformed (handled as a 5xx: no report, the
    next poll later), whatever the deadline; {} too."""
    old = MessageRef("SMS1-1", submitted_at=NOW - timedelta(hours=30))
    young = MessageRef("SMS1-1", submitted_at=NOW - timedelta(hours=1))
    for body in ({"error": "internal service error"}, {"error": "Too many requests, slow down"}, {},
                 {"id": "SMS1-1", "error": "internal service error"},  # naming the message too
                 {"messageId": "SMS1-1", "error": "Invalid Token"}):
        for ref in (old, young):
            with pytest.raises(ParseError, match="no status field"):
                es.parse_status([ok(body)], [ref], NOW)
    # a status object that says its hand-off failed is still read so; one with only its id: held
    assert stored(old, deliveredToTelco=False, error="telco timeout").state == State.failed
    assert stored(old).state == State.accepted


def test_normalize_ref():
    assert es.normalize_ref(" sms20190701t053121-123-1235-0 ") == "SMS20190701T053121-123-1235-0"
    for bad in ("", None, [], True):
        with pytest.raises(ParseError):
            es.normalize_ref(bad)


# --- send responses beyond the samples --------------------------------------------------------


def test_bulk_per_message_error_is_rejected_with_that_error():
    body = {"error": "", "acceptedMessages": 1, "deliveryDeadline": "2019-07-02T05:31:21.814068733Z",
            "messages": [{"id": "", "error": "invalid 'to' number"}, {"id": "SMS1-1", "error": ""}]}
    req = {"orgid": 1, "messages": [{"to": "12"}, {"to": "+63 912 345 6789"}]}
    [bad, good] = es.parse_send(body, req, NOW).observations
    assert (bad.vendor_ref, bad.recipient, bad.state, bad.code, bad.failure) == (
        NO_REF, "12", State.rejected, "invalid 'to' number", Failure("invalid 'to' number", "invalid 'to' number", None))
    assert (good.vendor_ref, good.recipient, good.state) == ("SMS1-1", "639123456789", State.accepted)
    with pytest.raises(ParseError, match="different numbers"):
        es.parse_send(body, {"messages": [{"to": "1"}]}, NOW)


def test_bulk_error_in_the_documented_shape_refuses_every_requested_message():
    # The bulk page: its keys "will be returned after every Bulk SMS API request" (error example
    # "invalid JSON document"); the contact page: "The API's response structure will always be
    # the same." So a refused call may keep an empty `messages` list next to its `error`.
    req = {"orgid": 1234, "messages": [{"to": "639123456789"}, {"to": "254771234567"}, {"to": "13105551212"}]}
    refused = {"error": "invalid JSON document", "estimateMicro": 0, "estimate": "0", "acceptedMessages": 0,
               "deliveryDeadline": "", "messages": []}
    bare = {"error": "invalid JSON document"}
    for body in (refused, bare, {**refused, "errorCode": "invalid_json"}):
        result = es.parse_send(HttpResponse(400, {}, ok(body).body), req, NOW)
        got = [(o.vendor_ref, o.recipient, o.state, o.text, o.raw["index"]) for o in result.observations]
        assert got == [(NO_REF, n, State.rejected, "invalid JSON document", i)
                       for i, n in enumerate(("639123456789", "254771234567", "13105551212"))]
        assert result.account_error is None
    assert [o.code for o in es.parse_send({**refused, "errorCode": "invalid_json"}, req, NOW).observations] == [
        "invalid_json"] * 3
    # an empty list without an error still has to match the request
    with pytest.raises(ParseError, match="different numbers"):
        es.parse_send({**refused, "error": ""}, req, NOW)


def test_a_pushed_failure_with_neither_done_nor_a_deadline_is_not_final():
    # NOTES: `done` "not true means the vendor is still retrying", and it retries until the
    # deadline; a push names neither, so the vendor may still retry: sent, with its words kept.
    obj = {"id": "SMS1-1", "recipient": "639123456789", "deliveredToTelco": True, "deliveredToPhone": "failed",
           "deliveryError": "not mobile number"}
    [o] = es.parse_postback("POST", "application/json", {}, orjson.dumps(obj), NOW)
    assert (o.state, o.code, o.failure) == (State.sent, "not mobile number", None)
    [o] = es.parse_postback("POST", "application/json", {}, orjson.dumps({**obj, "done": True}), NOW)
    assert (o.state, o.failure) == (State.rejected, Failure("not mobile number", "not mobile number", True))


def test_single_send_error_is_rejected():
    body = {"error": "invalid 'to' number", "errorCode": "invalid_request", "messageId": "", "to": "12"}
    [o] = es.parse_send(HttpResponse(400, {}, ok(body).body), {"orgId": 1, "to": "12"}, NOW).observations
    assert (o.vendor_ref, o.recipient, o.state, o.code, o.text) == (
        NO_REF, "12", State.rejected, "invalid_request", "invalid 'to' number")
    assert es.parse_send({"error": "insufficient funds"}, None, NOW).account_error.code == "402"


def test_accepted_entries_beside_an_account_problem_are_tracked_and_the_problem_kept():
    # `messages` "corresponds to the list of messages in the API request": an entry with an id
    # was accepted, whatever words the top-level `error` has (balance, funds, organization).
    body = {"error": "Insufficient balance: 1 of 2 messages not sent", "acceptedMessages": 1,
            "messages": [{"id": "SMS20240101T000000-1-1-0", "error": ""},
                         {"id": "", "error": "not sent", "errorCode": "X"}]}
    request = {"orgid": 1, "messages": [{"to": "639170000001"}, {"to": "639170000002"}]}
    r = es.parse_send(body, request, NOW)
    assert [(o.vendor_ref, o.recipient, o.state) for o in r.observations] == [
        ("SMS20240101T000000-1-1-0", "639170000001", State.accepted),
        (NO_REF, "639170000002", State.rejected)]
    assert (r.account_error.code, r.account_error.reason) == ("402", body["error"])
    # With no entries it stays an account problem alone: no message is made.
    r = es.parse_send({"error": "Insufficient balance", "messages": []}, request, NOW)
    assert (r.account_error.code, r.observations) == ("402", [])
    # ... and so with entries that only repeat it (none names a message taken): not `rejected`
    mirrored = [{"id": "", "error": "insufficient funds"}, {"id": "", "error": "insufficient funds"}]
    r = es.parse_send({"error": "insufficient funds", "messages": mirrored}, request, NOW)
    assert (r.account_error.code, r.observations) == ("402", [])


def test_a_whole_call_outage_repeated_in_every_entry_rejects_nothing():
    # "The API's response structure will always be the same": a 500's words (or a 409's) may
    # come back in each entry too. Two requested messages were made `rejected` (final) by them.
    request = {"orgid": 1, "messages": [{"to": "639170000001"}, {"to": "639170000002"}]}
    for words in ("internal service error", "duplicate clientDedup"):
        body = {"error": words, "messages": [{"id": "", "error": words}, {"id": "", "error": words}]}
        for response in (body, ok(body, 500 if "service" in words else 409)):
            r = es.parse_send(response, request, NOW)
            assert r.observations and all(o.state is not State.rejected for o in r.observations), (
                words, r.observations)


# --- list endpoint --------------------------------------------------------------------------------


def test_list_request_and_paging():
    req = es.list_request(CFG, after=datetime(2024, 5, 1, 10, tzinfo=UTC), page=1, size=5000)
    assert (req.method, req.url) == ("GET", "https://api.engagespark.com/v1/organizations/1234/messages/")
    assert req.params == {"after": "2024-05-01T10:00:00Z", "page": "1", "size": "1000"}
    assert req.headers["Authorization"] == "Token KEY-secret"
    body = {"messages": [{"id": "SMS1-1", "recipient": "63", "deliveredToTelco": True, "deliveredToPhone": "confirmed",
                          "done": True}], "hasNextPage": True, "nextPage": 2, "paged": True}
    r = es.parse_list(ok(body), NOW, request=req)
    assert [(o.vendor_ref, o.state) for o in r.observations] == [("SMS1-1", State.delivered)]
    assert r.next_request.url == req.url and r.next_request.params["page"] == "2"
    assert r.next_request.params["after"] == "2024-05-01T10:00:00Z"
    last = es.parse_list(ok({**body, "hasNextPage": False, "nextPage": None}), NOW, request=req)
    assert last.next_request is None
    assert es.parse_list(ok(body), NOW).next_request is None  # no request given: cannot build one


def test_list_cursor_mode_and_errors():
    req = HttpRequest("GET", "https://x/v1/organizations/1/messages/", params={"limit": "100"})
    r = es.parse_list(ok({"messages": [], "hasNextPage": True, "nextPage": "SMS9-9", "paged": False}), NOW, request=req)
    assert r.next_request.params == {"limit": "100", "after": "SMS9-9"}
    assert es.parse_list(ok({"error": "Invalid Token"}, 401), NOW).account_error.code == "http_401"
    assert es.parse_list(ok({}, 404), NOW).account_error.code == "http_404"
    assert es.parse_list(ok(b"", 503, {"Retry-After": "2"}), NOW).retry_after_s == 2.0
    # an entry that cannot be read (no id) is skipped, not the page: its message, if claimed,
    # is not seen and is asked for alone
    good = {"id": "SMS1-1", "recipient": "63", "deliveredToTelco": True, "done": False}
    r = es.parse_list(ok({"messages": [{"recipient": "1"}, {"id": None}, good]}), NOW)
    assert [o.vendor_ref for o in r.observations] == ["SMS1-1"]
    # a page of more entries than any page asks for is refused before they are read
    with pytest.raises(ParseError, match="1001 entries on a page"):
        es.parse_list(ok({"messages": [good] * (es.LIST_MAX_SIZE + 1)}), NOW)


def test_status_request_url_sends_the_id_as_issued():
    [r] = es.status_requests(CFG, [MessageRef("SMS20190701T053121-123-1235-0")])
    assert (r.method, r.url) == ("GET", "https://api.engagespark.com/v1/organizations/1234/messages/"
                                        "SMS20190701T053121-123-1235-0/")
    # verbatim: no trimming or upper-casing (that is for matching only); encoded for the path
    [r] = es.status_requests(CFG, [MessageRef(" sms1/2?x ")])
    assert r.url == "https://api.engagespark.com/v1/organizations/1234/messages/%20sms1%2F2%3Fx%20/"
    assert r.headers["Authorization"] == "Token KEY-secret"
    with pytest.raises(NotConfigured):
        es.status_requests(VendorConfig("engagespark"), [MessageRef("a")])


# --- pushes ---------------------------------------------------------------------------------------


def test_push_accepts_status_object_list_wrapper_and_form():
    obj = load("engagespark", "status.json")
    [o] = es.parse_postback("POST", "application/json", {}, raw("engagespark", "status.json"), NOW)
    assert (o.vendor_ref, o.recipient, o.state) == ("SMS20190701T053121-123-1235-0", "639123456789", State.delivered)
    two = es.parse_postback("POST", "", {}, ok([obj, {**obj, "id": "SMS2"}]).body, NOW)
    assert [o.vendor_ref for o in two] == ["SMS20190701T053121-123-1235-0", "SMS2"]
    [w] = es.parse_postback("POST", "application/json", {}, ok({"message": obj}).body, NOW)
    assert w.state == State.delivered
    [f] = es.parse_postback("POST", "application/x-www-form-urlencoded", {},
                            b"id=SMS3&deliveredToTelco=true&deliveredToPhone=failed&deliveryError=no+route&done=true", NOW)
    assert (f.vendor_ref, f.state, f.failure.permanent) == ("SMS3", State.rejected, True)
    [q] = es.parse_postback("GET", "", {"id": "SMS4", "deliveredToTelco": "1"}, b"", NOW)
    assert q.state == State.sent
    with pytest.raises(ParseError):
        es.parse_postback("POST", "application/json", {}, b'{"recipient": "1"}', NOW)


# --- fuzzing and properties ---------------------------------------------------------------------

KEYS = ["id", "messageId", "recipient", "to", "deliveredToTelco", "deliveredToVendor", "deliveredToPhone",
        "deliveredByVendor", "done", "error", "deliveryError", "deliveryDeadline", "successPartCount", "parts",
        "successT", "messages", "hasNextPage", "nextPage", "message", "data", "errorCode", "estimateParts"]
WORDS = ["confirmed", "failed", "unknown", "no route", "network error", "true", "false", "SMS1-1",
         "2019-07-02T05:21:54.837208837Z", "Invalid Token", "insufficient funds", ""]
payloads = shaped(KEYS, WORDS)


@FUZZ
@given(body=encoded(payloads) | st.binary(max_size=200), status=statuses, hdrs=headers,
       ref=st.text(max_size=8) | st.integers() | st.none())
def test_fuzz_parse_status(body, status, hdrs, ref):
    try:
        unwrapped(es.parse_status)([HttpResponse(status, hdrs, body)], [MessageRef(ref)], NOW)
    except ParseError:
        pass


@FUZZ
@given(body=encoded(payloads) | st.binary(max_size=200), status=statuses, hdrs=headers,
       req=st.none() | st.builds(HttpRequest, st.just("GET"), st.just("https://x/"),
                                 params=st.none() | st.dictionaries(st.sampled_from(["page", "size", "limit", "after"]),
                                                                    st.text(max_size=5))))
def test_fuzz_parse_list(body, status, hdrs, req):
    try:
        unwrapped(es.parse_list)(HttpResponse(status, hdrs, body), NOW, request=req)
    except ParseError:
        pass


@FUZZ
@given(method=methods, ctype=content_types, query=queries,
       body=encoded(payloads) | st.binary(max_size=200) | st.text(max_size=80).map(str.encode))
def test_fuzz_parse_postback(method, ctype, query, body):
    try:
        unwrapped(es.parse_postback)(method, ctype, query, body, NOW)
    except ParseError:
        pass


@FUZZ
@given(response=payloads | encoded(payloads) | st.binary(max_size=100) | json_values
       | st.builds(HttpResponse, statuses, headers, encoded(payloads)),
       request=st.none() | payloads | st.binary(max_size=40))
def test_fuzz_parse_send(response, request):
    try:
        unwrapped(es.parse_send)(response, request, NOW)
    except ParseError:
        pass


@PROPERTY
@given(to_telco=st.booleans(), phone=st.sampled_from(["unknown", "confirmed", "failed"]),
       derror=st.sampled_from(sorted(es.DELIVERY_ERRORS) + ["", "sim swapped"]),
       done=st.sampled_from([True, False, None]), deadline=st.sampled_from([None, PAST, FUTURE]),
       old_names=st.booleans())
def test_property_status_objects_map_to_table(to_telco, phone, derror, done, deadline, old_names):
    obj = {"id": "SMS1-1"}
    if old_names:
        obj.update(deliveredToVendor=to_telco, deliveredByVendor=phone == "confirmed")
        phone = "confirmed" if phone == "confirmed" else "unknown"
    else:
        obj.update(deliveredToTelco=to_telco, deliveredToPhone=phone)
    if derror:
        obj["deliveryError"] = derror
    if done is not None:
        obj["done"] = done
    if deadline is not None:
        obj["deliveryDeadline"] = deadline
    [o] = es.parse_status([ok(obj)], [MessageRef("SMS1-1")], NOW).observations
    final = done is True or (done is None and deadline == PAST)  # nothing stored, no submit time
    if phone == "confirmed":
        assert o.state == State.delivered
    elif derror or phone == "failed":
        if not final:  # the vendor's words kept, no outcome
            assert o.state in (State.accepted, State.sent) and o.failure is None
        elif derror in es.DELIVERY_ERRORS:
            state, permanent = es.DELIVERY_ERRORS[derror]
            assert (o.state, o.code, o.failure.permanent) == (state, derror, permanent)
        elif derror:
            assert o.state is None and o.code == derror
        else:
            assert o.state == State.failed
    else:
        assert o.state == (State.sent if to_telco else State.accepted)


# --- campaign scale and hostile input (issue #10) -------------------------------------------------


def _bulk(n: int) -> tuple[dict, dict]:
    request = {"orgId": 1234, "from": "Example", "message": "hello",
               "messages": [{"to": f"63912{i:07d}"} for i in range(n)]}
    entries = [{"id": "", "error": "invalid 'to' number"} if i % 10 == 0 else
               {"id": f"SMS20190701T053121-123-{i}-{i % 7}", "error": ""} for i in range(n)]
    response = {"error": "", "acceptedMessages": n - len(range(0, n, 10)),
                "deliveryDeadline": "2019-07-02T05:31:21.814068733Z", "messages": entries}
    return response, request


def test_bulk_at_campaign_scale_is_linear():
    # 100,000 messages: each keeps its own `messages` element as raw, never the response again
    # (checked at 1,000 first, so that a regression fails instead of exhausting memory).
    for n in (1_000, 100_000):
        response, request = _bulk(n)
        obs = es.parse_send(response, request, NOW).observations
        assert len(obs) == n and sum(o.state == State.rejected for o in obs) == len(range(0, n, 10))
        assert obs[1].raw == response["messages"][1] and obs[1].issued_ref == "SMS20190701T053121-123-1-1"
        assert max(len(orjson.dumps(o.raw)) for o in obs) < 80
        assert raw_bytes(obs) <= len(orjson.dumps(response))


def test_whole_call_refusal_at_campaign_scale_is_linear():
    # One refusal for 100,000 requested messages, the response echoing the request back: each
    # message keeps the refusal's words (bounded) and its position, not the whole body.
    for n in (1_000, 100_000):
        _, request = _bulk(n)
        response = {"error": "invalid 'from' field", "errorCode": "invalid_request", "context": request}
        obs = es.parse_send(HttpResponse(400, {}, orjson.dumps(response)), request, NOW).observations
        assert len(obs) == n and {o.state for o in obs} == {State.rejected}
        assert {o.vendor_ref for o in obs} == {NO_REF} and obs[5].recipient == "639120000005"
        assert obs[5].raw == {"error": "invalid 'from' field", "errorCode": "invalid_request", "messageId": None,
                              "index": 5}
        assert raw_bytes(obs) < 3 * (len(orjson.dumps(response)) + len(orjson.dumps(request)))
    # a single refused message keeps the whole (small) response
    [one] = es.parse_send({"error": "invalid 'to' number", "messageId": "", "to": "12"}, {"to": "12"}, NOW).observations
    assert one.raw == {"error": "invalid 'to' number", "messageId": "", "to": "12"}


@pytest.mark.parametrize("deadline", EDGE_DATES)
def test_out_of_range_deadlines_never_overflow(deadline):
    # The adapter does no arithmetic a far deadline could overflow; one UTC cannot hold is None.
    [o] = es.parse_send({"messageId": "SMS1", "to": "63", "deliveryDeadline": deadline}, None, NOW).observations
    assert o.deadline is None or o.deadline.astimezone(UTC).year >= 1
    body = {"id": "SMS1", "deliveredToTelco": False, "error": "telco timeout", "deliveryDeadline": deadline}
    [s] = es.parse_status([ok(body)], [MessageRef("SMS1")], NOW).observations
    assert s.deadline == o.deadline
    assert s.state == (State.failed if s.deadline is not None and s.deadline <= NOW else State.accepted)


bulk_requests = st.builds(lambda msgs: {"orgId": 1, "messages": msgs},
                          mostly(st.lists(st.fixed_dictionaries({"to": st.from_regex(r"\+?63[0-9]{9}", fullmatch=True)}),
                                          max_size=5),
                                 st.lists(st.fixed_dictionaries({"to": wild_scalars}) | wild_values, max_size=5)))
bulk_entries = mostly(st.fixed_dictionaries({"id": st.sampled_from(["SMS1-1", "sms2-2", " SMS3 ", ""]),
                                             "error": st.sampled_from(["", "", "invalid 'to' number"])}),
                      st.dictionaries(st.sampled_from(["id", "messageId", "error", "errorCode", "to"]), wild_values,
                                      max_size=4) | wild_values)
bulk_responses = st.builds(
    lambda entries, error, deadline: {"error": error, "acceptedMessages": len(entries), "deliveryDeadline": deadline,
                                      "messages": entries},
    st.lists(bulk_entries, max_size=5), mostly(st.sampled_from(["", "invalid 'from'"]), wild_scalars),
    mostly(st.sampled_from(EDGE_DATES), wild_scalars))
single_responses = st.fixed_dictionaries({
    "messageId": mostly(st.sampled_from(["SMS20190723T154425-123-0123", "", 42]), wild_scalars),
    "to": mostly(st.sampled_from(["639123456789", "12"]), wild_scalars),
    "deliveryDeadline": mostly(st.sampled_from(EDGE_DATES), wild_scalars)},
    optional={"error": wild_scalars | st.just("invalid 'to' number"), "errorCode": wild_scalars})


@PROPERTY
@given(response=mostly(bulk_responses | single_responses | as_json_text(bulk_responses), wild_values | payloads),
       request=mostly(bulk_requests | st.none(), wild_values))
def test_property_parse_send_gives_a_result_or_parse_error(response, request):
    try:
        result = unwrapped(es.parse_send)(response, request, NOW)
    except ParseError:
        return
    check_send(es, result, response, request)
    for o in result.observations:
        assert o.deadline is None or o.deadline.astimezone(UTC)  # never a time UTC cannot hold


# --- an answer about another message ------------------------------------------------------------


def test_status_answer_naming_another_message_is_malformed():
    # A status answer whose id is not the message asked about must not move that message: it is
    # a malformed answer (ParseError: the poller counts it as one), never an observation.
    ref = MessageRef("SMS-ASKED", "639170000000", NOW, None)
    other = {"id": "SMS-OTHER", "deliveredToTelco": True, "deliveredToPhone": "confirmed", "done": True}
    with pytest.raises(ParseError, match="another message"):
        es.parse_status([HttpResponse(200, {}, orjson.dumps(other))], [ref], NOW)
    with pytest.raises(ParseError, match="another message"):
        es.parse_status([HttpResponse(200, {}, orjson.dumps({**other, "id": None, "messageId": "X"}))],
                        [ref], NOW)
    # The same id in another case (normalized), or no id at all: read as before.
    for body in ({**other, "id": " sms-asked "}, {k: v for k, v in other.items() if k != "id"}):
        [o] = es.parse_status([HttpResponse(200, {}, orjson.dumps(body))], [ref], NOW).observations
        assert (o.vendor_ref, o.state) == ("SMS-ASKED", State.delivered)
