"""Twilio Programmable Messaging (api.twilio.com): polled per message (the Message resource) and
pushed as status callbacks to the `StatusCallback` URL given with each send, each signed with
`X-Twilio-Signature`. Built from Twilio's public API documentation (docs/vendors.md#sources).

- Status: `GET {base}/2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json`, HTTP basic auth
  (account_sid, auth_token; or an API key: api_key_sid, api_key_secret). The answer is the Message resource (`sid`, `status`, `error_code`,
  `error_message`, `to`, `date_updated`, ...); 404 (code 20404) names no message we know.
- Status callbacks: form-encoded `MessageSid`, `MessageStatus` (also `SmsSid`, `SmsStatus`),
  `ErrorCode`, `To`, `From`, `AccountSid`, `ApiVersion`, and on delivered / undelivered
  `RawDlrDoneDate` (YYMMDDhhmm, the carrier's, without a zone: kept in `raw`, not read as a time).
- Signature: HMAC-SHA1 with the auth token over the URL Twilio requested and the POST
  parameters; signed with a SharedKey (header `X-Twilio-Webhooks-Signature-Settings`), HMAC-SHA1
  or HMAC-SHA256 with the shared key's secret (tracker.adapters.twilio_signature, re-exported
  here).
- Send response: the created Message resource (`sid`, `status` queued / accepted / scheduled), or
  an error object (`code`, `message`, `status`) when the API refused the request.

The status vocabulary maps by `status`, refined by `ErrorCode` where the message did not get
through (the table below, and docs/vendors.md). `undelivered` and `failed` are final: Twilio
does not try again.
"""
from __future__ import annotations

import base64
import re
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import parse_qsl, quote

from tracker.adapters.base import (
    LOOKUP,
    NO_REF,
    READ,
    AccountError,
    HttpRequest,
    HttpResponse,
    MessageRef,
    NotConfigured,
    Observation,
    ParseError,
    SendResult,
    Setting,
    StatusResult,
    as_code,
    base_url,
    classify_http,
    error_text,
    guarded,
    http_date,
    id_text,
    json_object,
    json_value,
    load_json,
    lookup_failure,
    paired,
    parse_time,
    recipient_digits,
    ref_text,
    same_message,
    text_of,
)
from tracker.adapters.twilio_codes import (  # noqa: F401 - re-exported (tests, docs)
    ACCOUNT_CODES, CALL_REFUSED_CODES, ERROR_CODES, NOT_THROUGH, STATUSES, UNSETTLED_CODES)
from tracker.adapters.twilio_signature import (  # noqa: F401 - re-exported; verify_postback: SignsPostbacks
    SIGNATURE_HEADER, SIGNATURE_SETTINGS_HEADER, signature, signed_url, verify_postback)
from tracker.core.states import Failure, State

if TYPE_CHECKING:
    from tracker.config_types import VendorConfig

NAME = "twilio"
POLLS = True
MAX_ANSWER_BYTES = 1024 * 1024  # one message's resource
PUSHES = True
KEYED_BY_RECIPIENT = False
POSTBACK_CONTENT_TYPES = frozenset({"application/x-www-form-urlencoded"})  # status callbacks
CREDENTIALS: frozenset[str] = frozenset()  # its own, in SETTINGS
# What verifies a callback (SignsPostbacks): with a postback_token and neither of these, every
# callback would be refused 403 (the status calls may use an API key instead of the auth token):
# check-config refuses that.
SIGNING_KEYS = ("auth_token", "shared_key_secret")
SETTINGS = {
    "account_sid": Setting("the account's SID (AC...): the status call's path and its user"),
    "auth_token": Setting("the account's auth token: the key of every callback's signature, and "
                          "the status call's password unless an API key is set", secret=True),
    "api_key_sid": Setting("an API key's SID (SK...), with api_key_secret: the status calls' "
                           "user instead of the account (revocable, not the master token)"),
    "api_key_secret": Setting("that API key's secret: the status calls' password", secret=True),
    "shared_key_secret": Setting("the secret of the SharedKey that signs callbacks where a Twilio "
                                 "Webhook Rule says so (X-Twilio-Webhooks-Signature-Settings); "
                                 "unset: such callbacks are refused", secret=True),
    "previous_auth_token": Setting("while the auth token is rotated (docs/vendors.md): the one "
                                   "being replaced, still accepted on callbacks' signatures",
                                   secret=True),
    "previous_shared_key_secret": Setting("while the shared key is rotated: the one being "
                                          "replaced, still accepted on callbacks' signatures",
                                          secret=True),
    "public_base_url": Setting("the public URL callbacks are addressed to, when a proxy stands "
                               "in front of the tracker (signatures are computed over it)", url=True),
}

