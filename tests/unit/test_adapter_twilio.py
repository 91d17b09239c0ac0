"""Twilio's adapter: the Message resource polled, status callbacks and their signatures (checked
against the official `twilio` package's RequestValidator, an independent oracle), send
responses, and the whole status vocabulary."""
from __future__ import annotations

import base64
from datetime import datetime, timezone
from urllib.parse import parse_qsl, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twilio.request_validator import HMAC_SHA1, HMAC_SHA256, RequestValidator, get_signature_algorithm

from tests.unit.fixtures import FUZZ, NOW, ok, raw, load, unwrapped
from tracker.adapters import twilio as tw
from tracker.adapters.base import (AccountError, HttpResponse, MessageRef, NotConfigured,
                                   ParseError, PostbackRequest)
from tracker.config_types import VendorConfig
from tracker.core.states import State

TOKEN = "SECRET-twilio-auth-token"
SID = "SM1f0e8ae6ade43cb3c0ce4525424e404f"
CFG = VendorConfig.from_keys("twilio", base_url="https://api.twilio.com",
                             account_sid="AC0123456789abcdef0123456789abcdef", auth_token=TOKEN)
URL = "https://sms.example.com/postbacks/twilio/pb-token-0123456789"


def form(name: str) -> dict[str, str]:
    return dict(parse_qsl(raw("twilio", name).decode()))


# --- polls ----------------------------------------------------------------------------------------


def test_status_request_is_the_message_resource_with_basic_auth():
    [r] = tw.status_requests(CFG, [MessageRef(SID)])
    assert (r.method, r.url) == ("GET", "https://api.twilio.com/2010-04-01/Accounts/"
                                        f"AC0123456789abcdef0123456789abcdef/Messages/{SID}.json")
    user, _, password = base64.b64decode(r.headers["Authorization"].removeprefix("Basic ")).decode().partition(":")
    assert (user, password) == ("AC0123456789abcdef0123456789abcdef", TOKEN)
    [odd] = tw.status_requests(CFG, [MessageRef(" sm/1?x ")])  # verbatim, encoded for the path
    assert odd.url.endswith("/Messages/%20sm%2F1%3Fx%20.json")
    with pytest.raises(NotConfigured):
        tw.status_requests(VendorConfig("twilio"), [MessageRef(SID)])


def test_an_api_key_is_the_status_calls_user_instead_of_the_account_and_is_masked():
    key = VendorConfig.from_keys("twilio", account_sid="AC0123456789abcdef0123456789abcdef",
                                 api_key_sid="SK0123456789abcdef0123456789abcdef", api_key_secret="key-secret-42")
    [r] = tw.status_requests(key, [MessageRef(SID)])
    assert "/Accounts/AC0123456789abcdef0123456789abcdef/" in r.url  # the account stays in the path
    basic = r.headers["Authorization"].removeprefix("Basic ")
    assert base64.b64decode(basic).decode() == "SK0123456789abcdef0123456789abcdef:key-secret-42"
    from tracker.config.redaction import vendor_secrets_of
    from tracker.config_types import Config
    assert {"key-secret-42", basic} <= set(vendor_secrets_of(Config(vendors={"twilio": key})))
    for settings, missing in [({"api_key_sid": "SK1"}, "go together"), ({"api_key_secret": "s"}, "go together"),
                              ({}, "auth_token, or api_key_sid and api_key_secret"),
                              ({"auth_token": "t", "account_sid": None}, "account_sid")]:
        cfg = VendorConfig.from_keys("twilio", **{"account_sid": "AC1", **settings})
        with pytest.raises(NotConfigured, match=missing):
            tw.status_requests(cfg, [MessageRef(SID)])


def test_golden_undelivered_poll():
    r = tw.parse_status([ok(raw("twilio", "message_undelivered.json"))], [MessageRef(SID, "14155552345")], NOW)
    [o] = r.observations
    assert (o.vendor_ref, o.recipient, o.state, o.code) == (SID, "14155552345", State.failed, "30003")
    assert (o.failure.code, o.failure.reason, o.failure.permanent) == ("30003", "unreachable destination handset", False)
    assert o.event_at == datetime(2023, 8, 24, 5, 2, 13, tzinfo=timezone.utc)
    assert o.raw["error_message"] == "Unreachable destination handset"


