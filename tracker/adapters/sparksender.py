"""Spark Sender (cp.sparksender.com): polled only, one status call per message, no postbacks.

Result codes travel in the JSON body (`status_code`, `sms_status`), not the HTTP status, and arrive
as int or string. Credentials travel as query parameters: a status HttpRequest must never be
logged whole. The status URL is not public: `cfg.status_url` overrides the default below and must
be confirmed with the vendor (docs/vendors.md).
"""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import parse_qsl

from tracker.adapters.base import (
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
    classify_http,
    guarded,
    id_text,
    json_value,
    load_json,
    recipient_digits,
    same_message,
)
from tracker.adapters.sparksender_codes import (
    SEND_ACCOUNT_CODES,
    SEND_OK,
    SEND_REJECT_CODES,
    STATUS_ACCOUNT_CODES,
    STATUS_CODES,
    UNKNOWN_ID_CODE,
)
from tracker.core.states import Failure, State

if TYPE_CHECKING:
    from tracker.config_types import VendorConfig

NAME = "sparksender"
POLLS = True
MAX_ANSWER_BYTES = 1024 * 1024  # one message's status
PUSHES = False
KEYED_BY_RECIPIENT = False
POSTBACK_CONTENT_TYPES: frozenset[str] = frozenset()  # no callbacks
SETTINGS: dict[str, Setting] = {}
CREDENTIALS = frozenset({"status_url", "user_id", "api_key"})

DEFAULT_BASE_URL = "https://cp.sparksender.com"
STATUS_PATH = "/api/getStatus/"  # not published by the vendor: confirm, or set cfg.status_url


def normalize_ref(ref: Any) -> str:
    """For matching only: trimmed. Ids are numeric strings ("14364") that the vendor may also
    send as JSON numbers, so an all-digit id loses its leading zeros ("014364" == "14364"); any
    other id is kept as is (case included). Status calls send the id as issued."""
    text = id_text(ref)
    if text is None:
        raise ParseError("sparksender: message id is not a string or integer")
    text = text.strip()
    if not text:
        raise ParseError("sparksender: empty message id")
    if text.isdigit() and text.isascii():
        text = text.lstrip("0") or "0"
    return text


def status_url(cfg: VendorConfig) -> str:
    if cfg.status_url:
        return cfg.status_url
    return (cfg.base_url or DEFAULT_BASE_URL).rstrip("/") + STATUS_PATH


def status_requests(
    cfg: VendorConfig, refs: list[MessageRef], token: str | None = None
) -> list[HttpRequest]:
    """One GET per message, its id as issued (verbatim); credentials in the query string."""
    if not cfg.user_id or not cfg.api_key:
        raise NotConfigured("sparksender: user_id and api_key must be configured")
    url = status_url(cfg)
    return [
        HttpRequest(
            "GET",
            url,
            params={"user_id": cfg.user_id, "api_key": cfg.api_key, "msg_id": str(r.vendor_ref)},
        )
        for r in refs
    ]


# Wrong credentials or a wrong status URL (it is not public): the operator must act.
HTTP_ACCOUNT_STATUSES = {s: f"status call answered HTTP {s}; check credentials and status_url"
                         for s in (401, 403, 404, 405, 410)}


@guarded("sparksender status")
def parse_status(responses: list[HttpResponse], refs: list[MessageRef], now: datetime) -> StatusResult:
    """`responses[i]` answers `refs[i]` (as built by status_requests). Callers may pass a single
    pair, so that one unreadable body does not fail its siblings."""
    if len(responses) != len(refs):
        raise ParseError("sparksender status: responses and refs differ in length")
    result = StatusResult()
    for resp, ref in zip(responses, refs):
        if classify_http(resp, now, result, account=HTTP_ACCOUNT_STATUSES) != READ:
            continue
        body = load_json(resp.body, "sparksender status")
        if not isinstance(body, dict):
            raise ParseError("sparksender status: body is not a JSON object")
        # (the documented answer names no message)
        same_message("sparksender status", body.get("msg_id", body.get("msgId")), ref.vendor_ref,
                     normalize_ref)
        code = as_code(body.get("sms_status"))
        if code is None:
            # Not documented, but the platform answers account problems with a send code.
            send_code = as_code(body.get("status_code"))
            if send_code in SEND_ACCOUNT_CODES:
                result.account_error = result.account_error or _send_account_error(send_code, body)
                continue
            raise ParseError("sparksender status: no readable sms_status")
        if code in STATUS_ACCOUNT_CODES:
            result.account_error = result.account_error or AccountError(code, STATUS_ACCOUNT_CODES[code])
            continue
        state, text, permanent = STATUS_CODES.get(code, (None, None, None))
        failure = Failure(code, text, permanent) if state is not None and state.is_failure else None
        result.observations.append(
            Observation(
                vendor=NAME,
                vendor_ref=normalize_ref(ref.vendor_ref),
                recipient=recipient_digits(ref.recipient),
                state=state,
                code=code,
                text=text,
                failure=failure,
                raw=body,
                unknown_id=code == UNKNOWN_ID_CODE,
            )
        )
    return result


@guarded("sparksender postback")
def parse_postback(
    method: str, content_type: str, query: Mapping[str, str], body: bytes, now: datetime
) -> list[Observation]:
    raise ParseError("Spark Sender sends no postbacks")


def _send_account_error(code: str, body: dict) -> AccountError:
    reason = SEND_ACCOUNT_CODES[code]
    detail = body.get("error")
    if isinstance(detail, str) and detail.strip():
        reason = f"{reason}: {detail.strip()[:200]}"
    return AccountError(code, reason)