DEFAULT_BASE_URL = "https://api.twilio.com"
API_VERSION = "2010-04-01"

HTTP_ACCOUNT_STATUSES = {401: "authentication failed (check account_sid and auth_token, or the API key)",
                         403: "forbidden"}

_SID = re.compile(r"[A-Za-z]{2}[0-9a-fA-F]{32}")


def normalize_ref(ref: Any) -> str:
    """For matching only: trimmed; a SID (two letters and 32 hex digits, `SM...` / `MM...`) with
    its prefix upper-cased and its hex lower-cased, as Twilio writes them, so that a copy folded
    to one case names the same message. Status calls send the SID as issued."""
    text = ref_text(ref, "twilio", "message sid")
    if _SID.fullmatch(text):
        return text[:2].upper() + text[2:].lower()
    return text


def _credentials(cfg: VendorConfig) -> tuple[str, str, str]:
    """(the account in the path, user, password) of the status calls: an API key and its secret
    where set (what Twilio advises for production: revocable, and not the account's master
    token), else the account SID and its auth token."""
    s = cfg.settings
    sid, key, secret, token = (s.get(k) for k in ("account_sid", "api_key_sid", "api_key_secret", "auth_token"))
    if not sid:
        raise NotConfigured("twilio: account_sid must be configured")
    if bool(key) != bool(secret):
        raise NotConfigured("twilio: api_key_sid and api_key_secret go together")
    if key:
        return sid, key, secret
    if not token:
        raise NotConfigured("twilio: auth_token, or api_key_sid and api_key_secret, must be configured")
    return sid, sid, token


def status_requests(
    cfg: VendorConfig, refs: list[MessageRef], token: str | None = None
) -> list[HttpRequest]:
    """One GET of the Message resource per message, its SID as issued (encoded for the path)."""
    sid, user, password = _credentials(cfg)
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    headers = {"Authorization": f"Basic {basic}", "Accept": "application/json"}
    base = base_url(cfg, DEFAULT_BASE_URL)
    account = quote(sid, safe="")
    return [HttpRequest("GET", f"{base}/{API_VERSION}/Accounts/{account}/Messages/"
                               f"{quote(str(r.vendor_ref), safe='')}.json", headers=headers)
            for r in refs]


def _time(value: Any) -> datetime | None:
    """An RFC 2822 time of the API ("Thu, 30 Jul 2015 20:12:33 +0000"), or None."""
    if not isinstance(value, str) or not 10 <= len(value) <= 64:
        return None
    at = http_date(value)
    return at if at is not None and at.tzinfo is not None else None


def _observation(*, ref: str, recipient: str | None, status: Any, error_code: Any,
                 error_text: str | None, event_at: datetime | None, raw: Any,
                 issued_ref: str | None = None) -> Observation:
    """What a status (with its error code, if any) says about one message."""
    if not isinstance(status, str) or not status.strip():
        raise ParseError("twilio: no status")
    word = status.strip().lower()[:50]
    code = as_code(error_code)
    code = code[:50] if code is not None and code != "0" else None
    state, text = STATUSES.get(word, (None, None))
    failure, settled = None, False
    if word in NOT_THROUGH:
        known = ERROR_CODES.get(code) if code else None
        if known is not None:
            state, text, permanent = known
            failure = Failure(code, text, permanent)
        elif code and word in ("undelivered", "failed"):  # a detailed code we do not know
            state, text, settled = None, error_text or text, True  # final at Twilio all the same
        else:
            text = error_text or text
            failure = Failure(code or word, text, False if word == "canceled" else None)
    elif state is None:
        text = error_text or text
    # The detailed code: the ErrorCode where the message did not get through, else the status.
    return Observation(vendor=NAME, vendor_ref=normalize_ref(ref), recipient=recipient, state=state,
                       code=code if code and word in NOT_THROUGH else word, text=text,
                       event_at=event_at, failure=failure, raw=raw, issued_ref=issued_ref,
                       settled=settled)


