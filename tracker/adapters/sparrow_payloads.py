"""How Sparrow writes things, for tracker.adapters.sparrow: the batch id that, with a recipient,
names a message (normalize_ref, batch_of), the envelope every answer has (its result code and its
error words), the login answer (parse_login), and the numbers in a record or a compose request.
Nothing here makes an observation; tracker.adapters.sparrow re-exports what the contract asks for.

Also the vendor settings (SETTINGS) and what they hold: which report call the page means (it
contradicts itself on the method, the prefix and the last segment: see report_call).

Sparrow writes some times without an offset ("2023-01-23 14:31:30"). The page does not say in
which zone: the setting `naive_time_zone` says (naive_zone), a UTC offset; by default NAIVE_TZ,
Nepal time, the offset its own API shows elsewhere ("+05:45"; Nepal has no daylight saving, so
a fixed offset is exact). The module's parsers read them in NAIVE_TZ; `configured(cfg)`
(tracker.adapters.sparrow, the contract's Configured) gives parsers that read them in the
configured zone.
"""
from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, timezone, tzinfo
from typing import TYPE_CHECKING, Any

from tracker.adapters.base import (
    LOOKUP,
    NOTED,
    AccountError,
    HttpRequest,
    HttpResponse,
    LoginResult,
    MessageRef,
    NotConfigured,
    ParseError,
    Setting,
    as_code,
    base_url,
    classify_http,
    digits,
    guarded,
    is_transient,
    load_json,
    parse_time,
)

if TYPE_CHECKING:
    from tracker.config_types import VendorConfig

DEFAULT_BASE_URL = "https://ent-api.sparrowsms.com"
NAIVE_TZ = timezone(timedelta(hours=5, minutes=45), "NPT")  # see above
# naive_time_zone: the UTC offsets in use (standard and daylight time, tz database), or UTC.
NAIVE_TIME_ZONES = (
    "-12:00", "-11:00", "-10:00", "-09:30", "-09:00", "-08:00", "-07:00", "-06:00", "-05:00",
    "-04:00", "-03:30", "-03:00", "-02:30", "-02:00", "-01:00", "+00:00", "+01:00", "+02:00",
    "+03:00", "+03:30", "+04:00", "+04:30", "+05:00", "+05:30", "+05:45", "+06:00", "+06:30",
    "+07:00", "+08:00", "+08:45", "+09:00", "+09:30", "+10:00", "+10:30", "+11:00", "+12:00",
    "+12:45", "+13:00", "+13:45", "+14:00", "UTC")
DEFAULT_NAIVE_TIME_ZONE = "+05:45"
# The report calls: the page's table says `compose/report/:idx/ POST` and `.../:uuid/delivery
# GET`, its response section `/campaign/report/:uuid/delivered`. Defaults: GET compose/.../delivery/.
REPORT_PATHS = ("delivery", "delivered")  # the delivered / seen report's last path segment
REPORT_METHODS = ("GET", "POST")
REPORT_PREFIXES = ("compose", "campaign")  # the segment before report/: /v1/intlsms/<it>/report/
DEFAULT_REPORT_PATH, DEFAULT_REPORT_METHOD = REPORT_PATHS[0], REPORT_METHODS[0]
DEFAULT_REPORT_PREFIX = REPORT_PREFIXES[0]
CREDENTIALS = frozenset({"api_token", "partner_token"})
SETTINGS: dict[str, Setting] = {  # besides CREDENTIALS
    "report_prefix": Setting("the report calls' path prefix, `/v1/intlsms/<prefix>/report/...`: "
                             "`compose` (default) or `campaign`; the vendor's page names both: "
                             "confirm with the vendor", choices=REPORT_PREFIXES),
    "report_path": Setting("the delivered/seen report's last path segment: `delivery` (default) "
                           "or `delivered`; the vendor's page names both: confirm with the vendor",
                           choices=REPORT_PATHS),
    "report_method": Setting("the report calls' HTTP method: `GET` (default) or `POST`; the "
                             "vendor's page names both: confirm with the vendor",
                             choices=REPORT_METHODS),
    "naive_time_zone": Setting("the zone of the times Sparrow writes without an offset (DLR and "
                               "report `ts`): a UTC offset `+HH:MM` / `-HH:MM` (default `+05:45`, "
                               "Nepal time) or `UTC`; the vendor does not say: confirm with the "
                               "vendor", choices=NAIVE_TIME_ZONES),
}
TOKEN_LIFETIME = timedelta(hours=24)  # used when the login answer has no readable expires_on
RESULT_OK, RESULT_DRAFT, RESULT_DATA_ERROR = "00", "01", "11"