@pytest.mark.parametrize("status,state,final", [
    ("accepted", State.accepted, False), ("scheduled", State.accepted, False),
    ("queued", State.accepted, False), ("sending", State.accepted, False), ("sent", State.sent, False),
    ("delivered", State.delivered, True), ("read", State.read, True),
    ("undelivered", State.failed, True), ("failed", State.failed, True),
    ("canceled", State.failed, True), ("partially_delivered", State.failed, True),
    ("receiving", None, None), ("received", None, None), ("some_new_status", None, None)])
def test_the_whole_status_vocabulary(status, state, final):
    r = tw.parse_status([ok({"sid": SID, "status": status, "to": "+1415"})], [MessageRef(SID)], NOW)
    [o] = r.observations
    assert (o.state, o.code) == (state, status)  # unmapped: recorded with its word, never guessed
    if state is not None:
        assert state.is_final == final
        assert (o.failure is not None) == state.is_failure
    assert tw.parse_postback("POST", "application/x-www-form-urlencoded", {},
                             urlencode({"MessageSid": SID, "MessageStatus": status}).encode(), NOW)[0].state == state


@pytest.mark.parametrize("code,state,permanent", [
    ("30001", State.failed, False), ("30003", State.failed, False), ("30004", State.rejected, True),
    ("30005", State.rejected, True), ("30006", State.rejected, True), ("30007", State.rejected, None),
    ("30008", State.failed, None), ("21610", State.rejected, True), ("30036", State.expired, False)])
def test_error_codes_are_kept_and_refine_the_outcome(code, state, permanent):
    r = tw.parse_status([ok({"sid": SID, "status": "undelivered", "error_code": int(code),
                             "error_message": "vendor words"})], [MessageRef(SID)], NOW)
    [o] = r.observations
    assert (o.state, o.code, o.failure.code, o.failure.permanent) == (state, code, code, permanent)


@pytest.mark.parametrize("status", ["undelivered", "failed"])
def test_an_error_code_not_in_the_table_is_recorded_unmapped_not_guessed(status):
    # the status is the coarse group; the code, which says why, is one we do not know: counted
    # and shown as unmapped (tracker.vendor_health), the vendor's words kept; settled all the
    # same (Twilio's undelivered and failed do not change: the message is not polled again)
    r = tw.parse_status([ok({"sid": SID, "status": status, "error_code": 30099,
                             "error_message": "vendor words"})], [MessageRef(SID)], NOW)
    [o] = r.observations
    assert (o.state, o.code, o.text, o.failure, o.settled) == (None, "30099", "vendor words", None, True)
    [c] = tw.parse_postback("POST", "application/x-www-form-urlencoded", {}, urlencode(
        {"MessageSid": SID, "MessageStatus": status, "ErrorCode": "30099"}).encode(), NOW)
    assert (c.state, c.code, c.settled) == (None, "30099", True)
    # without a code the status is all there is
    [n] = tw.parse_postback("POST", "application/x-www-form-urlencoded", {}, urlencode(
        {"MessageSid": SID, "MessageStatus": status}).encode(), NOW)
    assert (n.state, n.code, n.settled) == (State.failed, status, False)


@pytest.mark.parametrize("status", ["failed", "undelivered"])
def test_a_message_failed_as_the_account_was_suspended_is_the_messages_failure_not_an_account_error(status):
    # 30002 tells of the past (the account suspended before Twilio sent it); as an account error,
    # every message queued then reopened the circuit once the account was back, one probe per
    # circuit_reset_s, and the healthy ones waited behind them. The live suspension is the
    # status call refused (401/403): that one is the account error.
    r = tw.parse_status([ok({"sid": SID, "status": status, "error_code": 30002,
                             "error_message": "Account suspended"})], [MessageRef(SID)], NOW)
    assert r.account_error is None
    [o] = r.observations
    assert (o.state, o.code, o.failure.code, o.failure.reason) == (State.failed, "30002", "30002",
                                                                   "account suspended")
    for code in tw.ERROR_CODES:  # no code a message fails with is the account's
        r = tw.parse_status([ok({"sid": SID, "status": status, "error_code": code})],
                            [MessageRef(SID)], NOW)
        assert r.account_error is None, code


