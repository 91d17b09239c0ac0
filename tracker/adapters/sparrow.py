"""Sparrow SMS international (ent-api.sparrowsms.com): one compose call makes a batch (a uuid)
for many recipients, so a message is (batch_id, recipient). Polled per batch (two report calls),
pushed as DLR callbacks. Every call but the login carries `Authorization: Bearer <JWT>`.

Sparrow writes some times without an offset ("2023-01-23 14:31:30"); they are read in NAIVE_TZ,
Nepal time, the offset its own API shows elsewhere ("+05:45"). Nepal has no daylight saving, so a
fixed offset is exact.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import quote

from tracker.adapters.base import (
    LOOKUP,
    MAX_REF_LEN,
    NO_REF,
    READ,
    AccountError,
    HttpRequest,
    HttpResponse,
    LoginResult,
    MessageRef,
    NotConfigured,
    Observation,
    ParseError,
    SendResult,
    Setting,
    StatusResult,
    as_code,
    classify_http,
    digits,
    guarded,
    is_transient,
    json_value,
    load_json,
    parse_time,
)
from tracker.core.states import Failure, State

if TYPE_CHECKING:
    from tracker.config_types import VendorConfig

NAME = "sparrow"
POLLS = True
PUSHES = True
KEYED_BY_RECIPIENT = True
POSTBACK_CONTENT_TYPES = frozenset({"application/json"})  # DLR callbacks
SETTINGS: dict[str, Setting] = {}  # api_token, partner_token: VendorConfig fields

DEFAULT_BASE_URL = "https://ent-api.sparrowsms.com"
NAIVE_TZ = timezone(timedelta(hours=5, minutes=45), "NPT")  # assumption: see module docstring
TOKEN_LIFETIME = timedelta(hours=24)  # used when the login answer has no readable expires_on

# Report lists (compose/report/:uuid/delivery and /failed) -> (state, permanent).
REPORT_LISTS: dict[str, tuple[State, bool | None]] = {
    "delivered": (State.delivered, None),
    "seen": (State.read, None),
    "rejected": (State.rejected, True),  # "rejected due to invalid / unsubscribed numbers"
    "expired": (State.expired, False),
}
# Instant DLR callback status -> (state, vendor word, permanent).
DLR_STATUS: dict[str, tuple[State, str, bool | None]] = {
    "00": (State.delivered, "delivered", None),
    "01": (State.read, "seen", None),
    "02": (State.expired, "expired", False),
}
CODE_INVALID_RECIPIENT = "invalid_recipient"
CODE_BATCH_REJECTED = "rejected"  # batch_complete rejected_numbers
RESULT_OK, RESULT_DRAFT, RESULT_DATA_ERROR = "00", "01", "11"

HTTP_ACCOUNT_STATUSES = {401: "bearer token rejected (log in again)", 403: "forbidden"}

_NUMBER_KEYS = ("to", "number", "recipient", "mobile")
_TIME_KEYS = ("ts", "timestamp", "time")


def normalize_ref(ref: Any) -> str:
    """A batch id is a uuid: canonical lower-case hyphenated form (uuids are case-insensitive,
    and braces / "urn:uuid:" / unhyphenated spellings name the same batch). Anything that is
    not a uuid is trimmed and lower-cased."""
    if not isinstance(ref, str):
        raise ParseError("sparrow: batch id is not a string")
    text = ref.strip()
    if not text:
        raise ParseError("sparrow: empty batch id")
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return text.lower()


def _base(cfg: VendorConfig) -> str:
    return (cfg.base_url or DEFAULT_BASE_URL).rstrip("/")


def login_request(cfg: VendorConfig) -> HttpRequest:
    if not cfg.api_token or not cfg.partner_token:
        raise NotConfigured("sparrow: api_token and partner_token must be configured")
    return HttpRequest(
        "POST",
        f"{_base(cfg)}/v1/autho/apitoken/login/",
        json={"api_token": cfg.api_token, "partner_token": cfg.partner_token},
    )


def _error_text(body: Any) -> str:
    """The vendor's words for an error, wherever it put them (data.errors, message, ...)."""
    if not isinstance(body, dict):
        return ""
    places = [body.get("data"), body]
    for place in places:
        if not isinstance(place, dict):
            continue
        for key in ("errors", "error", "message", "detail", "msg"):
            value = place.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()[:200]
            if isinstance(value, (list, dict)) and value:
                parts = value.values() if isinstance(value, dict) else value
                words = []
                for part in parts:
                    if isinstance(part, str):
                        words.append(part)
                    elif isinstance(part, list):
                        words.extend(p for p in part if isinstance(p, str))
                if words:
                    return "; ".join(w.strip() for w in words)[:200]
    return ""


