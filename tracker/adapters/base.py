"""What every vendor adapter shares: the one reading of HTTP statuses and the small pure helpers
(ids, phone numbers, codes, JSON bodies, times, headers, failures). Adapters are sans-I/O: they
build requests and parse answers; the shell (poller, postback server, intake) does the I/O and
the database work.

The types adapters speak live in tracker.adapters.datatypes and the storage checks in
tracker.adapters.storable; both are re-exported here, so that `from tracker.adapters.base import
X` stays the one way to reach any of them.
"""
from __future__ import annotations

import functools
import unicodedata
from datetime import datetime, timezone, tzinfo
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Callable, Mapping
from urllib.parse import urlsplit


# Re-exported: every name below is imported from here by the shell, the tests and the adapters.
from tracker.adapters.datatypes import (MAX_CLIENT_REF_LEN, MAX_INT_BITS, MAX_RECIPIENT_LEN, MAX_REF_LEN,
                                        NO_REF, AccountError, HttpRequest, HttpResponse, LoginResult,
                                        MessageRef, NotConfigured, Observation, ParseError, PostbackRequest,
                                        SendResult, Setting, StatusResult)
from tracker.adapters.jsonbody import json_object, json_value, load_json
from tracker.adapters.storable import cleaned, unstorable
from tracker.core.states import Failure, State

if TYPE_CHECKING:
    from tracker.config_types import VendorConfig


# --- HTTP statuses, read the same way for every polled vendor ------------------------------------

TRANSIENT_STATUSES = frozenset({408, 425, 429})  # and every 5xx: try again later
ACCOUNT_STATUSES: Mapping[int, str] = {401: "credentials refused", 403: "forbidden"}
READ, LOOKUP, NOTED = "read", "lookup", "noted"


def is_transient(status: int) -> bool:
    return status in TRANSIENT_STATUSES or status >= 500


def classify_http(resp: HttpResponse, now: datetime, into: Any, *,
                  account: Mapping[int, str] = ACCOUNT_STATUSES, lookup: Any = (),
                  reason: Any = None) -> str:
    """How an answer's HTTP status reads, for every polled vendor alike:

    - 2xx: READ (the body is the vendor's answer);
    - a status in `lookup`: LOOKUP (the vendor does not know this id: a per-message lookup
      failure, which the adapter records as an observation without a state);
    - 408, 425, 429, 5xx: NOTED as `into.transient_error` "HTTP n", with `into.retry_after_s`
      from Retry-After (the longest of a batch);
    - 401, 403 and the vendor's other account statuses (`account`: status -> default reason):
      NOTED as `into.account_error` `http_<n>` with `reason(resp)` or the default reason;
    - anything else: NOTED as transient (an answer that is not the vendor's: retried, counted).

    `into` is a StatusResult or a LoginResult; the first error noted on it stays."""
    s = resp.status
    if 200 <= s < 300:
        return READ
    if s in lookup:
        return LOOKUP
    if 300 <= s < 400:  # never followed (credentials would go with it): say where to
        into.transient_error = into.transient_error or f"HTTP {s}: {redirected(resp)}"
        return NOTED
    if s in account or s in ACCOUNT_STATUSES:
        why = (reason(resp) if reason else "") or account.get(s) or ACCOUNT_STATUSES[s]
        into.account_error = into.account_error or AccountError(f"http_{s}", why)
        return NOTED
    into.transient_error = into.transient_error or f"HTTP {s}"
    if is_transient(s):
        wait = retry_after(resp.headers, now)
        if wait is not None:
            into.retry_after_s = max(into.retry_after_s or 0.0, wait)
    return NOTED


def redirected(resp: HttpResponse) -> str:
    """What a 3xx says, for an operator: the origin it points at (never its path or query,
    which may carry a key); a base_url to correct, most likely."""
    origin = urlsplit((header(resp.headers, "Location") or "").strip())
    where = f"{origin.scheme}://{origin.hostname}" if origin.scheme and origin.hostname else "elsewhere"
    return f"the vendor redirects to {where} (not followed: check base_url)"


def digits(number: Any) -> str:
    """A phone number as digits only: '+1 (555) 010-2030' -> '15550102030'. Linear in the
    text's length; an integer too long to be a phone number is a ParseError (its decimal text
    would be slow to make, and Python refuses it beyond 4,300 digits)."""
    if isinstance(number, int) and not isinstance(number, bool) and number.bit_length() > MAX_INT_BITS:
        raise ParseError("phone number is an integer too long to be one")
    text = str(number)
    if text.isascii() and text.isdigit():  # already digits only (the common case): no walk
        return text
    # A decimal digit of any script as its ASCII digit ('٣' -> '3'); what else Python calls a
    # digit (superscript '²', circled '①') is no digit of a number and is dropped: int() and
    # the recipient's key must be able to read what this returns.
    return "".join(ch if ch <= "9" else str(unicodedata.decimal(ch))
                   for ch in text if ch.isdecimal())


def recipient_digits(value: Any) -> str | None:
    """A recipient given as a string or an integer, as digits; None for anything else or for a
    value without digits."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    return digits(value) or None


# --- Small pure helpers shared by the adapters (added with the vendor adapters) -------------

def id_text(value: Any) -> str | None:
    """A vendor id as the vendor wrote it: a string as is, an integer as its decimal text; None
    for anything else (bool, float, null, a container, an integer too long to be an id)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() <= MAX_INT_BITS:
        return str(value)
    return None


