"""engageSPARK's status object, for tracker.adapters.engagespark: the one shape its status call,
its list endpoint and its pushes all carry, read into one observation; with the message id it
names (normalize_ref) and the vendor's name. Kept apart from the calls and the send responses;
tracker.adapters.engagespark re-exports what the contract asks for.

The status object has two vocabularies: the seed's `deliveredToVendor` / `deliveredByVendor` (bools)
and the current `deliveredToTelco` (bool) / `deliveredToPhone` (unknown | confirmed | failed). Both
are read. The vendor retries failed hand-offs until `deliveryDeadline` (24 h): a failure while
`done` is false, or before the deadline, is not final.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Mapping

from tracker.adapters.base import (MessageRef, Observation, ParseError, as_code, parse_time, recipient_digits,
                                   ref_text, text_of)
from tracker.core.states import Failure, State

NAME = "engagespark"

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

# The fields that say where a message is (the documented sample has most of them). An object
# with none ({"error": "internal service error"} with a 200, with or without the message's id;
# {}) is the vendor's error answer, not news of the message: past the retry deadline, its
# `error` read as a failed hand-off made every message it answered for `failed`.
DELIVERY_FIELDS = ("deliveredToTelco", "deliveredToVendor", "deliveredByVendor", "deliveredToPhone",
                   "done", "deliveryError", "successPartCount", "successT", "deliveryDeadline")


def normalize_ref(ref: Any) -> str:
    """For matching only: trimmed and upper-cased: ids ("SMS20190701T053121-123-1235-0") are
    written by the vendor in upper case only (letters SMS and T, digits, dashes), so a copy folded
    to lower case by some application names the same message; nothing is numeric, so no leading
    zeros are touched. Status calls send the id as issued (status_requests)."""
    return ref_text(ref, "engagespark", "message id").upper()


def entry_id(obj: Any) -> str | None:
    """The normalized id a status object names (`id`, else `messageId`); None if it names none."""
    if not isinstance(obj, dict):
        return None
    ident = obj.get("id")
    ident = obj.get("messageId") if ident is None else ident
    return None if ident is None else normalize_ref(ident)


def bool_of(value: Any) -> bool | None:
    """A flag written as a bool, 0/1 or a word; None when it is none of them."""
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


def int_of(value: Any) -> int | None:
    """A small count written as a number or its text; None otherwise."""
    code = as_code(value)
    if code is None or not code.lstrip("-").isdigit() or len(code) > 6:
        return None
    return int(code)


def _parts(obj: Mapping[str, Any]) -> int | None:
    for key in ("parts", "partCount", "partsCount", "estimateParts"):
        value = obj.get(key)
        if isinstance(value, list):
            return len(value)
        n = int_of(value)
        if n is not None:
            return n
    return None


def _phone(obj: Mapping[str, Any]) -> str | None:
    """deliveredToPhone in the new vocabulary; the old bool maps true -> confirmed, false ->
    unknown (it also means "no receipt yet")."""
    value = obj.get("deliveredToPhone")
    if isinstance(value, str) and value.strip():
        return value.strip().lower()
    old = bool_of(obj.get("deliveredByVendor"))
    if old is None:
        old = bool_of(value)  # a bool under the new name
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


def observation(obj: Any, ref: MessageRef | None, now: datetime) -> Observation:
    """One status object (poll, list entry or push) -> one observation, its most advanced news."""
    if not isinstance(obj, dict):
        raise ParseError("engagespark: status entry is not an object")
    if not any(key in obj for key in DELIVERY_FIELDS) and ("error" in obj or not (
            "id" in obj or "messageId" in obj)):
        raise ParseError("engagespark: an answer with no status field (an error answer)")
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

    to_telco = bool_of(obj.get("deliveredToTelco"))
    if to_telco is None:
        to_telco = bool_of(obj.get("deliveredToVendor"))
    phone = _phone(obj)
    done = bool_of(obj.get("done"))
    derror = text_of(obj.get("deliveryError"))
    error = text_of(obj.get("error"))
    deadline = parse_time(obj.get("deliveryDeadline"))
    parts, ok_parts = _parts(obj), int_of(obj.get("successPartCount"))
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
                           text=text or None, event_at=event_at, failure=failure, deadline=deadline, raw=obj,
                           settled=state is None and final)

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