def _items(value: Any, what: str) -> list[dict]:
    """The bulk reply nests arrays in arrays ([[{...}]]); accept flat arrays and one object too."""
    if value is None or isinstance(value, dict):
        value = [] if value is None else [value]
    if not isinstance(value, list):
        raise ParseError(f"sparksender send: {what} is not a list")
    out = [inner for item in value for inner in (item if isinstance(item, list) else [item])]
    if not all(isinstance(item, dict) for item in out):
        raise ParseError(f"sparksender send: {what} entry is not an object")
    return out


def _request_numbers(request: Any) -> list[tuple[str, str | None]]:
    """(number as written, its digits) for each number the send request names (a dict, an
    HttpRequest, JSON text or a query string): the single send's `recipient_contact_no`, else
    the bulk call's comma-separated `recipient_contacts`. Empty when it names none."""
    if isinstance(request, HttpRequest):
        request = dict(request.params or request.data or {})
    if isinstance(request, (bytes, bytearray, memoryview)):
        request = bytes(request).decode("utf-8", "replace")
    if isinstance(request, str):
        text = request.strip()
        request = (load_json(text, "sparksender send request") if text.startswith(("{", "["))
                   else dict(parse_qsl(text.split("?", 1)[-1])))
    if request is None:
        return []
    if not isinstance(request, dict):
        raise ParseError("sparksender send: request is not an object")
    numbers = request.get("recipient_contact_no", request.get("recipient_contacts"))
    if "recipient_contact_no" in request or numbers is None:
        numbers = [] if numbers is None else [numbers]
    elif not isinstance(numbers, list):
        numbers = str(numbers).split(",")
    return [(str(n).strip(), recipient_digits(n)) for n in numbers if str(n).strip()]


def _accepted(ref: Any, recipient: str | None, raw: Any, text: str | None = None) -> Observation:
    """204: the vendor took the message and gave it an id (docs/vendors.md: `accepted`)."""
    return Observation(vendor=NAME, vendor_ref=normalize_ref(ref), recipient=recipient, state=State.accepted,
                       code=SEND_OK, text=text, raw=raw, issued_ref=id_text(ref))


def _rejection(code: str, recipient: str | None, raw: Any, ref: Any = None) -> Observation:
    """A refused send; it normally carries no id (NO_REF then)."""
    try:
        vendor_ref, issued = normalize_ref(ref), id_text(ref)
    except ParseError:
        vendor_ref, issued = NO_REF, None
    code = code[:50]
    # An unknown code is recorded and counted as unmapped, never guessed.
    text, permanent = SEND_REJECT_CODES.get(code, (None, None))
    return Observation(vendor=NAME, vendor_ref=vendor_ref, recipient=recipient,
                       state=State.rejected if text else None, code=code, text=text,
                       failure=Failure(code, text, permanent) if text else None, raw=raw, issued_ref=issued)


@guarded("sparksender send")
def parse_send(response: Any, request: Any | None, now: datetime) -> SendResult:
    """Single send `{status_code, msg_id}` (recipient from the request's `recipient_contact_no`)
    or bulk `{success: [[{number, msgId}]], unsuccess: [[{number, status}]]}`; a bulk call refused
    whole (`{status_code}` alone) refuses each number of the request's `recipient_contacts`. Each
    message's raw payload is its own part: its bulk element, the single send's response, or
    {status_code, number, index} for a number of a bulk call refused whole."""
    body = json_value(response, "sparksender send")
    if not isinstance(body, dict):
        raise ParseError("sparksender send: response is not a JSON object")
    result = SendResult()
    if "success" in body or "unsuccess" in body:
        for item in _items(body.get("success"), "success"):
            ref = item.get("msgId", item.get("msg_id"))
            if ref is None:
                raise ParseError("sparksender send: success entry without msgId")
            result.observations.append(_accepted(ref, recipient_digits(item.get("number")), item))
        for item in _items(body.get("unsuccess"), "unsuccess"):
            code = as_code(item.get("status", item.get("status_code")))
            if code is None:
                raise ParseError("sparksender send: unsuccess entry without a status code")
            if code in SEND_ACCOUNT_CODES:
                result.account_error = result.account_error or _send_account_error(code, item)
                continue
            result.observations.append(_rejection(code, recipient_digits(item.get("number")), item))
        return result

    code = as_code(body.get("status_code"))
    if code is None:
        raise ParseError("sparksender send: no readable status_code")
    if code in SEND_ACCOUNT_CODES:
        result.account_error = _send_account_error(code, body)
        return result
    ref = body.get("msg_id", body.get("msgId"))
    numbers = _request_numbers(request)
    if code == SEND_OK or len(numbers) <= 1:
        recipient = numbers[0][1] if numbers else None
        if code != SEND_OK:
            result.observations.append(_rejection(code, recipient, body, ref))
        elif ref is None:
            raise ParseError("sparksender send: status 204 without msg_id")
        else:
            result.observations.append(_accepted(ref, recipient, body, "Successfully Sent the Message"))
        return result
    # A bulk call refused whole ({"status_code": 209} and the like): every number it named is
    # refused with that code; each raw payload is its own number and the shared words, bounded.
    detail = body.get("error")
    for i, (number, digits) in enumerate(numbers):
        raw: dict[str, Any] = {"status_code": code[:50], "number": number[:100], "index": i}
        if isinstance(detail, str) and detail.strip():
            raw["error"] = detail.strip()[:200]
        result.observations.append(_rejection(code, digits, raw))
    return result