def ref_text(ref: Any, vendor: str, noun: str) -> str:
    """A message id as issued (a string, or an integer as its text), trimmed: what a vendor's
    normalize_ref starts from. ParseError naming the vendor and its word for the id otherwise."""
    text = id_text(ref)
    if text is None:
        raise ParseError(f"{vendor}: {noun} is not a string")
    text = text.strip()
    if not text:
        raise ParseError(f"{vendor}: empty {noun}")
    return text


def base_url(cfg: VendorConfig, default: str) -> str:
    """The vendor's API base URL: the configured one, else its public one; no trailing slash."""
    return (cfg.base_url or default).rstrip("/")


def paired(responses: list[HttpResponse], refs: list[MessageRef], what: str) -> Any:
    """(response, ref) pairs of a status call made per message; ParseError if they cannot pair."""
    if len(responses) != len(refs):
        raise ParseError(f"{what}: responses and refs differ in length")
    return zip(responses, refs)


def lookup_failure(vendor: str, vendor_ref: str, recipient: str | None, status: int,
                   text: str) -> Observation:
    """What a LOOKUP answer (classify_http) says: the vendor does not know this id. Recorded with
    the HTTP status as its code and no state, never guessed."""
    return Observation(vendor=vendor, vendor_ref=vendor_ref, recipient=recipient, state=None,
                       code=str(status), text=text, unknown_id=True)


def same_message(label: str, named: Any, asked: str, normalize: Callable[[Any], str],
                 what: str = "message") -> None:
    """ParseError when an answer names another message than the one asked about (`named` None:
    it names none): written to the one asked about, it would move the wrong message (a vendor or
    proxy mixing answers up). Ids compare as the adapter's `normalize` makes them."""
    if named is not None and normalize(named) != normalize(asked):
        raise ParseError(f"{label}: the answer names another {what}")


def failure_if(state: State | None, code: str, text: str | None, permanent: bool | None) -> Failure | None:
    """The Failure a mapped state carries when it is one (expired, rejected, failed), else None."""
    return Failure(code, text, permanent) if state is not None and state.is_failure else None


def text_of(value: Any, limit: int = 200) -> str:
    """A vendor's own words, trimmed and bounded; "" for anything that is not a string."""
    return value.strip()[:limit] if isinstance(value, str) else ""


def error_text(resp: HttpResponse, key: str) -> str:
    """The vendor's words in an error answer's JSON `key`; "" when the answer has none (or is not
    JSON: it is an error answer already, its unreadable body says nothing more)."""
    try:
        body = load_json(resp.body, "error answer")
    except ParseError:
        return ""
    return text_of(body.get(key)) if isinstance(body, dict) else ""


def as_code(value: Any) -> str | None:
    """A vendor code that may arrive as int, integral float or string, as trimmed text; None when
    absent or not a scalar code."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value) if value.bit_length() <= MAX_INT_BITS else None
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def parse_time(value: Any, naive_tz: tzinfo | None = None) -> datetime | None:
    """An ISO 8601 / RFC 3339 vendor time as an aware datetime, or None when absent or unreadable
    (a bad timestamp never loses the report it came with). A time without an offset is read in
    `naive_tz` (default UTC). A time that cannot be expressed in UTC (year 9999 at -14:00, year
    1 at +05:00) is unreadable too: it would overflow in whoever compares or stores it. Times at
    the edges that can (9999-12-31T23:59:59Z) are returned; callers clamp them to their range."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not 10 <= len(text) <= 64:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    if at.tzinfo is None or at.utcoffset() is None:
        at = at.replace(tzinfo=naive_tz or timezone.utc)
    try:
        at.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        return None
    return at


def http_date(value: str) -> datetime | None:
    """An RFC 2822 time (an HTTP-date: "Thu, 30 Jul 2015 20:12:33 +0000"), None if unreadable.
    Naive when it names no zone ("-0000"); callers decide what that means."""
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def header(headers: Any, name: str) -> str | None:
    """A header value, looked up case-insensitively in any mapping (or None)."""
    try:
        value = headers.get(name)
        if value is None:
            lname = name.lower()
            value = next((v for k, v in headers.items() if str(k).lower() == lname), None)
    except Exception:
        return None
    return value if isinstance(value, str) else None


def retry_after(headers: Any, now: datetime, cap_s: float = 86400.0) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP-date), capped."""
    value = header(headers, "Retry-After")
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        at = http_date(value)
        if at is None:
            return None
        if at.tzinfo is None or now.tzinfo is None:
            at, now = at.replace(tzinfo=None), now.replace(tzinfo=None)
        seconds = (at - now).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), cap_s)

def guarded(label: str):
    """Decorate a parser so that nothing but ParseError escapes it. The message names only the
    parser and the exception type, never payload values (a payload may carry a token). The
    undecorated parser stays reachable as `__wrapped__` for tests."""
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except ParseError:
                raise
            except Exception as exc:  # noqa: BLE001 - the contract: only ParseError escapes
                raise ParseError(f"{label}: unreadable payload ({type(exc).__name__})") from None

        return wrapper

    return decorate
