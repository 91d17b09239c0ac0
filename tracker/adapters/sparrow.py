"""Sparrow SMS international (ent-api.sparrowsms.com): one compose call makes a batch (a uuid)
for many recipients, so a message is (batch_id, recipient). Polled per batch (two report calls),
pushed as DLR callbacks. Every call but the login carries `Authorization: Bearer <JWT>`. The
report call's method, path prefix and last segment are settings (the page contradicts itself:
sparrow_payloads).

What Sparrow's answers are made of (batch ids, the envelope, records) and the login answer are
read in tracker.adapters.sparrow_payloads; this module makes the calls and the observations.
"""
from __future__ import annotations

import sys
from collections.abc import Mapping
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from tracker.adapters.base import (LOOKUP, MAX_REF_LEN, NO_REF, READ, AccountError, HttpRequest,
                                   HttpResponse, LoginResult, MessageRef, Observation, ParseError,
                                   SendResult, StatusResult, as_code, base_url, digits, failure_if,
                                   guarded, json_object, lookup_failure, parse_time, same_message)
from tracker.adapters.contract import Adapter, bound
from tracker.adapters.sparrow_payloads import (  # noqa: F401 - re-exported: SETTINGS, CREDENTIALS, abilities (LogsIn, ...)
    DEFAULT_BASE_URL, NAIVE_TZ, RESULT_DATA_ERROR, RESULT_DRAFT, RESULT_OK, SETTINGS, CREDENTIALS, batch_of, batches,
    error_words, login_refusal, login_request, naive_zone, normalize_ref, read_login, record,
    report_answer, report_call, result_code)
from tracker.adapters.sparrow_recipients import (  # noqa: F401 - re-exported (the intake's note)
    digitless_recipients, invalid_recipients, refused_only, request_recipients)
from tracker.core.states import Failure, State

if TYPE_CHECKING:
    from tracker.config_types import VendorConfig

NAME = "sparrow"
POLLS = True
MAX_ANSWER_BYTES = 32 * 1024 * 1024  # a batch's report: 200,000 recipients are about 10 MB
PUSHES = True
KEYED_BY_RECIPIENT = True
POSTBACK_CONTENT_TYPES = frozenset({"application/json"})  # DLR callbacks

# Report lists (<report_prefix>/report/:uuid/<report_path> and /failed) -> (state, permanent).
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


def status_requests(
    cfg: VendorConfig, refs: list[MessageRef], token: str | None = None
) -> list[HttpRequest]:
    """Two report calls per batch (delivery, then failed; `report_method`, `report_prefix`,
    `report_path`); refs normally share one batch id. Refs are grouped by their normalized batch
    id; the URL carries the group's first id verbatim."""
    if not token:
        raise ValueError("sparrow: a login token is required (login_request / parse_login)")
    method, prefix, delivery = report_call(cfg)
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    base, out = base_url(cfg, DEFAULT_BASE_URL), []
    for group in batches(refs).values():
        batch = quote(str(group[0].vendor_ref), safe="")  # as issued: normalized for grouping only
        for report in (delivery, "failed"):
            out.append(HttpRequest(method, f"{base}/v1/intlsms/{prefix}/report/{batch}/{report}/", headers=headers))
    return out


def read_status(responses: list[HttpResponse], refs: list[MessageRef], now: datetime,
                naive_tz: tzinfo) -> StatusResult:
    """parse_status, times without an offset read in `naive_tz`."""
    groups = batches(refs)
    if len(responses) != 2 * len(groups):
        raise ParseError("sparrow status: expected two responses per batch")
    result = StatusResult()
    for i, (batch, batch_refs) in enumerate(groups.items()):
        wanted = {digits(r.recipient): r for r in batch_refs if r.recipient and digits(r.recipient)}
        missing_reported = False
        for resp in responses[2 * i: 2 * i + 2]:
            answer = report_answer(resp, now, result)
            if answer == LOOKUP and not missing_reported:  # the batch is unknown: once per message
                missing_reported = True
                for number in wanted:
                    result.observations.append(lookup_failure(NAME, batch, number, resp.status, "batch not found"))
            if answer != READ:
                continue
            body = json_object(resp, "sparrow status")
            code = result_code(body)
            if code not in (None, RESULT_OK) and (refused := login_refusal(body)):
                result.account_error = result.account_error or AccountError(code[:50], refused)
                continue
            if code not in (None, RESULT_OK):
                result.transient_error = result.transient_error or f"report result {code[:20]}"
                continue
            data = body.get("data")
            # (a report about another batch: its numbers may be this batch's too)
            same_message("sparrow status", data.get("uuid") if isinstance(data, dict) else None,
                         batch, normalize_ref, "batch")
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
                    number, at = record(rec, "status")
                    if number not in wanted:
                        continue
                    code = str(key)[:50]
                    state, permanent = mapped or (None, None)
                    result.observations.append(Observation(
                        vendor=NAME, vendor_ref=batch, recipient=number, state=state, code=code, text=code,
                        event_at=parse_time(at, naive_tz), failure=failure_if(state, code, code, permanent),
                        raw=rec))
    return result


