"""engageSPARK send answers that are no verdict on their messages: "500 – engageSPARK internal
service error" (engagespark-sms-to-contact.txt), other 5xx, 408, 429, and NOTES.md's "409
duplicate `clientDedup`". None of them is `rejected` (final: the vendor refused the message): a
5xx says nothing of whether the messages were queued, and a 409 says the message was sent,
under the earlier call's id. 4xx validation refusals stay `rejected`."""
from __future__ import annotations

import orjson
import pytest

from tests.unit.fixtures import NOW
from tracker.adapters import engagespark as es
from tracker.adapters.base import NO_REF, HttpResponse
from tracker.config_types import Config
from tracker.core.states import State
from tracker.intake.plan import plan_chunk
from tracker.intake.rows import read_row

BULK = {"orgid": 1234, "messages": [{"to": "639170000002", "from": "x", "message": "a"},
                                    {"to": "639170000003", "from": "x", "message": "b"}]}
SINGLE = {"orgId": 1234, "to": "639170000001", "from": "engageSPARK", "message": "hi",
          "clientDedup": "order-42"}
# What the sandbox answers a repeated clientDedup (tracker/sandbox/engagespark.py).
DUPLICATE = {"error": "duplicate clientDedup", "errorCode": "duplicate", "context": {"clientDedup": "order-42"}}
INTERNAL = {"error": "internal service error"}


def answer(status: int, body) -> HttpResponse:
    return HttpResponse(status, {}, body if isinstance(body, bytes) else orjson.dumps(body))


def outcomes(result) -> list[tuple]:
    return [(o.vendor_ref, o.recipient, o.state, o.code, o.failure) for o in result.observations]


@pytest.mark.parametrize("response", [answer(500, INTERNAL), INTERNAL],
                         ids=["with the status", "the body alone, as stored"])
def test_a_500_is_no_rejection_every_message_is_unknown_and_noted(response):
    r = es.parse_send(response, BULK, NOW)
    assert outcomes(r) == [(NO_REF, "639170000002", State.unknown, "http_500", None),
                           (NO_REF, "639170000003", State.unknown, "http_500", None)]
    assert [o.text for o in r.observations] == ["internal service error"] * 2
    assert [o.raw["index"] for o in r.observations] == [0, 1]
    # the operator sees it beside the row (the intake notes a send result's account_error)
    assert r.account_error.code == "http_500"
    assert "whether it queued" in r.account_error.reason and "unknown" in r.account_error.reason


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_statuses_are_unknown_even_without_a_json_body(status):
    for body in (b"<html>Bad Gateway</html>", orjson.dumps({"error": "upstream timed out"})):
        r = es.parse_send(answer(status, body), SINGLE, NOW)
        assert outcomes(r) == [(NO_REF, "639170000001", State.unknown, f"http_{status}", None)]
        assert r.account_error.code == f"http_{status}"


@pytest.mark.parametrize("response", [answer(409, DUPLICATE), DUPLICATE,
                                      {"error": "Duplicate clientDedup"}, answer(409, {"error": "conflict"})],
                         ids=["409", "body as stored", "words only", "409 other words"])
def test_a_409_duplicate_was_sent_before_it_is_not_rejected(response):
    r = es.parse_send(response, SINGLE, NOW)
    assert outcomes(r) == [(NO_REF, "639170000001", State.unknown, "duplicate", None)]
    assert r.account_error.code == "duplicate"
    assert "earlier call with the same clientDedup" in r.account_error.reason


@pytest.mark.parametrize("status, code", [(500, "http_500"), (409, "duplicate")])
def test_an_id_given_with_the_error_is_tracked_under_it_with_no_state_claimed(status, code):
    body = {"error": "internal service error" if status == 500 else "duplicate clientDedup",
            "messageId": "SMS20190723T154425-123-0123", "to": "639170000001"}
    r = es.parse_send(answer(status, body), SINGLE, NOW)
    [o] = r.observations
    assert (o.vendor_ref, o.issued_ref, o.state, o.code) == (
        es.normalize_ref("SMS20190723T154425-123-0123"), "SMS20190723T154425-123-0123", None, code)
    assert r.account_error.code == code


def test_validation_refusals_stay_rejected_and_the_status_outweighs_the_words():
    for response in (answer(400, {"error": "invalid 'to' number", "errorCode": "invalid_request"}),
                     {"error": "invalid 'to' number", "errorCode": "invalid_request"},
                     answer(400, INTERNAL)):  # a 400 refuses, whatever its words
        r = es.parse_send(response, SINGLE, NOW)
        assert [o.state for o in r.observations] == [State.rejected] and r.account_error is None
    # account problems stay account problems (no message)
    r = es.parse_send(answer(402, {"error": "insufficient funds"}), SINGLE, NOW)
    assert (r.observations, r.account_error.code) == ([], "402")


def _intake(response, request):
    """The intake's pure half on a row holding the stored body (no HTTP status)."""
    row = {"id": 7, "vendor": "engagespark", "client_ref": None, "vendor_ref": None, "recipient": None,
           "submitted_at": NOW, "submitted_text": str(NOW), "response": orjson.dumps(response).decode(),
           "request": orjson.dumps(request).decode(), "response_too_large": None, "response_limit": 1 << 20}
    taken = read_row(row, NOW, 100)
    return taken, plan_chunk([taken], Config().vendors, NOW)


@pytest.mark.parametrize("response, request_, code", [(INTERNAL, BULK, "http_500"),
                                                      (DUPLICATE, SINGLE, "duplicate")])
def test_through_the_intake_reading_and_planning_the_messages_are_unknown_unpolled_and_noted(
        response, request_, code):
    taken, plan = _intake(response, request_)
    n = len(request_.get("messages", [request_]))
    assert [(m.vendor_ref, m.state, m.next_poll_at, m.failure_code) for m in plan.messages] == [
        (f"refused:7:{i}", "unknown", None, None) for i in range(n)]
    assert [o.code for _, o in plan.observations] == [code] * n
    assert taken.note.startswith(f"the vendor reported an account problem: {code} ")


def test_a_stored_500_with_its_id_is_polled_under_it():
    body = {**INTERNAL, "messageId": "SMS1-1", "to": "639170000001"}
    _, plan = _intake(body, SINGLE)
    [m] = plan.messages
    assert (m.vendor_ref, m.state, m.next_poll_at is not None) == ("SMS1-1", "submitted", True)
    assert plan.transitions == []