def _message(body: Any, ref: str | None, recipient: str | None = None) -> Observation:
    """The Message resource as an observation (a poll's answer, or a send response)."""
    if not isinstance(body, dict):
        raise ParseError("twilio: message is not a JSON object")
    sid = body.get("sid")
    if sid is None and ref is None:
        raise ParseError("twilio: message without sid")
    return _observation(ref=ref if ref is not None else sid,
                        recipient=recipient_digits(body.get("to")) or recipient_digits(recipient),
                        status=body.get("status"), error_code=body.get("error_code"),
                        error_text=text_of(body.get("error_message")) or None,
                        event_at=_time(body.get("date_updated")), raw=body,
                        issued_ref=id_text(sid) if ref is None else None)


def _error_text(resp: HttpResponse) -> str:
    return error_text(resp, "message")


@guarded("twilio status")
def parse_status(responses: list[HttpResponse], refs: list[MessageRef], now: datetime) -> StatusResult:
    """`responses[i]` answers `refs[i]`. A 404 is a per-message lookup failure (code "404")."""
    result = StatusResult()
    for resp, ref in paired(responses, refs, "twilio status"):
        answer = classify_http(resp, now, result, account=HTTP_ACCOUNT_STATUSES, lookup=(404,),
                               reason=_error_text)
        if answer == LOOKUP:
            result.observations.append(lookup_failure(
                NAME, normalize_ref(ref.vendor_ref), recipient_digits(ref.recipient), resp.status,
                _error_text(resp) or "message not found"))
        if answer != READ:
            continue
        body = load_json(resp.body, "twilio status")
        same_message("twilio status", body.get("sid") if isinstance(body, dict) else None,
                     ref.vendor_ref, normalize_ref)
        result.observations.append(_message(body, ref.vendor_ref, ref.recipient))
    return result


def _form(content_type: str, query: Mapping[str, str], body: bytes) -> dict[str, str]:
    raw = bytes(body or b"")
    if not raw.strip():
        return dict(query)
    if raw.lstrip()[:1] in (b"{", b"["):
        fields = load_json(raw, "twilio postback")
        if not isinstance(fields, dict):
            raise ParseError("twilio postback: body is not an object")
        return {str(k): v for k, v in fields.items()}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("twilio postback: form body is not UTF-8") from None
    return dict(parse_qsl(text, keep_blank_values=True))


@guarded("twilio postback")
def parse_postback(
    method: str, content_type: str, query: Mapping[str, str], body: bytes, now: datetime
) -> list[Observation]:
    """One status callback: one observation. Its fields are the form's (or the query's)."""
    fields = _form(content_type, query, body)
    sid = fields.get("MessageSid") or fields.get("SmsSid")
    if not isinstance(sid, str) or not sid.strip():
        raise ParseError("twilio postback: no MessageSid")
    status = fields.get("MessageStatus") or fields.get("SmsStatus")
    return [_observation(ref=sid, recipient=recipient_digits(fields.get("To")), status=status,
                         error_code=fields.get("ErrorCode"),
                         error_text=text_of(fields.get("ErrorMessage")) or None, event_at=None, raw=fields)]


# --- send responses -------------------------------------------------------------------------------


