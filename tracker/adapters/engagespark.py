"""engageSPARK (api.engagespark.com): polled per message (or through the list endpoint) and pushed
to `clientPushURL` (payload undocumented: read as the status object, liberally).

The status object has two vocabularies: the seed's `deliveredToVendor` / `deliveredByVendor` (bools)
and the current `deliveredToTelco` (bool) / `deliveredToPhone` (unknown | confirmed | failed). Both
are read. The vendor retries failed hand-offs until `deliveryDeadline` (24 h): a failure while
`done` is false, or before the deadline, is not final.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import parse_qsl, quote

from tracker.adapters.base import (
    LOOKUP,
    MAX_REF_LEN,
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
    parse_time,
    recipient_digits,
)
from tracker.core.states import Failure, State

if TYPE_CHECKING:
    from tracker.config_types import VendorConfig

NAME = "engagespark"
POLLS = True
PUSHES = True
KEYED_BY_RECIPIENT = False
# clientPushURL: undocumented; the status object as JSON or form fields
POSTBACK_CONTENT_TYPES = frozenset({"application/json", "application/x-www-form-urlencoded"})
SETTINGS: dict[str, Setting] = {}  # org_id, api_key: VendorConfig fields

DEFAULT_BASE_URL = "https://api.engagespark.com"
LIST_MAX_SIZE = 1000

# deliveryError (the telco's reason) -> (state once final, permanent). Keys lower-case.
DELIVERY_ERRORS: dict[str, tuple[State, bool | None]] = {
    "anti-spam filter": (State.rejected, True),
    "blocked": (State.rejected, True),
    "contact absent - permanent": (State.failed, True),
    "contact absent - temporary": (State.failed, False),
    "expired": (State.expired, False),
    "network error": (State.failed, False),
    "no route": (State.rejected, True),
    "not mobile number": (State.rejected, True),
    "opted out of promotional messaging": (State.rejected, True),
    "unknown": (State.failed, None),
    "unreachable": (State.failed, False),
}
OPTED_OUT_PREFIX = "opted out"  # any "opted out of ..." variant: rejected, permanent

# Codes this adapter gives to the status object's fields (the object has no single code).
CODE_CONFIRMED = "confirmed"  # deliveredToPhone confirmed / deliveredByVendor true
CODE_PHONE_FAILED = "failed"  # deliveredToPhone failed without a deliveryError
CODE_PARTIAL = "partial"  # confirmed, but fewer successful parts than parts
CODE_HANDOFF_ERROR = "error"  # `error`: the hand-off to the telco failed
CODE_TELCO = "deliveredToTelco"  # handed to the telco, no receipt yet
CODE_PENDING = "pending"  # the vendor holds it, nothing more known
CODE_ACCEPTED = "accepted"  # send response: accepted (acceptedMessages)


def normalize_ref(ref: Any) -> str:
    """For matching only: trimmed and upper-cased: ids ("SMS20190701T053121-123-1235-0") are
    written by the vendor in upper case only (letters SMS and T, digits, dashes), so a copy folded
    to lower case by some application names the same message; nothing is numeric, so no leading
    zeros are touched. Status calls send the id as issued (status_requests)."""
    text = id_text(ref)
    if text is None:
        raise ParseError("engagespark: message id is not a string")
    text = text.strip()
    if not text:
        raise ParseError("engagespark: empty message id")
    return text.upper()


def _base(cfg: VendorConfig) -> str:
    return (cfg.base_url or DEFAULT_BASE_URL).rstrip("/")


def _auth(cfg: VendorConfig) -> dict[str, str]:
    if not cfg.api_key or not cfg.org_id:
        raise NotConfigured("engagespark: org_id and api_key must be configured")
    return {"Authorization": f"Token {cfg.api_key}", "Accept": "application/json"}


def status_requests(
    cfg: VendorConfig, refs: list[MessageRef], token: str | None = None
) -> list[HttpRequest]:
    """One GET per message, with its id as issued (verbatim; percent-encoded for the path)."""
    headers = _auth(cfg)
    org = quote(str(cfg.org_id), safe="")
    return [
        HttpRequest(
            "GET",
            f"{_base(cfg)}/v1/organizations/{org}/messages/{quote(str(r.vendor_ref), safe='')}/",
            headers=headers,
        )
        for r in refs
    ]


def list_request(
    cfg: VendorConfig, *, after: datetime | None = None, page: int | None = None, size: int = LIST_MAX_SIZE
) -> HttpRequest:
    """One page of the organization's messages. `after` is sent as an RFC 3339 UTC time (the
    vendor does not document whether it is a time or a cursor: see docs/vendors.md)."""
    headers = _auth(cfg)
    params = {"size": str(min(max(int(size), 1), LIST_MAX_SIZE))}
    if after is not None:
        at = after if after.tzinfo is not None else after.replace(tzinfo=timezone.utc)
        params["after"] = at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    if page is not None:
        params["page"] = str(int(page))
    org = quote(str(cfg.org_id), safe="")
    return HttpRequest("GET", f"{_base(cfg)}/v1/organizations/{org}/messages/", params=params, headers=headers)


# --- reading the status object ----------------------------------------------------------------


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("true", "1", "yes"):
            return True
        if v in ("false", "0", "no"):
            return False
    return None


def _int(value: Any) -> int | None:
    code = as_code(value)
    if code is None or not code.lstrip("-").isdigit() or len(code) > 6:
        return None
    return int(code)


def _text(value: Any, limit: int = 200) -> str:
    return value.strip()[:limit] if isinstance(value, str) else ""


def _parts(obj: Mapping[str, Any]) -> int | None:
    for key in ("parts", "partCount", "partsCount", "estimateParts"):
        value = obj.get(key)
        if isinstance(value, list):
            return len(value)
        n = _int(value)
        if n is not None:
            return n
    return None


def _phone(obj: Mapping[str, Any]) -> str | None:
    """deliveredToPhone in the new vocabulary; the old bool maps true -> confirmed, false ->
    unknown (it also means "no receipt yet")."""
    value = obj.get("deliveredToPhone")
    if isinstance(value, str) and value.strip():
        return value.strip().lower()
    old = _bool(obj.get("deliveredByVendor"))
    if old is None:
        old = _bool(value)  # a bool under the new name
    if old is None:
        return None
    return "confirmed" if old else "unknown"


def _delivery_error_mapping(derror: str) -> tuple[State, bool | None] | None:
    key = " ".join(derror.lower().split())
    if key in DELIVERY_ERRORS:
        return DELIVERY_ERRORS[key]
    if key.startswith(OPTED_OUT_PREFIX):
        return (State.rejected, True)
    return None


RETRY_PERIOD = timedelta(hours=24)  # the vendor's documented retry period for a failed hand-off


def _retry_until(ref: MessageRef | None) -> datetime | None:
    if ref is None:
        return None
    if ref.deadline is not None:
        return ref.deadline
    return ref.submitted_at + RETRY_PERIOD if ref.submitted_at is not None else None


def _observation(obj: Any, ref: MessageRef | None, now: datetime) -> Observation:
    """One status object (poll, list entry or push) -> one observation, its most advanced news."""
    if not isinstance(obj, dict):
        raise ParseError("engagespark: status entry is not an object")
    if ref is not None:
        vendor_ref = normalize_ref(ref.vendor_ref)
    else:
        ident = obj.get("id", obj.get("messageId"))
        if ident is None:
            raise ParseError("engagespark: status object without id")
        vendor_ref = normalize_ref(ident)
    numbers = (recipient_digits(obj.get(key)) for key in ("recipient", "to", "fullPhoneNumber"))
    recipient = next(filter(None, numbers), None)
    if recipient is None and ref is not None:
        recipient = recipient_digits(ref.recipient)

    to_telco = _bool(obj.get("deliveredToTelco"))
    if to_telco is None:
        to_telco = _bool(obj.get("deliveredToVendor"))
    phone = _phone(obj)
    done = _bool(obj.get("done"))
    derror = _text(obj.get("deliveryError"))
    error = _text(obj.get("error"))
    deadline = parse_time(obj.get("deliveryDeadline"))
    parts, ok_parts = _parts(obj), _int(obj.get("successPartCount"))
    # Final only when the vendor says it stopped (done), or, when it does not say, once its
    # retry deadline has passed: the one the answer gives, else the one stored at intake, else
    # the documented 24 h from submission. A report that names none of them (a push about a
    # message we cannot see here) is not final: the next poll, which knows, decides.
    retry_until = deadline or _retry_until(ref)
    final = done is True or (done is None and retry_until is not None and now >= retry_until)
    pending_state = State.sent if to_telco else State.accepted
    success_t = parse_time(obj.get("successT"))  # the time of success (null until then)

    def obs(state: State | None, code: str, text: str | None, failure: Failure | None = None,
            event_at: datetime | None = None) -> Observation:
        return Observation(vendor=NAME, vendor_ref=vendor_ref, recipient=recipient, state=state, code=code,
                           text=text or None, event_at=event_at, failure=failure, deadline=deadline, raw=obj)

    if phone == "confirmed":
        if parts is not None and ok_parts is not None and ok_parts < parts:
            text = f"{ok_parts} of {parts} parts delivered"
            if final:
                return obs(State.failed, CODE_PARTIAL, text, Failure(CODE_PARTIAL, text, None))
            return obs(pending_state, CODE_PARTIAL, text)
        return obs(State.delivered, CODE_CONFIRMED, "delivered to phone", event_at=success_t)
    if derror or phone == "failed" or (error and not to_telco):
        if derror:
            code, text = derror[:100], derror
            mapped = _delivery_error_mapping(derror)
        elif phone == "failed":
            code, text, mapped = CODE_PHONE_FAILED, error or "telco reported failure", (State.failed, None)
        else:
            code, text, mapped = CODE_HANDOFF_ERROR, error, (State.failed, None)
        if error and derror:
            text = f"{derror}; {error}"
        if not final:  # the vendor is still retrying: not an outcome yet (its code and words kept)
            return obs(pending_state, code, text)
        if mapped is None:  # unmapped: recorded and counted, never guessed
            return obs(None, code, text)
        state, permanent = mapped
        return obs(state, code, text, Failure(code, text, permanent))
    if phone not in (None, "unknown"):  # a deliveredToPhone value we do not know
        return obs(None if final else pending_state, f"deliveredToPhone:{phone[:50]}", None)
    if to_telco:
        return obs(State.sent, CODE_TELCO, "delivered to telco", event_at=success_t)
    return obs(State.accepted, CODE_PENDING, None)


# --- HTTP answers -------------------------------------------------------------------------------


def _error_text(resp: HttpResponse) -> str:
    try:
        body = load_json(resp.body, "engagespark")
    except ParseError:
        return ""
    return _text(body.get("error")) if isinstance(body, dict) else ""


HTTP_ACCOUNT_STATUSES = {401: "Invalid Token", 402: "insufficient funds", 403: "forbidden"}
# The list endpoint names no message: a 404 there means the organization is wrong.
LIST_ACCOUNT_STATUSES = {**HTTP_ACCOUNT_STATUSES, 404: "organization not found"}
LOOKUP_STATUSES = (400, 404)  # a status call about an id the vendor does not know


@guarded("engagespark status")
def parse_status(responses: list[HttpResponse], refs: list[MessageRef], now: datetime) -> StatusResult:
    """`responses[i]` answers `refs[i]`. 404 (and 400) are per-message lookup failures: an
    observation with state None and code "404"/"400", never an account error."""
    if len(responses) != len(refs):
        raise ParseError("engagespark status: responses and refs differ in length")
    result = StatusResult()
    for resp, ref in zip(responses, refs):
        answer = classify_http(resp, now, result, account=HTTP_ACCOUNT_STATUSES,
                               lookup=LOOKUP_STATUSES, reason=_error_text)
        if answer == LOOKUP:
            text = _error_text(resp) or ("message not found" if resp.status == 404 else "bad request")
            result.observations.append(Observation(
                vendor=NAME, vendor_ref=normalize_ref(ref.vendor_ref),
                recipient=recipient_digits(ref.recipient), state=None, code=str(resp.status), text=text))
        if answer != READ:
            continue
        body = load_json(resp.body, "engagespark status")
        if not isinstance(body, dict):
            raise ParseError("engagespark status: body is not a JSON object")
        result.observations.append(_observation(body, ref, now))
    return result


@guarded("engagespark list")
def parse_list(resp: HttpResponse, now: datetime, request: HttpRequest | None = None) -> StatusResult:
    """One page of the list endpoint. Pass the `request` that fetched it to get `next_request`
    (the same request with `page` = the vendor's `nextPage`) when `hasNextPage` is true."""
    result = StatusResult()
    if classify_http(resp, now, result, account=LIST_ACCOUNT_STATUSES, reason=_error_text) != READ:
        return result
    body = load_json(resp.body, "engagespark list")
    if not isinstance(body, dict):
        raise ParseError("engagespark list: body is not a JSON object")
    messages = body.get("messages")
    if messages is None:
        messages = []
    if not isinstance(messages, list):
        raise ParseError("engagespark list: messages is not a list")
    result.observations = [_observation(m, None, now) for m in messages]
    if _bool(body.get("hasNextPage")) and request is not None:
        params = dict(request.params or {})
        nxt = body.get("nextPage")
        if "page" in params or "size" in params:  # page mode: nextPage is a page number
            page = _int(nxt)
            params["page"] = str(page if page is not None else (_int(params.get("page")) or 1) + 1)
        else:  # after/limit mode: nextPage is the last id returned, the next `after`
            after = id_text(nxt)
            if after is None or not after.strip():
                raise ParseError("engagespark list: hasNextPage without a usable nextPage")
            params["after"] = after  # the vendor's id, sent back as it wrote it
        result.next_request = HttpRequest(request.method, request.url, params=params, headers=request.headers)
    return result


@guarded("engagespark postback")
def parse_postback(
    method: str, content_type: str, query: Mapping[str, str], body: bytes, now: datetime
) -> list[Observation]:
    """The clientPushURL payload is undocumented: a status object (JSON or form fields), a list
    of them, or one wrapped in `messages` / `message` / `data`."""
    payload: Any
    raw = bytes(body or b"").strip()
    ctype = (content_type or "").lower()
    if not raw:
        if not query:
            raise ParseError("engagespark postback: empty body")
        payload = dict(query)
    elif "form" in ctype or (raw[:1] not in (b"{", b"[") and b"=" in raw):
        payload = dict(parse_qsl(raw.decode("utf-8", "replace")))
    else:
        payload = load_json(raw, "engagespark postback")
    if isinstance(payload, dict):
        if isinstance(payload.get("messages"), list):
            payload = payload["messages"]
        else:
            for key in ("message", "data"):
                inner = payload.get(key)
                if isinstance(inner, dict) and ("id" in inner or "messageId" in inner):
                    payload = inner
                    break
    entries = payload if isinstance(payload, list) else [payload]
    return [_observation(e, None, now) for e in entries]


# --- send responses -----------------------------------------------------------------------------


def _account_error_from_text(error: str, status: int | None) -> AccountError | None:
    low = error.lower()
    if status in (401, 402, 403):
        return AccountError(str(status), error or "account error")
    if "invalid token" in low:
        return AccountError("401", error)
    if "funds" in low or "balance" in low:
        return AccountError("402", error)
    if "orgid" in low or "organization" in low:  # a wrong org id refuses every call
        return AccountError("400", error)
    return None


def _request_messages(request: Any) -> list[Any] | None:
    if request is None:
        return None
    req = json_value(request, "engagespark send request")
    if not isinstance(req, dict):
        raise ParseError("engagespark send: request is not a JSON object")
    msgs = req.get("messages")
    if msgs is None:
        return [req]  # send-to-contact / send-to-phonenumber: the request is the message
    if not isinstance(msgs, list):
        raise ParseError("engagespark send: request messages is not a list")
    return msgs


def _to(obj: Any) -> str | None:
    return recipient_digits(obj.get("to")) if isinstance(obj, dict) else None


def _accepted(ident: Any, recipient: str | None, raw: Any, deadline: datetime | None) -> Observation:
    return Observation(vendor=NAME, vendor_ref=normalize_ref(ident), recipient=recipient, state=State.accepted,
                       code=CODE_ACCEPTED, deadline=deadline, raw=raw, issued_ref=id_text(ident))


def _rejected(ident: Any, recipient: str | None, error: str, code: str | None, raw: Any,
              deadline: datetime | None) -> Observation:
    """A message refused before or instead of being queued; `ident` its id if it got one."""
    issued = id_text(ident)
    if issued is not None and not issued.strip():
        issued = None
    code = (code or error or "error")[:100]
    return Observation(vendor=NAME, vendor_ref=normalize_ref(issued) if issued is not None else NO_REF,
                       recipient=recipient, state=State.rejected, code=code, text=error or None,
                       failure=Failure(code, error or None, None), deadline=deadline, raw=raw, issued_ref=issued)


@guarded("engagespark send")
def parse_send(response: Any, request: Any | None, now: datetime) -> SendResult:
    """Bulk (`messages`, matched by position to the request's `messages[i].to`) and
    send-to-contact / send-to-phonenumber (`messageId`, `to`, `deliveryDeadline`) responses.
    Each message's raw payload is its own part: its `messages` element (bulk), the response
    (one message), or, when one refusal covers many requested messages, {error, errorCode,
    index} with the request's position. Linear in the response's and the request's size."""
    status = response.status if isinstance(response, HttpResponse) else None
    body = json_value(response, "engagespark send")
    if not isinstance(body, dict):
        raise ParseError("engagespark send: response is not a JSON object")
    result = SendResult()
    error = _text(body.get("error"))
    code = as_code(body.get("errorCode"))
    deadline = parse_time(body.get("deliveryDeadline"))
    requested = _request_messages(request)

    account = _account_error_from_text(error, status)
    if account is not None:
        result.account_error = account
        return result

    if isinstance(body.get("messages"), list):
        entries = body["messages"]
        if requested is not None and len(requested) != len(entries):
            raise ParseError("engagespark send: response and request list different numbers of messages")
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise ParseError("engagespark send: messages entry is not an object")
            recipient = _to(requested[i]) if requested is not None else _to(entry)
            ident = entry.get("id", entry.get("messageId"))
            entry_error = _text(entry.get("error"))
            if entry_error:
                result.observations.append(
                    _rejected(ident, recipient, entry_error, as_code(entry.get("errorCode")), entry, deadline))
            elif ident is None:
                raise ParseError("engagespark send: messages entry without id or error")
            else:
                result.observations.append(_accepted(ident, recipient, entry, deadline))
        return result

    ident = body.get("messageId", body.get("id"))
    issued = id_text(ident)
    has_id = issued is not None and issued.strip() != ""
    if has_id and not error:
        recipient = _to(body) or (_to(requested[0]) if requested else None)
        result.observations.append(_accepted(ident, recipient, body, deadline))
        return result
    if not error:
        raise ParseError("engagespark send: response has neither messageId, messages nor error")
    # The whole call was refused (400 etc.): every message it asked for is rejected.
    recipients = [_to(m) for m in requested] if requested else [_to(body)]
    if len(recipients) == 1:
        result.observations.append(_rejected(ident, recipients[0], error, code, body, deadline))
        return result
    # Several messages: one id cannot name them all (each is keyed by the row instead), and the
    # shared words are kept bounded in each raw payload, never the whole body again.
    if has_id and len(issued) > MAX_REF_LEN:
        raise ParseError(f"engagespark send: messageId is longer than {MAX_REF_LEN} characters")
    code = code[:100] if code else None
    for i, recipient in enumerate(recipients):
        raw = {"error": error, "errorCode": code, "messageId": issued, "index": i}
        result.observations.append(_rejected(None, recipient, error, code, raw, deadline))
    return result
