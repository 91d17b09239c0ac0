"""The types every vendor adapter speaks. Adapters are sans-I/O: they build requests and parse
answers; the shell (poller, postback server, intake) does the I/O and the database work.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone, tzinfo
from email.utils import parsedate_to_datetime
from typing import Any, Mapping

import orjson

from tracker.core.states import Failure, State


class ParseError(ValueError):
    """The payload cannot be read as this vendor's format. The message says why, never a secret."""


class NotConfigured(Exception):
    """The adapter cannot build a request: a setting it needs (a credential, a URL) is missing.
    The poller treats it as an account-level error (the circuit opens and alerts); it is not a
    ValueError, so that a ValueError from a bug is never mistaken for one."""


# Longest vendor id (`Observation.vendor_ref`, as issued and normalized), recipient (digits) and
# client reference a submission may carry: the intake refuses a row beyond them (PostgreSQL's
# btree entries hold about 2,700 bytes; no vendor's documented id comes near these). Adapters
# never truncate an id to fit (a cut id could name another message); a send response whose
# shared batch id is longer than MAX_REF_LEN is a ParseError, since it would be copied into
# every message of the row.
MAX_REF_LEN = 200
MAX_RECIPIENT_LEN = 32
MAX_CLIENT_REF_LEN = 500
# An integer id, code or number longer than this (about 300 digits) is none of them: it is never
# turned into text (slow for huge integers, and refused by Python beyond 4,300 digits).
MAX_INT_BITS = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    """One report about one message, normalized (built with keywords only: ten fields are too
    many to tell apart by position).

    `state` is None when the vendor's code is not in our mapping table: the report is recorded
    and counted as unmapped, never guessed.
    """

    vendor: str
    vendor_ref: str  # normalized with the adapter's normalize_ref
    recipient: str | None  # normalized digits; part of the key for Sparrow (batch id + recipient)
    state: State | None
    code: str  # the vendor's own code or status value, as text
    text: str | None = None  # the vendor's own words for it
    event_at: datetime | None = None  # the vendor's time of the event, when it gives one
    failure: Failure | None = None
    deadline: datetime | None = None  # vendor keeps retrying until then (engageSPARK)
    # The fragment of the payload this came from (JSON-able): this message's own part, never a
    # whole multi-message response again (its size must stay linear in the response's).
    raw: Any = None
    # The id exactly as the vendor wrote it (set by parse_send; None where no id was given):
    # what status calls must send back. `vendor_ref` is its normalized form, for matching.
    issued_ref: str | None = None
    # The mobile operator (carrier) the vendor says the message went to, where it says one
    # (Skycore's operator-name, else operator-id): kept on the message for delivery by route.
    operator: str | None = None


@dataclass(frozen=True, slots=True)
class AccountError:
    """A problem with our account or the vendor, not with a message: bad key, suspended, no
    funds, maintenance. Opens the vendor's circuit; never changes a message's state."""

    code: str
    reason: str
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A request for the shell to send. It carries credentials: never log it whole."""

    method: str
    url: str
    params: Mapping[str, str] | None = None
    headers: Mapping[str, str] | None = None
    json: Any = None
    data: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class MessageRef:
    """What the shell knows of a message it wants to poll. `vendor_ref` is the id as the vendor
    issued it (what a status call must send back); matching uses the normalized form."""

    vendor_ref: str
    recipient: str | None = None
    submitted_at: datetime | None = None
    deadline: datetime | None = None  # the vendor retries until then (stored at intake)


@dataclass(slots=True)
class StatusResult:
    """What one status answer said: observations, and/or an account-level error, and/or a
    transient problem (5xx, 429) with an optional Retry-After."""

    observations: list[Observation] = field(default_factory=list)
    account_error: AccountError | None = None
    retry_after_s: float | None = None
    transient_error: str | None = None
    # For list-style endpoints: the request for the next page, if any.
    next_request: HttpRequest | None = None


@dataclass(slots=True)
class LoginResult:
    """What a login answer said: a token and when it expires, or an account-level error, or a
    transient problem (the vendor is unavailable) with an optional Retry-After."""

    token: str | None = None
    expires_on: datetime | None = None
    account_error: AccountError | None = None
    retry_after_s: float | None = None
    transient_error: str | None = None


@dataclass(frozen=True, slots=True)
class PostbackRequest:
    """A postback as it reached us, for a vendor that signs its postbacks (SignsPostbacks): the
    URL as received (scheme, host, path with the token, query), every header, the raw body."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Setting:
    """A configuration key only one vendor has (`vendors.<vendor>.<key>`, a string), declared
    in its adapter's SETTINGS and found in `VendorConfig.settings`."""

    about: str
    secret: bool = False  # masked in logs and errors; may be given as `<key>_file`
    url: bool = False  # an http:// or https:// URL