def test_http_answers():
    refs = [MessageRef(SID)]
    r = tw.parse_status([ok(raw("twilio", "error_20404.json"), 404)], refs, NOW)
    assert [(o.state, o.code, o.unknown_id) for o in r.observations] == [(None, "404", True)]
    assert r.account_error is None
    r = tw.parse_status([ok(raw("twilio", "error_20003.json"), 401)], refs, NOW)
    assert r.account_error == AccountError("http_401", "Authenticate") and r.observations == []
    r = tw.parse_status([ok(b"", 429, {"Retry-After": "3"})], refs, NOW)
    assert (r.transient_error, r.retry_after_s) == ("HTTP 429", 3.0)
    with pytest.raises(ParseError):
        tw.parse_status([ok(b"<html>")], refs, NOW)


def test_normalize_ref():
    assert tw.normalize_ref(" sm1F0E8AE6ADE43CB3C0CE4525424E404F ") == SID
    assert tw.normalize_ref("MM1f0e8ae6ade43cb3c0ce4525424e404f").startswith("MM")
    assert tw.normalize_ref("not-a-sid") == "not-a-sid"
    for bad in ("", "  ", None, 1.5, []):
        with pytest.raises(ParseError):
            tw.normalize_ref(bad)


# --- callbacks ------------------------------------------------------------------------------------


def test_golden_callbacks():
    [d] = tw.parse_postback("POST", "application/x-www-form-urlencoded", {},
                            raw("twilio", "status_callback_delivered.form"), NOW)
    assert (d.vendor_ref, d.recipient, d.state, d.code, d.event_at) == (SID, "15558675310", State.delivered,
                                                                        "delivered", None)
    assert d.raw["RawDlrDoneDate"] == "2308240502"  # the carrier's, without a zone: kept, not read
    [u] = tw.parse_postback("POST", "application/x-www-form-urlencoded", {},
                            raw("twilio", "status_callback_undelivered.form"), NOW)
    assert (u.state, u.code, u.failure.reason, u.failure.permanent) == (
        State.rejected, "30005", "unknown destination handset", True)
    [q] = tw.parse_postback("GET", "", {"MessageSid": SID, "MessageStatus": "sent"}, b"", NOW)
    assert q.state == State.sent
    for body in (b"MessageStatus=sent", b"", b"\xff\xfe"):
        with pytest.raises(ParseError):
            tw.parse_postback("POST", "application/x-www-form-urlencoded", {}, body, NOW)


def signed(url: str, params: dict[str, str], token: str = TOKEN) -> PostbackRequest:
    """A callback signed by the official library (the oracle), as Twilio would send it."""
    sig = RequestValidator(token).compute_signature(url, params)
    return PostbackRequest("POST", url, {"X-Twilio-Signature": sig}, urlencode(params).encode())


def test_the_signature_matches_the_official_library():
    params = form("status_callback_delivered.form")
    for url in (URL, URL + "?x=1&y=%20", "http://127.0.0.1:8080/postbacks/twilio/t"):
        assert tw.signature(TOKEN, url, params) == RequestValidator(TOKEN).compute_signature(url, params)
        assert tw.verify_postback(CFG, signed(url, params))


@FUZZ
@given(params=st.dictionaries(st.text(min_size=1, max_size=12), st.text(max_size=20), max_size=6),
       path=st.text(st.characters(codec="ascii", categories=["L", "N"]), max_size=12))
def test_signatures_agree_with_the_oracle_on_any_form(params, path):
    url = f"https://sms.example.com/postbacks/twilio/{path}"
    validator = RequestValidator(TOKEN)
    assert tw.signature(TOKEN, url, params) == validator.compute_signature(url, params)
    request = signed(url, params)
    expected = validator.validate(url, dict(parse_qsl(request.body.decode(), keep_blank_values=True)),
                                  request.headers["X-Twilio-Signature"])
    assert bool(tw.verify_postback(CFG, request)) == expected


def test_invalid_signatures_are_refused():
    params = form("status_callback_delivered.form")
    good = signed(URL, params)
    assert tw.verify_postback(CFG, good)
    assert not tw.verify_postback(CFG, PostbackRequest("POST", URL, {}, good.body))  # none
    assert not tw.verify_postback(CFG, signed(URL, params, token="another-token"))  # another key
    tampered = good.body.replace(b"delivered", b"undelivered")
    assert not tw.verify_postback(CFG, PostbackRequest("POST", URL, good.headers, tampered))
    assert not tw.verify_postback(CFG, PostbackRequest("POST", URL + "x", good.headers, good.body))
    assert not tw.verify_postback(VendorConfig("twilio"), good)  # no auth token configured