# Login and token refusals (NOTES.md: "account-level, never message states"), matched in the
# vendor's words lower-cased with punctuation as spaces, as whole words: "API Token Expired.",
# "error: invalid api token" match; "Invalid recipient", "Message expired" do not.
_LOGIN_REFUSALS = re.compile(
    r"\b(?:invalid (?:partner |api |access |bearer |jwt )?token"
    r"|(?:partner |api |access |bearer |jwt )?token (?:is |has )?(?:been )?expired"
    r"|account (?:is |has )?(?:been )?expired|invalid user)\b")
_NOT_WORD = re.compile(r"[\W_]+")

_NUMBER_KEYS = ("to", "number", "recipient", "mobile")
_TIME_KEYS = ("ts", "timestamp", "time")


def normalize_ref(ref: Any) -> str:
    """A batch id is a uuid: canonical lower-case hyphenated form (uuids are case-insensitive,
    and braces / "urn:uuid:" / unhyphenated spellings name the same batch). Anything that is
    not a uuid is trimmed and lower-cased."""
    if not isinstance(ref, str):
        raise ParseError("sparrow: batch id is not a string")
    text = ref.strip()
    if not text:
        raise ParseError("sparrow: empty batch id")
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return text.lower()


def batch_of(ref: MessageRef) -> str:
    """One compose call is one batch: its two report calls answer for every recipient."""
    return normalize_ref(ref.vendor_ref)


def batches(refs: list[MessageRef]) -> dict[str, list[MessageRef]]:
    """refs grouped by batch id, in order of first appearance (one call pair per batch)."""
    groups: dict[str, list[MessageRef]] = {}
    for r in refs:
        groups.setdefault(normalize_ref(r.vendor_ref), []).append(r)
    return groups


def error_words(body: Any) -> str:
    """The vendor's words for an error, wherever it put them (data.errors, message, ...)."""
    if not isinstance(body, dict):
        return ""
    places = [body.get("data"), body]
    for place in places:
        if not isinstance(place, dict):
            continue
        for key in ("errors", "error", "message", "detail", "msg"):
            value = place.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()[:200]
            if isinstance(value, (list, dict)) and value:
                parts = value.values() if isinstance(value, dict) else value
                words = []
                for part in parts:
                    if isinstance(part, str):
                        words.append(part)
                    elif isinstance(part, list):
                        words.extend(p for p in part if isinstance(p, str))
                if words:
                    return "; ".join(w.strip() for w in words)[:200]
    return ""


def envelope_or_none(resp: HttpResponse) -> Any:
    """An answer's JSON, or None when it is none (an HTML error page, an empty body)."""
    try:
        return load_json(resp.body, "sparrow")
    except ParseError:
        return None