def read_postback(method: str, content_type: str, query: Mapping[str, str], body: bytes, now: datetime,
                  naive_tz: tzinfo) -> list[Observation]:
    """parse_postback, times without an offset read in `naive_tz`."""
    payload = json_object(bytes(body or b""), "sparrow postback")
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
            number, at = record(item, "postback")
            if not number:
                continue
            code = as_code(item.get("status"))
            if code is None:
                raise ParseError("sparrow postback: dlr_data entry without status")
            code = code.zfill(2) if code.isdigit() else code[:50]
            state, text, permanent = DLR_STATUS.get(code, (None, None, None))
            out.append(Observation(
                vendor=NAME, vendor_ref=normalize_ref(batch), recipient=number, state=state, code=code,
                text=text, event_at=parse_time(at, naive_tz), failure=failure_if(state, code, text, permanent),
                raw=item))
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
            number, at = record(rec, "postback")
            if not number:
                continue
            text = "rejected (batch complete)"
            out.append(Observation(
                vendor=NAME, vendor_ref=ref, recipient=number, state=State.rejected, code=CODE_BATCH_REJECTED,
                text=text, event_at=parse_time(at, naive_tz), failure=Failure(CODE_BATCH_REJECTED, text, True),
                raw=rec))
        return out
    raise ParseError("sparrow postback: unknown dlr_type")


def parsers(naive_tz: tzinfo) -> tuple[Any, Any, Any]:
    """(parse_status, parse_postback, parse_login) reading times without an offset in `naive_tz`."""

    @guarded("sparrow status")
    def parse_status(responses: list[HttpResponse], refs: list[MessageRef], now: datetime) -> StatusResult:
        """Answers to status_requests(refs): per batch, the delivery report then the failed report.
        A recipient named in neither gets no observation; only the refs asked about are reported."""
        return read_status(responses, refs, now, naive_tz)

    @guarded("sparrow postback")
    def parse_postback(method: str, content_type: str, query: Mapping[str, str], body: bytes,
                       now: datetime) -> list[Observation]:
        """DLR callbacks: `instant` (dlr_data: list of {ts, to, id, status}) and `batch_complete`
        (dlr_data: {uuid, rejected_numbers, counts}; only rejected numbers say anything per message)."""
        return read_postback(method, content_type, query, body, now, naive_tz)

    @guarded("sparrow login")
    def parse_login(resp: HttpResponse, now: datetime) -> LoginResult:
        """The token and its expires_on (see sparrow_payloads.parse_login)."""
        return read_login(resp, now, naive_tz)

    return parse_status, parse_postback, parse_login


# The module's parsers read naive times in NAIVE_TZ (+05:45); configured(cfg) in naive_time_zone.
parse_status, parse_postback, parse_login = parsers(NAIVE_TZ)


def configured(cfg: VendorConfig) -> Adapter:
    """This adapter bound to `cfg` (the contract's Configured): its parsers read times without an
    offset in `naive_time_zone`. NotConfigured for a value check-config refuses."""
    status, postback, login = parsers(naive_zone(cfg))
    return bound(sys.modules[__name__], parse_status=status, parse_postback=postback, parse_login=login)


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
    body = json_object(response, "sparrow send", "response")
    result = SendResult()
    if status in (401, 403):
        result.account_error = AccountError(str(status), error_words(body) or "authentication failed")
        return result
    code = result_code(body)
    if code not in (RESULT_OK, RESULT_DRAFT) and (refused := login_refusal(body)):
        # Our login or token was refused (NOTES.md: account-level, never message states).
        result.account_error = AccountError((code or "unauthorized")[:50], refused)
        return result
    if code is None:
        raise ParseError("sparrow send: response has no result code")
    code = code[:50]
    data = body.get("data") if isinstance(body.get("data"), dict) else {}
    recipients = request_recipients(request)
    batch_id = data.get("batch_id")
    issued = batch_id if isinstance(batch_id, str) and batch_id.strip() else None
    if issued is not None and len(issued) > MAX_REF_LEN:  # copied into every message: refused once
        raise ParseError(f"sparrow send: batch_id is longer than {MAX_REF_LEN} characters")
    ref = normalize_ref(issued) if issued is not None else NO_REF
    invalid = invalid_recipients(data)
    refused = refused_only(request, data)
    message = error_words(body) or None
    obs = result.observations

    def add(number: str, state: State | None, text: str | None, failure: Failure | None,
            c: str, own: dict[str, Any]) -> None:
        obs.append(Observation(vendor=NAME, vendor_ref=ref, recipient=number, state=state, code=c,
                               text=text, failure=failure, issued_ref=issued,
                               raw={"batch_id": issued, "result": code, **own}))

    def add_listed(state: State | None, text: str | None, failure: Failure | None = None) -> None:
        for number in recipients:
            if number not in refused:
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
