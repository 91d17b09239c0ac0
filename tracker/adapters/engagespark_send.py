"""engageSPARK's send responses, for tracker.adapters.engagespark (which re-exports parse_send):
the bulk call (`messages`, matched by position to the request's messages) and send-to-contact /
send-to-phonenumber (`messageId`). Kept apart from the status calls, as the status object is
(tracker.adapters.engagespark_status).

Both pages say the response keeps one structure whatever happens ("will be returned after every
Bulk SMS API request"; "The API's response structure will always be the same"): a refused call
may therefore carry a top-level `error` with an empty `messages` list, which refuses every message
the request asked for.

Not every error answer is a refusal. "500 – engageSPARK internal service error" (and a 408, a 429,
any 5xx) says nothing of whether the vendor queued the messages; a 409 "duplicate clientDedup"
(NOTES.md) says an earlier call with the same `clientDedup` was taken, so the message was sent,
under that call's id. Neither is `rejected` (final: "the vendor refused it"): see `_unsettled`.
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
from tracker.adapters.engagespark_status import NAME, RETRY_PERIOD, normalize_ref
from tracker.core.states import Failure, State

CODE_ACCEPTED = "accepted"  # send response: accepted (acceptedMessages)
CODE_DUPLICATE = "duplicate"  # 409 duplicate clientDedup: sent already, under an earlier call's id
# HTTP statuses of a whole call that are no verdict on its messages (besides every 5xx).
UNSETTLED_STATUSES = frozenset({408, 429})
# The documented 500 ("engageSPARK internal service error") in the words of a body stored without
# its HTTP status (tracker.submissions keeps the body only).
INTERNAL_ERROR_WORDS = ("internal service error", "internal server error")


def _unsettled_code(status: int | None, error: str, code: str | None) -> str | None:
    """The code of a whole-call answer that does not say the messages were refused: `duplicate`
    (409) or `http_<status>` (5xx, 408, 429); None for a refusal. Without the status (the
    intake reads the stored body only) the vendor's words decide: `duplicate` and `clientDedup`,
    or errorCode `duplicate`; the documented 500's "internal service error"."""
    if status == 409:
        return CODE_DUPLICATE
    if status is not None:
        return f"http_{status}" if status >= 500 or status in UNSETTLED_STATUSES else None
    low = error.lower()
    if (code or "").lower() == CODE_DUPLICATE or ("duplicate" in low and "dedup" in low):
        return CODE_DUPLICATE
    if any(w in low for w in INTERNAL_ERROR_WORDS):
        return "http_500"
    return None


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


def _any_taken(entries: Any) -> bool:
    """Whether a bulk answer's entry names a message the vendor took (a non-empty id)."""
    return isinstance(entries, list) and any(
        isinstance(e, dict) and (id_text(e.get("id", e.get("messageId"))) or "").strip()
        for e in entries)