def result_code(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    code = as_code(body.get("result"))
    return code.zfill(2) if code is not None and code.isdigit() else code


def login_refusal(body: Any) -> str | None:
    """The vendor's words when an answer refuses our login or token ("API Token Expired",
    "Account is Expired", "Invalid User", status UNAUTHORIZED): an account problem, never a
    message's. None when the answer says no such thing."""
    if not isinstance(body, dict):
        return None
    words = error_words(body)
    status = body.get("status")
    if isinstance(status, str) and status.strip().upper() == "UNAUTHORIZED":
        return words or "unauthorized"
    if words and _LOGIN_REFUSALS.search(_NOT_WORD.sub(" ", words.lower())):
        return words
    return None


def _setting(cfg: VendorConfig, key: str) -> str | None:
    value = cfg.settings.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise NotConfigured(f"sparrow: {key} must be a string")
    return value.strip()


HTTP_ACCOUNT_STATUSES = {401: "bearer token rejected (log in again)", 403: "forbidden",
                         405: "report call answered HTTP 405: check report_method (GET or POST)"}
REPORT_ROUTE_MISSING = ("report call answered HTTP 404 (no such route): check report_prefix, "
                        "report_path and base_url")


def report_answer(resp: HttpResponse, now: datetime, into: Any) -> str:
    """classify_http for a report call. A 404 in Sparrow's envelope (a `result`) is about the
    batch: LOOKUP. Any other 404 (a web server's page, no body), like a 405, means the call
    itself is wrong (report_prefix, report_path, report_method, base_url): an account error, as Spark Sender's
    wrong status_url is, so that the circuit opens and the operator is told."""
    answer = classify_http(resp, now, into, account=HTTP_ACCOUNT_STATUSES, lookup=(404,))
    if answer == LOOKUP and result_code(envelope_or_none(resp)) is None:
        into.account_error = into.account_error or AccountError("http_404", REPORT_ROUTE_MISSING)
        return NOTED
    return answer


def report_call(cfg: VendorConfig) -> tuple[str, str, str]:
    """(method, path prefix, last path segment) of the delivered/seen report, from
    `report_method`, `report_prefix` and `report_path`; the failed report takes the same method
    and prefix. NotConfigured for another value."""
    method = (_setting(cfg, "report_method") or DEFAULT_REPORT_METHOD).upper()
    prefix = (_setting(cfg, "report_prefix") or DEFAULT_REPORT_PREFIX).strip("/").lower()
    path = (_setting(cfg, "report_path") or DEFAULT_REPORT_PATH).strip("/").lower()
    for key, value, allowed in (("report_method", method, REPORT_METHODS),
                                ("report_prefix", prefix, REPORT_PREFIXES),
                                ("report_path", path, REPORT_PATHS)):
        if value not in allowed:
            raise NotConfigured(f"sparrow: {key} must be one of {', '.join(allowed)}")
    return method, prefix, path


def naive_zone(cfg: VendorConfig) -> tzinfo:
    """The zone of Sparrow's times without an offset, from `naive_time_zone` (NAIVE_TZ when
    unset); NotConfigured for a value not in NAIVE_TIME_ZONES."""
    text = (_setting(cfg, "naive_time_zone") or DEFAULT_NAIVE_TIME_ZONE).strip("/").upper()
    if text not in NAIVE_TIME_ZONES:
        raise NotConfigured("sparrow: naive_time_zone must be a UTC offset +HH:MM or -HH:MM "
                            "in use (-12:00 to +14:00) or UTC")
    if text == "UTC":
        return timezone.utc
    if text == DEFAULT_NAIVE_TIME_ZONE:
        return NAIVE_TZ
    offset = timedelta(hours=int(text[1:3]), minutes=int(text[4:6]))
    return timezone(-offset if text[0] == "-" else offset)


def login_request(cfg: VendorConfig) -> HttpRequest:
    if not cfg.api_token or not cfg.partner_token:
        raise NotConfigured("sparrow: api_token and partner_token must be configured")
    return HttpRequest("POST", f"{base_url(cfg, DEFAULT_BASE_URL)}/v1/autho/apitoken/login/",
                       json={"api_token": cfg.api_token, "partner_token": cfg.partner_token})


@guarded("sparrow login")
def parse_login(resp: HttpResponse, now: datetime) -> LoginResult:
    """The token and its expires_on, or an account error ("Invalid API Token", "Account is
    Expired", ...), or (408/425/429/5xx) a transient error with its Retry-After."""
    return read_login(resp, now, NAIVE_TZ)


def read_login(resp: HttpResponse, now: datetime, naive_tz: tzinfo) -> LoginResult:
    """parse_login, an expires_on without an offset read in `naive_tz`."""
    s = resp.status
    login = LoginResult()
    if is_transient(s) or 300 <= s < 400:  # a redirect is no refusal of our credentials
        classify_http(resp, now, login)
        return login
    try:
        body = load_json(resp.body, "sparrow login")
    except ParseError:
        if 200 <= s < 300:
            raise
        login.account_error = AccountError(f"http_{s}", "login refused")
        return login
    result = result_code(body)
    data = body.get("data") if isinstance(body, dict) else None
    token = data.get("token") if isinstance(data, dict) else None
    if 200 <= s < 300 and result in (None, RESULT_OK) and isinstance(token, str) and token.strip():
        if not all("!" <= ch <= "~" for ch in token.strip()):  # it goes into a header as is
            raise ParseError("sparrow login: token is not visible ASCII")
        login.token = token.strip()
        login.expires_on = parse_time(data.get("expires_on"), naive_tz) or now + TOKEN_LIFETIME
        return login
    if 200 <= s < 300 and result in (None, RESULT_OK):
        raise ParseError("sparrow login: answer has no token")
    login.account_error = AccountError(result or f"http_{s}", error_words(body) or "login refused")
    return login


def record(rec: Any, what: str) -> tuple[str, Any]:
    """(digits, raw timestamp) of one record: a bare number or an object carrying one. A number
    with no digits at all ("N/A": the vendor echoes invalid recipients as given) names no
    tracked message: its digits are "" and callers skip it rather than lose the whole answer."""
    if isinstance(rec, (str, int)) and not isinstance(rec, bool):
        number, at = digits(rec), None
    elif isinstance(rec, dict):
        value = next((rec[k] for k in _NUMBER_KEYS if k in rec), None)
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ParseError(f"sparrow {what}: record without a number")
        number = digits(value)
        at = next((rec[k] for k in _TIME_KEYS if k in rec), None)
    else:
        raise ParseError(f"sparrow {what}: record is neither a number nor an object")
    return number, at
