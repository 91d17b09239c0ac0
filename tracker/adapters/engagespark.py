"""engageSPARK (api.engagespark.com): polled per message (or through the list endpoint) and pushed
to `clientPushURL` (payload undocumented: read as the status object, liberally).

The status object (what a poll, a list page and a push all carry) is read in
tracker.adapters.engagespark_status; this module makes the calls and reads the answers around it;
the send responses are read in tracker.adapters.engagespark_send (parse_send re-exported here).
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import parse_qsl, quote

from tracker.adapters.base import (
    LOOKUP,
    READ,
    HttpRequest,
    HttpResponse,
    MessageRef,
    NotConfigured,
    Observation,
    ParseError,
    Setting,
    StatusResult,
    base_url,
    classify_http,
    error_text,
    guarded,
    id_text,
    json_object,
    load_json,
    lookup_failure,
    paired,
    recipient_digits,
    same_message,
)
from tracker.adapters.engagespark_send import CODE_ACCEPTED, parse_send  # noqa: F401 - re-exported
from tracker.adapters.engagespark_status import (  # noqa: F401 - DELIVERY_ERRORS: re-exported
    DELIVERY_ERRORS,
    NAME,
    bool_of,
    entry_id,
    int_of,
    normalize_ref,
    observation,
)

if TYPE_CHECKING:
    from tracker.config_types import VendorConfig

# NAME and normalize_ref: tracker.adapters.engagespark_status, with the status object.
POLLS = True
MAX_ANSWER_BYTES = 4 * 1024 * 1024  # a list page of LIST_MAX_SIZE entries (about 450 B each)
PUSHES = True
KEYED_BY_RECIPIENT = False
# clientPushURL: undocumented; the status object as JSON or form fields
POSTBACK_CONTENT_TYPES = frozenset({"application/json", "application/x-www-form-urlencoded"})
SETTINGS: dict[str, Setting] = {}
CREDENTIALS = frozenset({"org_id", "api_key"})

DEFAULT_BASE_URL = "https://api.engagespark.com"
LIST_MAX_SIZE = 1000


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
    if len(messages) > LIST_MAX_SIZE:  # more than any page asks for (`size`): refused before
        # reading (a page of a million small entries held the event loop 10 s, looking healthy)
        raise ParseError(f"engagespark list: {len(messages)} entries on a page; at most "
                         f"{LIST_MAX_SIZE} are asked for")
    result.observations = [o for o in (_entry(m, now) for m in messages) if o is not None]
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


def _entry(m: Any, now: datetime) -> Observation | None:
    """A list entry, or None for one that cannot be read (no id, say): it names no message we
    can tell, and a claimed message it may have been is not seen, so it is asked for alone
    (tracker.poller.listing). One such entry made the whole page malformed, the list endpoint
    rested, every message of the claim asked for one by one."""
    try:
        return observation(m, None, now)
    except ParseError:
        return None


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