def test_behind_a_proxy_the_public_url_is_what_was_signed():
    params = form("status_callback_undelivered.form")
    public = signed(URL, params)  # Twilio called the public URL; the proxy forwarded it here:
    here = PostbackRequest("POST", "http://10.0.0.5:8080/postbacks/twilio/pb-token-0123456789",
                           public.headers, public.body)
    assert not tw.verify_postback(CFG, here)
    behind = VendorConfig.from_keys("twilio", auth_token=TOKEN, public_base_url="https://sms.example.com/")
    assert tw.verify_postback(behind, here)
    # Twilio's validators accept the URL with or without its default port
    ported = signed("https://sms.example.com:443/postbacks/twilio/pb-token-0123456789", params)
    assert tw.verify_postback(behind, PostbackRequest("POST", here.url, ported.headers, ported.body))


def test_a_json_body_is_signed_through_its_hash():
    import hashlib
    body = b'{"MessageSid": "SM1", "MessageStatus": "sent"}'
    url = f"{URL}?bodySHA256={hashlib.sha256(body).hexdigest()}"
    sig = RequestValidator(TOKEN).compute_signature(url, {})
    assert RequestValidator(TOKEN).validate(url, body.decode(), sig)
    assert tw.verify_postback(CFG, PostbackRequest("POST", url, {"X-Twilio-Signature": sig}, body))
    assert not tw.verify_postback(CFG, PostbackRequest("POST", url, {"X-Twilio-Signature": sig}, body + b" "))


# --- callbacks signed with a SharedKey (Twilio's Webhooks configuration API) ---------------------
# Twilio signs with a SharedKey's secret and its algorithm instead of the auth token, and says so
# in X-Twilio-Webhooks-Signature-Settings (key=<id>,algorithm=<alg>). The official library is the
# oracle: the secret is the shared key's when the header is there, else the auth token (as its
# helper libraries choose), the algorithm what get_signature_algorithm reads from the header.

SHARED = "SECRET-twilio-shared-key"
SK_CFG = VendorConfig.from_keys("twilio", account_sid="AC0123456789abcdef0123456789abcdef",
                                auth_token=TOKEN, shared_key_secret=SHARED)
KEY_ID = "webhooks_sharedkey_01ARZ3NDEKTSV4RRFFQ69G5FAV"


def settings_of(algorithm: str) -> str:
    return f"key={KEY_ID},algorithm={algorithm}"


def shared_signed(url: str, params: dict[str, str], algorithm: str = HMAC_SHA256, *,
                  secret: str = SHARED, settings: str | None = None) -> PostbackRequest:
    """A callback signed by the official library with a SharedKey, as Twilio sends it."""
    sig = RequestValidator(secret).compute_signature(url, params, algorithm)
    headers = {"X-Twilio-Signature": sig,
               "X-Twilio-Webhooks-Signature-Settings": settings or settings_of(algorithm)}
    return PostbackRequest("POST", url, headers, urlencode(params).encode())


def oracle(cfg: VendorConfig, request: PostbackRequest) -> bool:
    """What Twilio's library says of a callback, the secret chosen as its helpers do."""
    settings = request.headers.get("X-Twilio-Webhooks-Signature-Settings")
    secret = cfg.settings.get("shared_key_secret" if settings else "auth_token")
    if not secret:
        return False  # twilio.webhook(): header present without a shared key secret: refused
    params = dict(parse_qsl(request.body.decode(), keep_blank_values=True))
    return RequestValidator(secret).validate(request.url, params, request.headers["X-Twilio-Signature"],
                                             get_signature_algorithm(settings))


@pytest.mark.parametrize("algorithm", [HMAC_SHA1, HMAC_SHA256])
def test_shared_key_signatures_verify_as_the_official_library_says(algorithm):
    params = form("status_callback_delivered.form")
    for url in (URL, URL + "?x=1&y=%20", "http://127.0.0.1:8080/postbacks/twilio/t",
                "https://sms.example.com:443/postbacks/twilio/pb-token-0123456789"):
        assert tw.signature(SHARED, url, params, algorithm) == RequestValidator(SHARED).compute_signature(
            url, params, algorithm)
        request = shared_signed(url, params, algorithm)
        assert oracle(SK_CFG, request) and tw.verify_postback(SK_CFG, request)
    # the header's algorithm in any case, as the library reads it; no algorithm= part: HMAC_SHA1
    lower = shared_signed(URL, params, algorithm, settings=settings_of(algorithm.lower()))
    assert oracle(SK_CFG, lower) and tw.verify_postback(SK_CFG, lower)
    bare = shared_signed(URL, params, HMAC_SHA1, settings=f"key={KEY_ID}")
    assert oracle(SK_CFG, bare) and tw.verify_postback(SK_CFG, bare)
    # behind a proxy, as with the auth token
    here = "http://10.0.0.5:8080/postbacks/twilio/pb-token-0123456789"
    behind = VendorConfig.from_keys("twilio", auth_token=TOKEN, shared_key_secret=SHARED,
                                    public_base_url="https://sms.example.com")
    public = shared_signed(URL, params, algorithm)
    assert tw.verify_postback(behind, PostbackRequest("POST", here, public.headers, public.body))