def _result(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    code = as_code(body.get("result"))
    return code.zfill(2) if code is not None and code.isdigit() else code


@guarded("sparrow login")
def parse_login(resp: HttpResponse, now: datetime) -> LoginResult:
    """The token and its expires_on, or an account error ("Invalid API Token", "Account is
    Expired", ...), or (408/425/429/5xx) a transient error with its Retry-After."""
    s = resp.status
    login = LoginResult()
    if is_transient(s):
        classify_http(resp, now, login)
        return login
    try:
        body = load_json(resp.body, "sparrow login")
    except ParseError:
        if 200 <= s < 300:
            raise
        login.account_error = AccountError(f"http_{s}", "login refused")
        return login
    result = _result(body)
    data = body.get("data") if isinstance(body, dict) else None
    token = data.get("token") if isinstance(data, dict) else None
    if 200 <= s < 300 and result in (None, RESULT_OK) and isinstance(token, str) and token.strip():
        login.token = token.strip()
        login.expires_on = parse_time(data.get("expires_on"), NAIVE_TZ) or now + TOKEN_LIFETIME
        return login
    if 200 <= s < 300 and result in (None, RESULT_OK):
        raise ParseError("sparrow login: answer has no token")
    login.account_error = AccountError(result or f"http_{s}", _error_text(body) or "login refused")
    return login


def batch_of(ref: MessageRef) -> str:
    """One compose call is one batch: its two report calls answer for every recipient."""
    return normalize_ref(ref.vendor_ref)


def _batches(refs: list[MessageRef]) -> dict[str, list[MessageRef]]:
    """refs grouped by batch id, in order of first appearance (one call pair per batch)."""
    groups: dict[str, list[MessageRef]] = {}
    for r in refs:
        groups.setdefault(normalize_ref(r.vendor_ref), []).append(r)
    return groups


def status_requests(
    cfg: VendorConfig, refs: list[MessageRef], token: str | None = None
) -> list[HttpRequest]:
    """Two GETs per batch (delivery, then failed); refs normally share one batch id. Refs are
    grouped by their normalized batch id; the URL carries the group's first id verbatim."""
    if not token:
        raise ValueError("sparrow: a login token is required (login_request / parse_login)")
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    out = []
    for group in _batches(refs).values():
        batch = quote(str(group[0].vendor_ref), safe="")  # as issued: normalized for grouping only
        for report in ("delivery", "failed"):
            out.append(HttpRequest("GET", f"{_base(cfg)}/v1/intlsms/compose/report/{batch}/{report}/", headers=headers))
    return out


def _record(rec: Any, what: str) -> tuple[str, Any]:
    """(digits, raw timestamp) of one record: a bare number or an object carrying one. A number
    with no digits at all ("N/A": the vendor echoes invalid recipients as given) names no
    tracked message: its digits are "" and callers skip it rather than lose the whole answer."""
    if isinstance(rec, (str, int)) and not isinstance(rec, bool):
        number, at = digits(rec), None
    elif isinstance(rec, dict):
        value = next((rec[k] for k in _NUMBER_KEYS if k in rec), None)
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ParseError(f"sparrow {what}: record without a number")
        number = digits(value)
        at = next((rec[k] for k in _TIME_KEYS if k in rec), None)
    else:
        raise ParseError(f"sparrow {what}: record is neither a number nor an object")
    return number, at


@guarded("sparrow status")
def parse_status(responses: list[HttpResponse], refs: list[MessageRef], now: datetime) -> StatusResult:
    """Answers to status_requests(refs): per batch, the delivery report then the failed report.
    A recipient named in neither gets no observation; only the refs asked about are reported."""
    groups = _batches(refs)
    if len(responses) != 2 * len(groups):
        raise ParseError("sparrow status: expected two responses per batch")
    result = StatusResult()
    for i, (batch, batch_refs) in enumerate(groups.items()):
        wanted = {digits(r.recipient): r for r in batch_refs if r.recipient and digits(r.recipient)}
        missing_reported = False
        for resp in responses[2 * i: 2 * i + 2]:
            answer = classify_http(resp, now, result, account=HTTP_ACCOUNT_STATUSES, lookup=(404,))
            if answer == LOOKUP and not missing_reported:  # the batch is unknown: once per message
                missing_reported = True
                for number in wanted:
                    result.observations.append(Observation(
                        vendor=NAME, vendor_ref=batch, recipient=number, state=None, code="404",
                        text="batch not found"))
            if answer != READ:
                continue
            body = load_json(resp.body, "sparrow status")
            if not isinstance(body, dict):
                raise ParseError("sparrow status: body is not a JSON object")
            code = _result(body)
            if code not in (None, RESULT_OK):
                result.transient_error = result.transient_error or f"report result {code[:20]}"
                continue
            data = body.get("data")
            records = data.get("records") if isinstance(data, dict) else None
            if not isinstance(records, dict):
                raise ParseError("sparrow status: no data.records object")
            for key, recs in records.items():
                if recs is None:
                    continue
                if not isinstance(recs, list):
                    raise ParseError("sparrow status: a records entry is not a list")
                mapped = REPORT_LISTS.get(str(key).strip().lower())
                for rec in recs:
                    number, at = _record(rec, "status")
                    if number not in wanted:
                        continue
                    code = str(key)[:50]
                    state, failure = None, None
                    if mapped is not None:
                        state, permanent = mapped
                        if state.is_failure:
                            failure = Failure(code, code, permanent)
                    result.observations.append(Observation(
                        vendor=NAME, vendor_ref=batch, recipient=number, state=state, code=code, text=code,
                        event_at=parse_time(at, NAIVE_TZ), failure=failure, raw=rec))
    return result


@guarded("sparrow postback")
def parse_postback(
    method: str, content_type: str, query: Mapping[str, str], body: bytes, now: datetime
) -> list[Observation]:
    """DLR callbacks: `instant` (dlr_data: list of {ts, to, id, status}) and `batch_complete`
    (dlr_data: {uuid, rejected_numbers, counts}; only rejected numbers say anything per message)."""
    payload = load_json(bytes(body or b""), "sparrow postback")
    if not isinstance(payload, dict):
        raise ParseError("sparrow postback: body is not a JSON object")
    dlr_type = payload.get("dlr_type")
    data = payload.get("dlr_data")
    if dlr_type is None:
        dlr_type = "batch_complete" if isinstance(data, dict) and "uuid" in data else "instant"
    if not isinstance(dlr_type, str):
        raise ParseError("sparrow postback: dlr_type is not a string")
    kind = dlr_type.strip().lower()
    out: list[Observation] = []
    if kind == "instant":
        items = [data] if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise ParseError("sparrow postback: dlr_data is not a list")
        for item in items:
            if not isinstance(item, dict):
                raise ParseError("sparrow postback: dlr_data entry is not an object")
            batch = item.get("id", item.get("uuid"))
            if batch is None:
                raise ParseError("sparrow postback: dlr_data entry without id")
            number, at = _record(item, "postback")
            if not number:
                continue
            code = as_code(item.get("status"))
            if code is None:
                raise ParseError("sparrow postback: dlr_data entry without status")
            code = code.zfill(2) if code.isdigit() else code[:50]
            state, text, permanent = DLR_STATUS.get(code, (None, None, None))
            failure = Failure(code, text, permanent) if state is not None and state.is_failure else None
            out.append(Observation(
                vendor=NAME, vendor_ref=normalize_ref(batch), recipient=number, state=state, code=code,
                text=text, event_at=parse_time(at, NAIVE_TZ), failure=failure, raw=item))
        return out
    if kind == "batch_complete":
        if not isinstance(data, dict):
            raise ParseError("sparrow postback: batch_complete dlr_data is not an object")
        batch = data.get("uuid", data.get("id"))
        if batch is None:
            raise ParseError("sparrow postback: batch_complete without uuid")
        ref = normalize_ref(batch)
        rejected = data.get("rejected_numbers") or []
        if not isinstance(rejected, list):
            raise ParseError("sparrow postback: rejected_numbers is not a list")
        for rec in rejected:
            number, at = _record(rec, "postback")
            if not number:
                continue
            text = "rejected (batch complete)"
            out.append(Observation(
                vendor=NAME, vendor_ref=ref, recipient=number, state=State.rejected, code=CODE_BATCH_REJECTED,
                text=text, event_at=parse_time(at, NAIVE_TZ), failure=Failure(CODE_BATCH_REJECTED, text, True),
                raw=rec))
        return out
    raise ParseError("sparrow postback: unknown dlr_type")


def _recipients(request: Any) -> list[str]:
    """The compose request's recipients as digits, in order, each once (deduplicated through a
    dict: a campaign-sized list costs linear time)."""
    if request is None:
        raise ParseError("sparrow send: the compose request is needed to name the recipients")
    req = json_value(request, "sparrow send request")
    session = req.get("session") if isinstance(req, dict) else None
    numbers = session.get("recipients") if isinstance(session, dict) else None
    if isinstance(numbers, str):
        numbers = numbers.split(",")
    if not isinstance(numbers, list):
        raise ParseError("sparrow send: request has no session.recipients list")
    out: dict[str, None] = {}
    for n in numbers:
        if isinstance(n, bool) or not isinstance(n, (str, int)):
            raise ParseError("sparrow send: a recipient is not a number")
        out[digits(n)] = None  # duplicates are one message
    out.pop("", None)  # numbers with no digits cannot be messages
    return list(out)


def _invalid(data: dict) -> dict[str, Any]:
    """`invalid_recipients`: digits -> the vendor's own record (a number or an object), each once."""
    records = data.get("invalid_recipients") or []
    if not isinstance(records, list):
        raise ParseError("sparrow send: invalid_recipients is not a list")
    out: dict[str, Any] = {}
    for rec in records:
        number = _record(rec, "send")[0]
        if number and number not in out:
            out[number] = rec
    return out


@guarded("sparrow send")
def parse_send(response: Any, request: Any | None, now: datetime) -> SendResult:
    """Compose response + request. 00: one `accepted` per recipient, `invalid_recipients`
    rejected. 01 DRAFT (partial success, billing error): an AccountError for the operator, and
    the messages kept as `submitted` (the batch exists; its reports will tell which went out).
    11 DATA_ERROR: every recipient rejected with the vendor's error text.

    Each message's raw payload is its own part: {batch_id (as issued), result, recipient} or, for
    an invalid one, {batch_id, result, invalid_recipient: the vendor's record}. Linear in the
    size of the response and the request."""
    status = response.status if isinstance(response, HttpResponse) else None
    body = json_value(response, "sparrow send")
    if not isinstance(body, dict):
        raise ParseError("sparrow send: response is not a JSON object")
    result = SendResult()
    if status in (401, 403):
        result.account_error = AccountError(str(status), _error_text(body) or "authentication failed")
        return result
    code = _result(body)
    if code is None:
        raise ParseError("sparrow send: response has no result code")
    code = code[:50]
    data = body.get("data") if isinstance(body.get("data"), dict) else {}
    recipients = _recipients(request)
    batch_id = data.get("batch_id")
    issued = batch_id if isinstance(batch_id, str) and batch_id.strip() else None
    if issued is not None and len(issued) > MAX_REF_LEN:  # copied into every message: refused once
        raise ParseError(f"sparrow send: batch_id is longer than {MAX_REF_LEN} characters")
    ref = normalize_ref(issued) if issued is not None else NO_REF
    invalid = _invalid(data)
    message = _error_text(body) or None
    obs = result.observations

    def add(number: str, state: State | None, text: str | None, failure: Failure | None,
            c: str, own: dict[str, Any]) -> None:
        obs.append(Observation(vendor=NAME, vendor_ref=ref, recipient=number, state=state, code=c,
                               text=text, failure=failure, issued_ref=issued,
                               raw={"batch_id": issued, "result": code, **own}))

    def add_listed(state: State | None, text: str | None, failure: Failure | None = None) -> None:
        for number in recipients:
            if number not in invalid:
                add(number, state, text, failure, code, {"recipient": number})

    def reject_invalid() -> None:
        text = "invalid recipient"
        failure = Failure(CODE_INVALID_RECIPIENT, text, True)
        for number, rec in invalid.items():
            add(number, State.rejected, text, failure, CODE_INVALID_RECIPIENT, {"invalid_recipient": rec})

    if code == RESULT_OK:
        if ref == NO_REF:
            raise ParseError("sparrow send: result 00 without batch_id")
        add_listed(State.accepted, message)
        reject_invalid()
    elif code == RESULT_DRAFT:
        text = "DRAFT: partial success (billing error)" + (f": {message}" if message else "")
        result.account_error = AccountError(code, text)
        if ref != NO_REF:  # without a batch nothing went out: an account problem only
            add_listed(State.submitted, text)
            reject_invalid()
    elif code == RESULT_DATA_ERROR:
        text = message or "DATA_ERROR"
        if any(w in text.lower() for w in ("billing", "credit", "balance")):
            # No funds is the account's problem, not the messages': like Spark Sender 208 or
            # engageSPARK 402, no message is made and the intake refuses the row with the reason.
            result.account_error = AccountError(code, text)
            return result
        add_listed(State.rejected, text, Failure(code, text, None))
        reject_invalid()
    else:  # an unknown result: recorded per recipient, never guessed
        for number in recipients:
            add(number, None, message, None, code, {"recipient": number})
    return result
