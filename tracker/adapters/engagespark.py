"""engageSPARK (api.engagespark.com): polled per message (or through the list endpoint) and pushed
to `clientPushURL` (payload undocumented: read as the status object, liberally).

The status object (what a poll, a list page and a push all carry) is read in
tracker.adapters.engagespark_status; this module makes the calls and reads the answers around it
and the send responses.
"""
from __future__ import annotations

from datetime import datetime, timezone
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
    base_url,
    classify_http,
    error_text,
    guarded,
    id_text,
    json_object,
    json_value,
    load_json,
    lookup_failure,
    paired,
    parse_time,
    recipient_digits,
    same_message,
    text_of,
)
from tracker.adapters.engagespark_status import (  # noqa: F401 - DELIVERY_ERRORS: re-exported
    DELIVERY_ERRORS,
    NAME,
    bool_of,
    entry_id,
    int_of,
    normalize_ref,
    observation,
)
from tracker.core.states import Failure, State

if TYPE_CHECKING:
    from tracker.config_types import VendorConfig

# NAME and normalize_ref: tracker.adapters.engagespark_status, with the status object.
POLLS = True
PUSHES = True
KEYED_BY_RECIPIENT = False
# clientPushURL: undocumented; the status object as JSON or form fields
POSTBACK_CONTENT_TYPES = frozenset({"application/json", "application/x-www-form-urlencoded"})
SETTINGS: dict[str, Setting] = {}  # org_id, api_key: VendorConfig fields

DEFAULT_BASE_URL = "https://api.engagespark.com"
LIST_MAX_SIZE = 1000
CODE_ACCEPTED = "accepted"  # send response: accepted (acceptedMessages)


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
    base = base_url(cfg, DEFAULT_BASE_URL)
    return [
        HttpRequest(
            "GET",
            f"{base}/v1/organizations/{org}/messages/{quote(str(r.vendor_ref), safe='')}/",
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
    url = f"{base_url(cfg, DEFAULT_BASE_URL)}/v1/organizations/{org}/messages/"
    return HttpRequest("GET", url, params=params, headers=headers)


# --- HTTP answers -------------------------------------------------------------------------------


def _error_text(resp: HttpResponse) -> str:
    return error_text(resp, "error")


HTTP_ACCOUNT_STATUSES = {401: "Invalid Token", 402: "insufficient funds", 403: "forbidden"}
# The list endpoint names no message: a 404 there means the organization is wrong.
LIST_ACCOUNT_STATUSES = {**HTTP_ACCOUNT_STATUSES, 404: "organization not found"}
LOOKUP_STATUSES = (400, 404)  # a status call about an id the vendor does not know


@guarded("engagespark status")
def parse_status(responses: list[HttpResponse], refs: list[MessageRef], now: datetime) -> StatusResult:
    """`responses[i]` answers `refs[i]`. 404 (and 400) are per-message lookup failures: an
    observation with state None and code "404"/"400", never an account error."""
    result = StatusResult()
    for resp, ref in paired(responses, refs, "engagespark status"):
        answer = classify_http(resp, now, result, account=HTTP_ACCOUNT_STATUSES,
                               lookup=LOOKUP_STATUSES, reason=_error_text)
        if answer == LOOKUP:
            text = _error_text(resp) or ("message not found" if resp.status == 404 else "bad request")
            result.observations.append(lookup_failure(
                NAME, normalize_ref(ref.vendor_ref), recipient_digits(ref.recipient), resp.status, text))
        if answer != READ:
            continue
        body = json_object(resp, "engagespark status")
        same_message("engagespark status", entry_id(body), ref.vendor_ref, normalize_ref)
        result.observations.append(observation(body, ref, now))
    return result


@guarded("engagespark list")
def parse_list(resp: HttpResponse, now: datetime, request: HttpRequest | None = None) -> StatusResult:
    """One page of the list endpoint. Pass the `request` that fetched it to get `next_request`
    (the same request with `page` = the vendor's `nextPage`) when `hasNextPage` is true. An
    entry is a status object read without its message's ref: the poller reads the entries of
    the messages it asked about again with parse_status (tracker.poller.listing)."""
    result = StatusResult()
    if classify_http(resp, now, result, account=LIST_ACCOUNT_STATUSES, reason=_error_text) != READ:
        return result
    body = json_object(resp, "engagespark list")
    messages = body.get("messages")
    if messages is None:
        messages = []
    if not isinstance(messages, list):
        raise ParseError("engagespark list: messages is not a list")
    result.observations = [observation(m, None, now) for m in messages]
    if bool_of(body.get("hasNextPage")) and request is not None:
        params = dict(request.params or {})
        nxt = body.get("nextPage")
        if "page" in params or "size" in params:  # page mode: nextPage is a page number
            page = int_of(nxt)
            params["page"] = str(page if page is not None else (int_of(params.get("page")) or 1) + 1)
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
    return [observation(e, None, now) for e in entries]


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
    body = json_object(response, "engagespark send", "response")
    result = SendResult()
    error = text_of(body.get("error"))
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
            entry_error = text_of(entry.get("error"))
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