@pytest.mark.parametrize("algorithm", [HMAC_SHA1, HMAC_SHA256])
def test_a_json_body_signed_with_a_shared_key_is_signed_through_its_hash(algorithm):
    import hashlib
    body = b'{"MessageSid": "SM1", "MessageStatus": "sent"}'
    url = f"{URL}?bodySHA256={hashlib.sha256(body).hexdigest()}"
    sig = RequestValidator(SHARED).compute_signature(url, {}, algorithm)
    assert RequestValidator(SHARED).validate(url, body.decode(), sig, algorithm)
    headers = {"X-Twilio-Signature": sig, "X-Twilio-Webhooks-Signature-Settings": settings_of(algorithm)}
    assert tw.verify_postback(SK_CFG, PostbackRequest("POST", url, headers, body))
    assert not tw.verify_postback(SK_CFG, PostbackRequest("POST", url, headers, body + b" "))


def test_callbacks_a_shared_key_did_not_sign_are_refused():
    params = form("status_callback_undelivered.form")
    good = shared_signed(URL, params)
    assert tw.verify_postback(SK_CFG, good)
    tampered = good.body.replace(b"30005", b"30003")
    assert not tw.verify_postback(SK_CFG, PostbackRequest("POST", URL, good.headers, tampered))
    assert not tw.verify_postback(SK_CFG, shared_signed(URL, params, secret="another-shared-key"))
    # the algorithm is part of what was signed: SHA-1 signature said to be SHA-256, and back
    sha1 = shared_signed(URL, params, HMAC_SHA1)
    for algorithm in (HMAC_SHA256, "HMAC_SHA512", "MD5", "hmac-sha256", "none"):
        request = PostbackRequest("POST", URL, {**sha1.headers, "X-Twilio-Webhooks-Signature-Settings":
                                                settings_of(algorithm)}, sha1.body)
        assert not tw.verify_postback(SK_CFG, request), algorithm
        assert bool(tw.verify_postback(SK_CFG, request)) == oracle(SK_CFG, request), algorithm
    # an algorithm we do not know, however well signed: refused (as the library: False)
    import hashlib
    import hmac as hmac_
    data = (URL + "".join(k + params[k] for k in sorted(params))).encode()
    sha512 = base64.b64encode(hmac_.new(SHARED.encode(), data, hashlib.sha512).digest()).decode()
    unknown = PostbackRequest("POST", URL, {"X-Twilio-Signature": sha512,
                                            "X-Twilio-Webhooks-Signature-Settings": settings_of("HMAC_SHA512")},
                              good.body)
    assert not tw.verify_postback(SK_CFG, unknown) and not oracle(SK_CFG, unknown)
    # the header present but no shared key secret configured: refused, the auth token not tried
    assert not tw.verify_postback(CFG, good)
    by_token = shared_signed(URL, params, HMAC_SHA1, secret=TOKEN)
    assert not tw.verify_postback(CFG, by_token) and not tw.verify_postback(SK_CFG, by_token)
    assert not oracle(SK_CFG, by_token)
    # a shared key's signature without the header: the auth token is what it must verify with
    stripped = PostbackRequest("POST", URL, {"X-Twilio-Signature": good.headers["X-Twilio-Signature"]},
                               good.body)
    assert not tw.verify_postback(SK_CFG, stripped) and not oracle(SK_CFG, stripped)
    # without the header the auth token (HMAC-SHA1) still verifies, a shared key configured or not
    assert tw.verify_postback(SK_CFG, signed(URL, params)) and tw.verify_postback(CFG, signed(URL, params))