def _request_fields(request: Any) -> dict | None:
    """The send request's fields: a form dict, JSON, or the form body as text."""
    if request is None:
        return None
    if isinstance(request, HttpRequest):
        request = dict(request.data or request.params or {})
    if isinstance(request, (bytes, bytearray, memoryview)):
        request = bytes(request).decode("utf-8", "replace")
    if isinstance(request, str):
        text = request.strip()
        request = (json_value(text, "twilio send request") if text.startswith("{")
                   else dict(parse_qsl(text)))
    if not isinstance(request, dict):
        raise ParseError("twilio send: request is not an object")
    return request


def _request_to(request: Any) -> str | None:
    """`To` of the send request."""
    fields = _request_fields(request)
    return recipient_digits(fields.get("To", fields.get("to"))) if fields else None


def _send_at(request: Any) -> datetime | None:
    """`SendAt` of a scheduled send (ISO 8601, up to 35 days ahead), or None: a request that
    cannot be read costs the message its later window, never its tracking."""
    try:
        fields = _request_fields(request)
    except ParseError:
        return None
    return parse_time(fields.get("SendAt", fields.get("send_at"))) if fields else None


@guarded("twilio send")
def parse_send(response: Any, request: Any | None, now: datetime) -> SendResult:
    """The created Message resource: one message in its first status (queued, accepted,
    scheduled; or already failed with its error code). An error object (`code`, `message`):
    the request was refused: an account problem (ACCOUNT_CODES, 401/403) or one message
    rejected without a SID (recipient from the request's `To`)."""
    status = response.status if isinstance(response, HttpResponse) else None
    body = json_object(response, "twilio send", "response")
    result = SendResult()
    if body.get("sid") is not None:
        o = _message(body, None)
        if body.get("status") == "scheduled" and (send_at := _send_at(request)) is not None:
            # Twilio sends it then: its tracking window and first poll start then (from the
            # submission, a message scheduled days ahead ended `unknown` before it was sent)
            o = replace(o, scheduled_for=send_at)
        result.observations.append(o)
        return result
    code = as_code(body.get("code"))
    if code is None:
        raise ParseError("twilio send: response has neither sid nor an error code")
    code = code[:50]
    text = text_of(body.get("message")) or None
    http = as_code(body.get("status")) or (str(status) if status else None)
    if code in ACCOUNT_CODES or http in ("401", "403"):
        result.account_error = AccountError(code, text or ACCOUNT_CODES.get(code, "account error"))
        return result
    recipient = recipient_digits(body.get("to")) or _request_to(request)
    unsettled = code in UNSETTLED_CODES or (http or "").startswith("5")
    if unsettled or code in CALL_REFUSED_CODES or http == "429":
        # The call failed, not the message: the row's note says so, besides the message.
        result.account_error = AccountError(code, _call_failure(code, text, unsettled))
    if unsettled:  # Twilio may have sent it (20500: "possible ... multiple messages")
        state, reason, permanent = State.unknown, text or "the API failed to answer", None
    elif code in CALL_REFUSED_CODES or http == "429":  # "never processed": refused, not for ever
        state, reason, permanent = State.rejected, text or CALL_REFUSED_CODES.get(code, "refused"), False
    else:
        known = ERROR_CODES.get(code)
        state, reason, permanent = known if known else (None, text, None)
    failed = state is not None and state is not State.unknown  # `unknown` is no failure report
    result.observations.append(Observation(
        vendor=NAME, vendor_ref=NO_REF, recipient=recipient, state=state, code=code,
        text=text or reason, failure=Failure(code, text or reason, permanent) if failed else None,
        raw=body))
    return result


def _call_failure(code: str, text: str | None, unsettled: bool) -> str:
    """The row's note for a send call that failed as a call (a 5xx, a 429)."""
    words = repr(text) if text else f"code {code}"
    if unsettled:
        return (f"the API failed to answer the send call ({words}): whether Twilio sent the "
                "message is unknown, so it is kept `unknown`, never polled (no SID was given)")
    return (f"the API refused the send call for the account's request rate ({words}): Twilio "
            "never processed it, so it is `rejected` (not permanent); sending it again is safe")
