"""Sparrow's compose request and answer, read for their recipients (tracker.adapters.sparrow's
parse_send; the intake names the digitless ones on the row): a part of the Sparrow adapter,
re-exported by sparrow.py. Pure."""
from __future__ import annotations

from typing import Any

from tracker.adapters.base import ParseError, digits, json_value
from tracker.adapters.sparrow_payloads import record


def _request_numbers(request: Any) -> list[Any]:
    """The compose request's `session.recipients`, as given (a list, or text split at commas)."""
    if request is None:
        raise ParseError("sparrow send: the compose request is needed to name the recipients")
    req = json_value(request, "sparrow send request")
    session = req.get("session") if isinstance(req, dict) else None
    numbers = session.get("recipients") if isinstance(session, dict) else None
    if isinstance(numbers, str):
        numbers = numbers.split(",")
    if not isinstance(numbers, list):
        raise ParseError("sparrow send: request has no session.recipients list")
    return numbers


def request_recipients(request: Any) -> list[str]:
    """The compose request's recipients as digits, in order, each once (deduplicated through a
    dict: a campaign-sized list costs linear time). A number with no digits names no message:
    left out here, and named by digitless_recipients for the row's note."""
    out: dict[str, None] = {}
    for n in _request_numbers(request):
        if isinstance(n, bool) or not isinstance(n, (str, int)):
            raise ParseError("sparrow send: a recipient is not a number")
        out[digits(n)] = None  # duplicates are one message
    out.pop("", None)  # numbers with no digits cannot be messages
    return list(out)


def digitless_recipients(request: Any) -> list[str]:
    """The compose request's recipients that request_recipients leaves out for having no digits
    ("N/A", ""), as given, each once: the intake notes them on the row rather than drop them
    without a word."""
    out: dict[str, None] = {}
    for n in _request_numbers(request):
        if isinstance(n, str) and not digits(n):
            out[n] = None
    return list(out)


def refused_only(request: Any, data: dict) -> set[str]:
    """Digits echoed as invalid in as many forms as the request lists them (none accepted); else
    "+97798.." beside a mistyped "97798../" is one accepted and one refused: both reported."""
    listed: dict[str, set[str]] = {}
    for n in _request_numbers(request):
        listed.setdefault(digits(n) if isinstance(n, (str, int)) else "", set()).add(str(n))
    echoed: dict[str, set[str]] = {}
    for rec in data.get("invalid_recipients") or []:
        echoed.setdefault(record(rec, "send")[0], set()).add(str(rec))
    return {d for d, forms in echoed.items() if len(listed.get(d, ())) <= len(forms)}


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