@FUZZ
@given(params=st.dictionaries(st.text(min_size=1, max_size=12), st.text(max_size=20), max_size=6),
       signer=st.sampled_from([SHARED, TOKEN, "another-key"]),
       signed_as=st.sampled_from([HMAC_SHA1, HMAC_SHA256]),
       settings=st.one_of(st.none(), st.sampled_from([
           "HMAC_SHA1", "HMAC_SHA256", "hmac_sha256", "HMAC_SHA512", "SHA256", ""]).map(settings_of),
           st.just(f"key={KEY_ID}"), st.text(st.characters(codec="ascii", categories=["L", "N", "P"]),
                                              min_size=1, max_size=40)),
       cfg=st.sampled_from([CFG, SK_CFG]))
def test_verification_agrees_with_the_oracle_for_any_signer_and_settings(params, signer, signed_as,
                                                                          settings, cfg):
    sig = RequestValidator(signer).compute_signature(URL, params, signed_as)
    headers = {"X-Twilio-Signature": sig}
    if settings is not None:
        headers["X-Twilio-Webhooks-Signature-Settings"] = settings
    request = PostbackRequest("POST", URL, headers, urlencode(params).encode())
    assert bool(tw.verify_postback(cfg, request)) == oracle(cfg, request)


def test_while_a_secret_is_rotated_callbacks_signed_with_either_verify():
    params = form("status_callback_delivered.form")
    old, new = signed(URL, params, token=TOKEN), signed(URL, params, token="the-new-auth-token")
    rotating = VendorConfig.from_keys("twilio", auth_token="the-new-auth-token", previous_auth_token=TOKEN)
    # each says which secret verified it: the previous one is counted while it is still used
    assert tw.verify_postback(rotating, old) == "previous_auth_token"
    assert tw.verify_postback(rotating, new) == "auth_token"
    assert not tw.verify_postback(rotating, signed(URL, params, token="a-third-token"))
    done = VendorConfig.from_keys("twilio", auth_token="the-new-auth-token")
    assert not tw.verify_postback(done, old) and tw.verify_postback(done, new)
    # a shared key the same way; and each scheme's previous secret only for that scheme
    keys = VendorConfig.from_keys("twilio", auth_token="the-new-auth-token", previous_auth_token=TOKEN,
                                  shared_key_secret="new-shared-key", previous_shared_key_secret=SHARED)
    for algorithm in (HMAC_SHA1, HMAC_SHA256):
        assert tw.verify_postback(keys, shared_signed(URL, params, algorithm)) == "previous_shared_key_secret"
        assert tw.verify_postback(keys, shared_signed(URL, params, algorithm,
                                                      secret="new-shared-key")) == "shared_key_secret"
        assert not tw.verify_postback(keys, shared_signed(URL, params, algorithm, secret=TOKEN))
    assert not tw.verify_postback(keys, signed(URL, params, token=SHARED))
    # a previous secret alone verifies nothing: a rotation that lost its new secret is refused
    alone = VendorConfig.from_keys("twilio", previous_auth_token=TOKEN, previous_shared_key_secret=SHARED)
    assert not tw.verify_postback(alone, old) and not tw.verify_postback(alone, shared_signed(URL, params))


def test_a_previous_twilio_secret_alone_or_unchanged_is_refused_by_check_config(tmp_path):
    from tracker.config import ConfigError
    from tracker.config.loader import load

    (tmp_path / "tracker.toml").write_text('[vendors.twilio]\nprevious_auth_token = "old-auth-0123"\n'
                                           'shared_key_secret = "same-key-0123"\n'
                                           'previous_shared_key_secret = "same-key-0123"\n')
    with pytest.raises(ConfigError) as e:
        load(str(tmp_path / "tracker.toml"), env={})
    found = {p.key: p.reason for p in e.value.problems}
    assert found["vendors.twilio.previous_auth_token"].startswith("is set without vendors.twilio.auth_token")
    assert found["vendors.twilio.previous_shared_key_secret"].startswith(
        "is the same as vendors.twilio.shared_key_secret")
    assert "old-auth-0123" not in str(found) and "same-key-0123" not in str(found)


def test_the_previous_secrets_are_secret_settings(tmp_path):
    from tracker.config.loader import load
    from tracker.config.redaction import secrets_of, vendor_secrets_of
    assert tw.SETTINGS["previous_auth_token"].secret and tw.SETTINGS["previous_shared_key_secret"].secret
    (tmp_path / "old").write_text("old-auth-token-0123\n")
    (tmp_path / "tracker.toml").write_text('[vendors.twilio]\nauth_token = "t"\n'
                                           'previous_auth_token_file = "old"\nshared_key_secret = "sk"\n'
                                           'previous_shared_key_secret = "old-shared-key-0123"\n')
    cfg = load(str(tmp_path / "tracker.toml"), env={})
    assert cfg.vendors["twilio"].settings["previous_auth_token"] == "old-auth-token-0123"
    assert {"old-auth-token-0123", "old-shared-key-0123"} <= set(vendor_secrets_of(cfg)) <= set(secrets_of(cfg))