@guarded("engagespark send")
def parse_send(response: Any, request: Any | None, now: datetime) -> SendResult:
    """Bulk (`messages`, matched by position to the request's `messages[i].to`) and
    send-to-contact / send-to-phonenumber (`messageId`, `to`, `deliveryDeadline`) responses.
    Each message's raw payload is its own part: its `messages` element (bulk), the response
    (one message), or, when one refusal covers many requested messages, {error, errorCode,
    index} with the request's position. A top-level `error` with an empty `messages` list is
    that whole-call refusal (an account problem's words: no message, the account error); with
    entries, the entries decide and an account problem is only noted, unless none names a
    message taken (they only repeat a whole call's failure). A 409 duplicate
    clientDedup, a 5xx, 408 or 429 (or, without the status, their words) is no refusal: see
    `_unsettled`. Linear in the response's and the request's size."""
    status = response.status if isinstance(response, HttpResponse) else None
    try:
        body = json_object(response, "engagespark send", "response")
    except ParseError:  # a 5xx from a gateway may carry no JSON: still no verdict on the messages
        if status is None or _unsettled_code(status, "", None) is None:
            raise
        body = {}
    result = SendResult()
    error = text_of(body.get("error"))
    code = as_code(body.get("errorCode"))
    given = body.get("deliveryDeadline")
    deadline = parse_time(given)
    if deadline is None and given not in (None, ""):  # given but unreadable: said, not dropped
        hours = int(RETRY_PERIOD.total_seconds() // 3600)
        shown = repr(text_of(given, 40)) if isinstance(given, str) else f"of type {type(given).__name__}"
        result.notes.append(f"the vendor's deliveryDeadline {shown} cannot be read: its "
                            f"documented retry period ({hours} h after the send) stands in for it")
    requested = _request_messages(request)

    unsettled = _unsettled_code(status, error, code)
    account = None if unsettled else _account_error_from_text(error, status)
    entries = body.get("messages")
    # A whole call that failed (a 5xx's or a 409's words, an account problem) may repeat its
    # error in every entry ("the response structure will always be the same"): with no entry
    # naming a message the vendor took, the top-level error decides, never a `rejected` each.
    whole = (unsettled or account) and not _any_taken(entries)
    if isinstance(entries, list) and entries and not whole:
        # `messages` "corresponds to the list of messages in the API request": each entry says
        # what became of its message (an id: accepted), whatever the top-level `error` says. An
        # account problem beside them is kept for the operator, never in place of them.
        _bulk_entries(result, entries, requested, deadline)
        result.account_error = account
        return result
    if account is not None:
        result.account_error = account
        return result
    ident = body.get("messageId", body.get("id"))
    issued = id_text(ident)
    has_id = issued is not None and issued.strip() != ""
    if unsettled:
        _unsettled(result, unsettled, status, error, code, body, requested, issued if has_id else None,
                   deadline)
        return result
    if isinstance(entries, list) and not error:
        _bulk_entries(result, entries, requested, deadline)
        return result

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


def _unsettled(result: SendResult, code: str, status: int | None, error: str, error_code: str | None,
               body: dict, requested: list[Any] | None, issued: str | None,
               deadline: datetime | None) -> None:
    """A whole call answered with no verdict on its messages (`code`: `duplicate` or
    `http_<status>`; `error_code`: the vendor's own, kept in the raw payload). Never `rejected`:
    that is final and says the vendor refused them, which a 5xx does not say and a 409
    contradicts (the message was sent, under the first call's id).
    - an id given for one message: tracked under it, no state claimed (state None, the code
      kept): the status calls learn what became of it;
    - no id: nothing can ever be asked or matched about the message, so it is `unknown` at once
      (what its window would make of it, minus the wait; never polled): keyed by the row as the
      intake keys every send without an id, with the code and the vendor's words kept.
    Either way the account_error carries the same words, so that the intake notes them on the
    row (tracker.intake_problems) instead of the call passing unseen."""
    recipients = [_to(m) for m in requested] if requested else [_to(body)]
    words = error or (f"HTTP {status}" if status is not None else code)
    if issued is not None and len(recipients) == 1:
        recipient = _to(body) or recipients[0]
        result.observations.append(Observation(
            vendor=NAME, vendor_ref=normalize_ref(issued), recipient=recipient, state=None, code=code,
            text=words, deadline=deadline, raw=body, issued_ref=issued))
        kept = f"tracked under the id it gave ({issued[:40]}), its outcome left to the status calls"
    else:
        if issued is not None and len(issued) > MAX_REF_LEN:
            raise ParseError(f"engagespark send: messageId is longer than {MAX_REF_LEN} characters")
        one = len(recipients) == 1
        for i, recipient in enumerate(recipients):
            raw = body if one else {"error": error, "errorCode": error_code and error_code[:100],
                                    "messageId": issued, "index": i}
            result.observations.append(Observation(
                vendor=NAME, vendor_ref=NO_REF, recipient=recipient, state=State.unknown, code=code,
                text=words, deadline=deadline, raw=raw))
        kept = (f"no id was given, so {'it is' if one else f'all {len(recipients)} are'} kept "
                "`unknown`, never polled")
    if code == CODE_DUPLICATE:
        given = "" if issued is not None and len(recipients) == 1 else ", which this answer does not give"
        why = ("an earlier call with the same clientDedup was taken: the message was sent under that "
               f"call's id{given} ({words!r}); {kept}; if the earlier call's row was taken in, that "
               "row tracks the message")
    else:
        why = (f"the vendor failed to answer the call ({words!r}): whether it queued the "
               f"message(s) is unknown; {kept}")
    result.account_error = AccountError(code, why)
