"""Sparrow: login/token refusals are account problems (never message states), the report call's
method, path prefix and last segment are settings (the page contradicts itself) and a wrong one
is a configuration error (refused by check-config too), and a login token that is not visible
ASCII is refused."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tests.unit.fixtures import NOW, check_sparrow, ok
from tracker.adapters import sparrow as sp
from tracker.adapters import sparrow_payloads as payloads
from tracker.adapters.base import AccountError, MessageRef, NotConfigured, ParseError
from tracker.config_types import VendorConfig
from tracker.core.states import State
from tracker.sandbox import sparrow as fake

BATCH = "5c32728e-340f-43b6-898d-d2b24e8e1426"
REQ = {"data": {"text": "hi"}, "session": {"recipients": ["+9779801234567", "+9779801234568"]}}
API = "https://ent-api.sparrowsms.com/v1/intlsms/"


def cfg(**settings: str) -> VendorConfig:
    return VendorConfig.from_keys("sparrow", api_token="a", partner_token="p", **settings)


def refused(text: str, status: str = "DATA_ERROR", result: str | None = "11") -> dict:
    body = {"data": {"errors": text}, "meta": {}, "status": status}
    return body if result is None else {**body, "result": result}


# --- 1. login / token refusals at compose: the account's problem ----------------------------------


@pytest.mark.parametrize("text", [
    "Invalid Partner Token", "Invalid API Token", "API Token Expired", "Account is Expired", "Invalid User",
    "Token Expired", "Invalid Token",  # what the sandbox answers for a bad or expired Bearer token
    "API TOKEN EXPIRED", "api token expired.", "Error: Account is Expired (contact support)",
    "invalid_partner_token", "Login failed - Invalid User!"])
def test_compose_refused_for_the_login_is_an_account_error(text):
    r = sp.parse_send(refused(text), REQ, NOW)
    assert r.observations == [] and r.account_error == AccountError("11", text)


def test_compose_unauthorized_status_is_an_account_error_whatever_the_words():
    r = sp.parse_send(refused("Token Expired", "UNAUTHORIZED"), REQ, NOW)  # the sandbox's 401 body
    assert r.observations == [] and r.account_error == AccountError("11", "Token Expired")
    r = sp.parse_send(refused("Something else", "unauthorized", result=None), REQ, NOW)
    assert r.observations == [] and r.account_error == AccountError("unauthorized", "Something else")


@pytest.mark.parametrize("text", [
    "Invalid recipient", "Invalid number", "Message expired", "No valid recipients", "Invalid username format",
    "Token budget exhausted", "Message Sending Failed", "User limit reached"])
def test_per_message_errors_are_not_taken_for_login_refusals(text):
    r = sp.parse_send(refused(text), REQ, NOW)
    assert r.account_error is None
    assert [(o.state, o.code) for o in r.observations] == [(State.rejected, "11")] * 2


def test_a_success_or_draft_is_never_a_login_refusal():
    ok_body = {"data": {"message": "Invalid User", "batch_id": BATCH, "invalid_recipients": []},
               "result": "00", "status": "OK"}
    assert [o.state for o in sp.parse_send(ok_body, REQ, NOW).observations] == [State.accepted] * 2


def test_a_report_answer_refusing_the_token_is_an_account_error():
    refs = [MessageRef(BATCH, "9779801234567")]
    r = sp.parse_status([ok(refused("API Token Expired")), ok(refused("API Token Expired"))], refs, NOW)
    assert r.account_error == AccountError("11", "API Token Expired") and r.transient_error is None
    r = sp.parse_status([ok(refused("Server busy")), ok(refused("Server busy"))], refs, NOW)
    assert r.account_error is None and r.transient_error == "report result 11"  # as before


# --- 2. the report call: settings, and a wrong one is a configuration error ------------------------


@pytest.mark.parametrize(("settings", "method", "prefix", "path"), [
    ({}, "GET", "compose", "delivery"),  # the default: today's behaviour
    ({"report_path": "delivered"}, "GET", "compose", "delivered"),
    ({"report_method": "POST"}, "POST", "compose", "delivery"),
    ({"report_method": " post ", "report_path": "/Delivered/"}, "POST", "compose", "delivered"),
    # the page's response section: /campaign/report/:uuid/delivered (and .../failed)
    ({"report_prefix": "campaign"}, "GET", "campaign", "delivery"),
    ({"report_prefix": " /Campaign/ ", "report_path": "delivered"}, "GET", "campaign", "delivered"),
    ({"report_prefix": "compose"}, "GET", "compose", "delivery"),
])
def test_status_requests_follow_the_report_settings(settings, method, prefix, path):
    reqs = sp.status_requests(cfg(**settings), [MessageRef(BATCH, "1")], token="t")
    base = f"{API}{prefix}/report/{BATCH}"
    assert [(r.method, r.url) for r in reqs] == [(method, f"{base}/{path}/"), (method, f"{base}/failed/")]
    assert all(r.json is None and r.headers["Authorization"] == "Bearer t" for r in reqs)


@pytest.mark.parametrize("settings", [{"report_path": "report"}, {"report_method": "PUT"},
                                      {"report_prefix": "report"}, {"report_prefix": "intlsms/compose"}])
def test_a_report_setting_that_cannot_be_honoured_is_not_configured(settings):
    with pytest.raises(NotConfigured, match=next(iter(settings))):
        sp.status_requests(cfg(**settings), [MessageRef(BATCH, "1")], token="t")


def test_the_settings_are_declared_with_the_sandbox_defaults():
    assert set(sp.SETTINGS) == {"report_path", "report_method", "report_prefix", "naive_time_zone"}
    assert not any(s.secret or s.url for s in sp.SETTINGS.values())
    assert sp.SETTINGS["report_prefix"].choices == ("compose", "campaign")
    assert sp.report_call(cfg()) == ("GET", "compose", "delivery")
    # the sandbox serves the same variants, the adapter's default by default
    assert (fake.REPORT_METHODS, fake.REPORT_PREFIXES, fake.REPORT_PATHS) == (
        payloads.REPORT_METHODS, payloads.REPORT_PREFIXES, payloads.REPORT_PATHS)
    assert sp.NAIVE_TZ.utcoffset(None).total_seconds() == 5 * 3600 + 45 * 60


@pytest.mark.parametrize("body", [b"<html><body>Not Found</body></html>", b"", b"404: Not Found",
                                  b'{"detail": "Not found."}'])
def test_a_404_that_is_not_sparrows_answer_is_a_configuration_error(body):
    refs = [MessageRef(BATCH, "9779801234567"), MessageRef(BATCH, "9779801234568")]
    r = sp.parse_status([ok(body, 404), ok(sp_report())], refs, NOW)  # the delivery path is wrong
    assert r.observations == [] and r.transient_error is None
    assert r.account_error.code == "http_404"
    assert "report_path" in r.account_error.reason and "report_prefix" in r.account_error.reason


def test_check_config_refuses_a_report_prefix_the_page_does_not_name(tmp_path):
    code, lines = check_sparrow(tmp_path, 'report_prefix = "intlsms"')
    assert code == 2
    assert lines[1:] == [f"{tmp_path / 'tracker.toml'}: vendors.sparrow.report_prefix: "
                         "expected one of compose, campaign, got 'intlsms'"]
    assert check_sparrow(tmp_path, 'report_prefix = "/Campaign/"')[0] == 0
    assert check_sparrow(tmp_path, 'report_prefix = "compose"')[0] == 0


def test_a_405_is_a_configuration_error_not_a_transient_one():
    refs = [MessageRef(BATCH, "9779801234567")]
    r = sp.parse_status([ok(b"405: Method Not Allowed", 405, {"Allow": "POST"})] * 2, refs, NOW)
    assert r.observations == [] and r.transient_error is None
    assert r.account_error.code == "http_405" and "report_method" in r.account_error.reason


def test_a_404_in_sparrows_envelope_is_still_the_batch_not_found():
    refs = [MessageRef(BATCH, "9779801234567")]
    missing = ok(refused("Batch not found"), 404)
    r = sp.parse_status([missing, missing], refs, NOW)
    assert r.account_error is None
    assert [(o.recipient, o.state, o.code, o.unknown_id) for o in r.observations] == [
        ("9779801234567", None, "404", True)]


def sp_report(**records) -> dict:
    return {"data": {"uuid": BATCH, "records": records}, "meta": {}, "result": "00", "status": "OK"}


# --- 3. the login token goes into a header: visible ASCII only ------------------------------------


@pytest.mark.parametrize("token", ["eyJ\u00e9.abc.def", "abc def", "abc\tdef", "tok\x7f", "tök", "abc\u200bdef"])
def test_a_login_token_that_is_not_visible_ascii_is_a_malformed_answer(token):
    body = {"data": {"message": "Success", "token": token, "expires_on": "2030-01-01T00:00:00+05:45"},
            "meta": {}, "result": "00", "status": "OK"}
    with pytest.raises(ParseError, match="visible ASCII") as e:
        sp.parse_login(ok(body), NOW)
    assert token not in str(e.value)


def test_a_visible_ascii_token_is_taken_trimmed():
    body = {"data": {"token": "  eyJ0.e30.sig-_~!  ", "expires_on": "2030-01-01 05:45:00"}, "result": "00"}
    login = sp.parse_login(ok(body), NOW)
    assert login.token == "eyJ0.e30.sig-_~!" and login.expires_on == datetime(2030, 1, 1, tzinfo=timezone.utc)
