"""engageSPARK's send responses, for tracker.adapters.engagespark (which re-exports parse_send):
the bulk call (`messages`, matched by position to the request's messages) and send-to-contact /
send-to-phonenumber (`messageId`). Kept apart from the status calls, as the status object is
(tracker.adapters.engagespark_status).

Both pages say the response keeps one structure whatever happens ("will be returned after every
Bulk SMS API request"; "The API's response structure will always be the same"): a refused call
may therefore carry a top-level `error` with an empty `messages` list, which refuses every message
the request asked for.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from tracker.adapters.base import (
    MAX_REF_LEN,
    NO_REF,
    AccountError,
    HttpResponse,
    Observation,
    ParseError,
    SendResult,
    as_code,
    guarded,
    id_text,
    json_object,
    json_value,
    parse_time,
    recipient_digits,
    text_of,
)
from tracker.adapters.engagespark_status import NAME, normalize_ref
from tracker.core.states import Failure, State

CODE_ACCEPTED = "accepted"  # send response: accepted (acceptedMessages)


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


def _bulk_entries(result: SendResult, entries: list[Any], requested: list[Any] | None,
                  deadline: datetime | None) -> None:
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


@guarded("engagespark send")
def parse_send(response: Any, request: Any | None, now: datetime) -> SendResult:
    """Bulk (`messages`, matched by position to the request's `messages[i].to`) and
    send-to-contact / send-to-phonenumber (`messageId`, `to`, `deliveryDeadline`) responses.
    Each message's raw payload is its own part: its `messages` element (bulk), the response
    (one message), or, when one refusal covers many requested messages, {error, errorCode,
    index} with the request's position. A top-level `error` with an empty `messages` list is
    that whole-call refusal (an account problem's words: no message, the account error); with
    entries, the entries decide and an account problem is only noted. Linear in the response's
    and the request's size."""
    status = response.status if isinstance(response, HttpResponse) else None
    body = json_object(response, "engagespark send", "response")
    result = SendResult()
    error = text_of(body.get("error"))
    code = as_code(body.get("errorCode"))
    deadline = parse_time(body.get("deliveryDeadline"))
    requested = _request_messages(request)

    account = _account_error_from_text(error, status)
    entries = body.get("messages")
    if isinstance(entries, list) and entries:
        # `messages` "corresponds to the list of messages in the API request": each entry says
        # what became of its message (an id: accepted), whatever the top-level `error` says. An
        # account problem beside them is kept for the operator, never in place of them.
        _bulk_entries(result, entries, requested, deadline)
        result.account_error = account
        return result
    if account is not None:
        result.account_error = account
        return result
    if isinstance(entries, list) and not error:
        _bulk_entries(result, entries, requested, deadline)
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