def test_the_shared_key_secret_is_a_secret_setting(tmp_path):
    from tracker.config.loader import load
    from tracker.config.redaction import secrets_of
    assert tw.SETTINGS["shared_key_secret"].secret  # masked in output; may be given as *_file
    (tmp_path / "sk").write_text(SHARED + "\n")
    (tmp_path / "tracker.toml").write_text('[vendors.twilio]\nauth_token = "t"\nshared_key_secret_file = "sk"\n')
    cfg = load(str(tmp_path / "tracker.toml"), env={})
    assert cfg.vendors["twilio"].settings["shared_key_secret"] == SHARED
    assert SHARED in secrets_of(cfg)


# --- send responses -------------------------------------------------------------------------------


def test_golden_send_response():
    r = tw.parse_send(load("twilio", "message_created.json"), None, NOW)
    [o] = r.observations
    assert (o.vendor_ref, o.issued_ref, o.recipient, o.state, o.code) == (
        "SMXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "SMXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "14155552345",
        State.accepted, "queued")
    assert r.account_error is None and o.raw["messaging_service_sid"].startswith("MG")
    scheduled = tw.parse_send({"sid": SID, "status": "scheduled", "to": "+1"}, None, NOW)
    assert scheduled.observations[0].state == State.accepted


@pytest.mark.parametrize("request_", [
    {"To": "+14155552345", "SendAt": "2024-05-20T09:00:00Z", "MessagingServiceSid": "MG1"},
    "To=%2B14155552345&SendAt=2024-05-20T09%3A00%3A00Z&MessagingServiceSid=MG1"])
def test_a_scheduled_send_is_tracked_from_when_twilio_sends_it(request_):
    # SendAt may be 35 days ahead: from the submission, its window (48 h by default) ended it
    # `unknown` before Twilio sent it; and polls from then on were spent on nothing
    [o] = tw.parse_send({"sid": SID, "status": "scheduled", "to": "+14155552345"}, request_, NOW).observations
    send_at = datetime(2024, 5, 20, 9, tzinfo=timezone.utc)
    assert (o.state, o.scheduled_for, o.deadline) == (State.accepted, send_at, None)
    # queued (not scheduled), or a request that cannot be read: tracked from the submission
    [q] = tw.parse_send({"sid": SID, "status": "queued"}, request_, NOW).observations
    [b] = tw.parse_send({"sid": SID, "status": "scheduled"}, "[not a form]", NOW).observations
    assert q.scheduled_for is None and (b.scheduled_for, b.state) == (None, State.accepted)


def test_refused_sends():
    r = tw.parse_send(HttpResponse(400, {}, raw("twilio", "error_21211.json")), {"To": "5551234"}, NOW)
    [o] = r.observations
    assert (o.vendor_ref, o.recipient, o.state, o.code, o.failure.permanent) == ("", "5551234", State.rejected,
                                                                               "21211", True)
    auth = tw.parse_send(load("twilio", "error_20003.json"), None, NOW)
    assert auth.account_error == AccountError("20003", "Authenticate") and auth.observations == []
    odd = tw.parse_send({"code": 29999, "message": "new", "status": 400}, "To=%2B14155550100&Body=x", NOW)
    assert [(o.state, o.code, o.recipient) for o in odd.observations] == [(None, "29999", "14155550100")]
    with pytest.raises(ParseError):
        tw.parse_send({"hello": "world"}, None, NOW)


@pytest.mark.parametrize("answer", [
    HttpResponse(500, {}, b'{"code": 20500, "message": "Internal Server Error", "status": 500}'),
    HttpResponse(503, {}, b'{"code": 20503, "message": "Service unavailable", "status": 503}'),
    {"code": 20500, "message": "Internal Server Error", "status": 500},  # the body alone, as stored
    {"code": 20001, "message": "gateway", "status": 502},  # any 5xx
])
def test_a_send_call_the_api_failed_to_answer_is_unknown_not_rejected(answer):
    # Twilio's 20500 page: a send retried after a 500 may reach the customer twice: it may
    # have been sent, so `rejected` (final: "the vendor refused it") would be false.
    r = tw.parse_send(answer, {"To": "+14155550100"}, NOW)
    [o] = r.observations
    assert (o.vendor_ref, o.recipient, o.state, o.failure) == ("", "14155550100", State.unknown, None)
    assert r.account_error is not None and "whether Twilio sent the message is unknown" in r.account_error.reason


