"""How Sparrow writes things, for tracker.adapters.sparrow: the batch id that, with a recipient,
names a message (normalize_ref, batch_of), the envelope every answer has (its result code and its
error words), the login answer (parse_login), and the numbers in a record or a compose request.
Nothing here makes an observation; tracker.adapters.sparrow re-exports what the contract asks for.

Sparrow writes some times without an offset ("2023-01-23 14:31:30"); they are read in NAIVE_TZ,
Nepal time, the offset its own API shows elsewhere ("+05:45"). Nepal has no daylight saving, so a
fixed offset is exact.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from tracker.adapters.base import (
    AccountError,
    HttpResponse,
    LoginResult,
    MessageRef,
    ParseError,
    as_code,
    classify_http,
    digits,
    guarded,
    is_transient,
    json_value,
    load_json,
    parse_time,
)

NAIVE_TZ = timezone(timedelta(hours=5, minutes=45), "NPT")  # assumption: see module docstring
TOKEN_LIFETIME = timedelta(hours=24)  # used when the login answer has no readable expires_on
RESULT_OK, RESULT_DRAFT, RESULT_DATA_ERROR = "00", "01", "11"

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


def batch_of(ref: MessageRef) -> str:
    """One compose call is one batch: its two report calls answer for every recipient."""
    return normalize_ref(ref.vendor_ref)


def batches(refs: list[MessageRef]) -> dict[str, list[MessageRef]]:
    """refs grouped by batch id, in order of first appearance (one call pair per batch)."""
    groups: dict[str, list[MessageRef]] = {}
    for r in refs:
        groups.setdefault(normalize_ref(r.vendor_ref), []).append(r)
    return groups


def error_words(body: Any) -> str:
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


def result_code(body: Any) -> str | None:
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
    result = result_code(body)
    data = body.get("data") if isinstance(body, dict) else None
    token = data.get("token") if isinstance(data, dict) else None
    if 200 <= s < 300 and result in (None, RESULT_OK) and isinstance(token, str) and token.strip():
        login.token = token.strip()
        login.expires_on = parse_time(data.get("expires_on"), NAIVE_TZ) or now + TOKEN_LIFETIME
        return login
    if 200 <= s < 300 and result in (None, RESULT_OK):
        raise ParseError("sparrow login: answer has no token")
    login.account_error = AccountError(result or f"http_{s}", error_words(body) or "login refused")
    return login


def record(rec: Any, what: str) -> tuple[str, Any]:
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


def request_recipients(request: Any) -> list[str]:
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


def invalid_recipients(data: dict) -> dict[str, Any]:
    """`invalid_recipients`: digits -> the vendor's own record (a number or an object), each once."""
    records = data.get("invalid_recipients") or []
    if not isinstance(records, list):
        raise ParseError("sparrow send: invalid_recipients is not a list")
    out: dict[str, Any] = {}
    for rec in records:
        number = record(rec, "send")[0]
        if number and number not in out:
            out[number] = rec
    return out