@dataclass(slots=True)
class SendResult:
    """What a raw send response (plus the request, where needed) says: one observation per
    message created (state `submitted`/`accepted`, or `rejected` with the vendor's code)."""

    observations: list[Observation] = field(default_factory=list)
    account_error: AccountError | None = None


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


def digits(number: Any) -> str:
    """A phone number as digits only: '+1 (555) 010-2030' -> '15550102030'. Linear in the
    text's length; an integer too long to be a phone number is a ParseError (its decimal text
    would be slow to make, and Python refuses it beyond 4,300 digits)."""
    if isinstance(number, int) and not isinstance(number, bool) and number.bit_length() > MAX_INT_BITS:
        raise ParseError("phone number is an integer too long to be one")
    text = str(number)
    if text.isdigit():  # already digits only (the common case): no per-character walk
        return text
    return "".join(ch for ch in text if ch.isdigit())


def recipient_digits(value: Any) -> str | None:
    """A recipient given as a string or an integer, as digits; None for anything else or for a
    value without digits."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    return digits(value) or None


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """An answer as the shell received it, handed back to the adapter to parse."""

    status: int
    headers: Mapping[str, str]
    body: bytes


# --- Small pure helpers shared by the adapters (added with the vendor adapters) -------------

# `vendor_ref` of a message the vendor refused before giving it an id (a send rejected at once:
# Spark Sender `unsuccess`, a Skycore `Failure`, an engageSPARK per-message `error`, a Sparrow
# DATA_ERROR). The intake keys such a message by its submission, not by this empty ref.
NO_REF = ""


def id_text(value: Any) -> str | None:
    """A vendor id as the vendor wrote it: a string as is, an integer as its decimal text; None
    for anything else (bool, float, null, a container, an integer too long to be an id)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() <= MAX_INT_BITS:
        return str(value)
    return None


def load_json(body: Any, what: str) -> Any:
    """Decode a JSON body (bytes or str); ParseError, naming only `what`, if it is not JSON."""
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogatepass")
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise ParseError(f"{what}: body is not bytes")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ParseError(f"{what}: body is not valid JSON") from None


def json_value(value: Any, what: str) -> Any:
    """A send response or request as the intake holds it (decoded jsonb, raw bytes/str, or an
    HttpResponse) as a decoded JSON value."""
    if isinstance(value, HttpResponse):
        return load_json(value.body, what)
    if isinstance(value, (bytes, bytearray, memoryview, str)):
        return load_json(value, what)
    return value


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
        try:
            at = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if at.tzinfo is None or now.tzinfo is None:
            at, now = at.replace(tzinfo=None), now.replace(tzinfo=None)
        seconds = (at - now).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), cap_s)


def _bad_text(value: Any) -> bool:
    if value is None:
        return False
    if not isinstance(value, str):
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return "\x00" in value


def unstorable(o: Observation) -> str | None:
    """Why PostgreSQL would refuse this observation (NUL or lone surrogates in text, a time out
    of range, raw data that is not JSON), or None. A vendor's answer can be well-formed JSON
    and still hold such things; the shell checks before it stores, so that one bad report
    never sinks the batch it came in."""
    f = o.failure
    texts = (o.vendor_ref, o.issued_ref, o.recipient, o.code, o.text, o.operator) + ((f.code, f.reason) if f else ())
    if any(_bad_text(t) for t in texts) or not o.vendor_ref:
        return "text with NUL or invalid characters"
    for at in (o.event_at, o.deadline):
        if at is not None:
            try:
                at.astimezone(timezone.utc)
            except (OverflowError, ValueError):
                return "time out of range"
    if o.raw is not None:
        try:
            encoded = orjson.dumps(o.raw, default=str)  # as the reducer stores it
        except TypeError:
            return "payload is not JSON data"
        if b"\\u0000" in encoded:
            return "payload holds NUL characters"
    return None


def _clean_text(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    return value.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


def cleaned(o: Observation) -> Observation:
    """`o` with what PostgreSQL cannot store in its texts and raw payload replaced: NUL by
    U+FFFD, a lone surrogate by '?'. Its key (vendor_ref, recipient) and times are left as they
    are: if those cannot be stored, the report stays unstorable."""
    f = o.failure
    raw = o.raw
    if raw is not None:
        try:
            raw = orjson.loads(orjson.dumps(raw, default=str).replace(b"\\u0000", b"\\ufffd"))
        except (TypeError, orjson.JSONDecodeError):
            raw = _clean_text(str(raw))
    return replace(o, code=_clean_text(o.code), text=_clean_text(o.text), raw=raw,
                   operator=_clean_text(o.operator),
                   failure=replace(f, code=_clean_text(f.code), reason=_clean_text(f.reason)) if f else None)


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