@pytest.mark.parametrize("answer", [
    HttpResponse(429, {}, b'{"code": 20429, "message": "Too Many Requests", "status": 429}'),
    {"code": 20429, "message": "Too Many Requests", "status": 429},
])
def test_a_send_call_refused_for_the_rate_is_rejected_not_for_ever_and_noted(answer):
    # "An API Request that receives an error 429 response is never processed and is always safe
    # to retry": refused, not permanent, and the row says the call (not the number) was refused.
    r = tw.parse_send(answer, {"To": "+14155550100"}, NOW)
    [o] = r.observations
    assert (o.state, o.code, o.failure.permanent) == (State.rejected, "20429", False)
    assert "request rate" in r.account_error.reason


# --- fuzzing ----------------------------------------------------------------------------------------

WORDS = sorted(tw.STATUSES) + sorted(tw.ERROR_CODES)
KEYS = ["sid", "status", "error_code", "error_message", "to", "date_updated", "code", "message",
        "MessageSid", "MessageStatus", "ErrorCode", "To"]
values = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text(max_size=10)
                      | st.sampled_from(WORDS),
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner,
                                                                                    max_size=6), max_leaves=12)


@FUZZ
@given(body=values, status=st.sampled_from([200, 201, 400, 401, 404, 429, 500]))
def test_parsers_raise_only_parse_errors(body, status):
    import orjson
    encoded = orjson.dumps(body)
    for call in (lambda: unwrapped(tw.parse_status)([HttpResponse(status, {}, encoded)], [MessageRef(SID)], NOW),
                 lambda: unwrapped(tw.parse_send)(HttpResponse(status, {}, encoded), None, NOW),
                 lambda: unwrapped(tw.parse_postback)("POST", "application/json", {}, encoded, NOW)):
        try:
            call()
        except ParseError:
            pass


def test_status_answer_naming_another_sid_is_malformed():
    # Another message's resource is not written to the one asked about: a malformed answer.
    asked = MessageRef("SM" + "a" * 32, "15550002222")
    with pytest.raises(ParseError, match="another message"):
        tw.parse_status([ok({"sid": "SM" + "b" * 32, "status": "delivered", "to": "+15550001111"})],
                        [asked], NOW)
    # The same SID in another case (normalized), or none: read as before.
    for body in ({"sid": "sm" + "A" * 32, "status": "delivered"}, {"status": "delivered"}):
        [o] = tw.parse_status([ok(body)], [asked], NOW).observations
        assert (o.vendor_ref, o.state) == ("SM" + "a" * 32, State.delivered)


def test_callbacks_with_nothing_to_verify_them_are_refused_by_check_config(tmp_path):
    # an API key for the status calls and a postback_token, but no auth_token (nor a shared key):
    # every callback would be answered 403, and `read` (only callbacks tell it) never heard
    from tracker.config import ConfigError
    from tracker.config.loader import load
    base = ('[vendors.twilio]\naccount_sid = "AC1"\napi_key_sid = "SK1"\napi_key_secret = "key-secret-0123"\n'
            'postback_token = "pb-token-0123456789"\n')
    (tmp_path / "tracker.toml").write_text(base)
    with pytest.raises(ConfigError) as e:
        load(str(tmp_path / "tracker.toml"), env={})
    [problem] = e.value.problems
    assert problem.key == "vendors.twilio.postback_token"
    assert problem.reason.startswith("is set, but nothing verifies twilio's callbacks: set "
                                     "vendors.twilio.auth_token or vendors.twilio.shared_key_secret")
    for more in ('auth_token = "auth-0123"\n', 'shared_key_secret = "shared-0123"\n'):
        (tmp_path / "tracker.toml").write_text(base + more)
        assert load(str(tmp_path / "tracker.toml"), env={}).vendors["twilio"].postback_token
    (tmp_path / "tracker.toml").write_text(base.replace('postback_token = "pb-token-0123456789"\n', ""))
    assert load(str(tmp_path / "tracker.toml"), env={}).vendors["twilio"].postback_token is None  # polled only
