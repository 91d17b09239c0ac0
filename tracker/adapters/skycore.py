"""Skycore (Messaging API v2): postback-only, no status query. Postbacks are matched on
`tracking-id`: v2 JSON, or the older v1 XML that old accounts may still have configured.

In v1, `E202` covers three outcomes told apart only by STATUS ("Message Sent/Failed",
"Message Sent/Expired", "Message Sent/NotSupported"); the code is mapped through the STATUS text
wherever it is ambiguous.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import parse_qsl

from tracker.adapters.base import (
    NO_REF,
    AccountError,
    HttpRequest,
    HttpResponse,
    MessageRef,
    Observation,
    ParseError,
    SendResult,
    Setting,
    StatusResult,
    as_code,
    digits,
    guarded,
    id_text,
    json_value,
    load_json,
    parse_time,
)
from tracker.core.states import Failure, State

if TYPE_CHECKING:
    from tracker.config_types import VendorConfig

NAME = "skycore"
POLLS = False
MAX_ANSWER_BYTES = 1024 * 1024  # a send's answer (it is never polled)
PUSHES = True
KEYED_BY_RECIPIENT = False
# v2 JSON; v1 XML (as XML, or form-encoded with an `xml` field on some accounts)
POSTBACK_CONTENT_TYPES = frozenset({"application/json", "application/xml", "text/xml",
                                    "application/x-www-form-urlencoded"})
SETTINGS: dict[str, Setting] = {}
CREDENTIALS = frozenset({"api_key"})  # never polled: only masked where an answer echoes it

# Unambiguous postback codes -> (state, permanent).
CODES: dict[str, tuple[State, bool | None]] = {
    "N201": (State.sent, None),  # Sent / "Message Sent"
    "N202": (State.delivered, None),  # Delivered / "Message Sent/Delivered"
    "E201": (State.failed, None),  # Failed / "Message Failed"
}
AMBIGUOUS = "E202"
# E202 by the last word of STATUS (v2 "Rejected"; v1 "Message Sent/Failed|Expired|NotSupported").
E202_BY_STATUS: dict[str, tuple[State, bool | None]] = {
    "rejected": (State.rejected, None),
    "failed": (State.failed, None),
    "expired": (State.expired, False),
    "notsupported": (State.rejected, True),
}
# Send `error-code`s the vendor lists as authentication errors (v2: E100, E103, E104, E105,
# E109; v1 adds E101, E102, E106, E107, E108): about the account, never a message.
AUTH_ERROR_CODES = {f"E10{i}" for i in range(10)}

_FORBIDDEN_XML = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_XML_DECL = re.compile(r"^\s*<\?xml[^>]*\?>")
MAX_XML_BYTES = 65536
MAX_OPERATOR_LEN = 100  # an operator's name or id; anything longer is cut, never refused


def normalize_ref(ref: Any) -> str:
    """For matching only: trimmed, case kept: the tracking id is opaque and the same system
    writes it in the send response and in the postbacks; nothing is numeric to strip."""
    text = id_text(ref)
    if text is None:
        raise ParseError("skycore: tracking-id is not a string")
    text = text.strip()
    if not text:
        raise ParseError("skycore: empty tracking-id")
    return text


def status_requests(
    cfg: VendorConfig, refs: list[MessageRef], token: str | None = None
) -> list[HttpRequest]:
    """Skycore has no status query: nothing to poll."""
    return []


def parse_status(responses: list[HttpResponse], refs: list[MessageRef], now: datetime) -> StatusResult:
    """Skycore is never polled: an empty result."""
    return StatusResult()


def _status_key(status: str) -> str:
    # "Message Sent/NotSupported" -> "notsupported"; "Rejected" -> "rejected"
    last = status.rsplit("/", 1)[-1]
    return "".join(last.split()).lower()


def _map(code: str, status: str) -> tuple[State, bool | None] | None:
    if code == AMBIGUOUS:
        return E202_BY_STATUS.get(_status_key(status))
    return CODES.get(code)


def _xml_fields(raw: bytes) -> dict[str, str]:
    """The children of a v1 <POSTBACK>. Read as UTF-8 only (the declaration is dropped, so no
    declared encoding can hide markup from the check), and any DTD is refused: no entities."""
    if len(raw) > MAX_XML_BYTES:
        raise ParseError("skycore postback: XML too large")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("skycore postback: XML is not UTF-8") from None
    if _FORBIDDEN_XML.search(text):
        raise ParseError("skycore postback: XML with a DOCTYPE or ENTITY is refused")
    text = _XML_DECL.sub("", text, count=1)
    try:
        root = ET.fromstring(text.encode("utf-8"))
    except (ET.ParseError, ValueError, LookupError):
        raise ParseError("skycore postback: body is not well-formed XML") from None
    if not isinstance(root.tag, str) or root.tag.upper() != "POSTBACK":
        raise ParseError("skycore postback: XML root is not POSTBACK")
    return {child.tag.upper(): (child.text or "").strip() for child in root if isinstance(child.tag, str)}


# v1 XML element -> v2 JSON key
_V1_KEYS = {
    "ORIGIN": "origin", "CODE": "code", "STATUS": "status", "FROM": "from", "TO": "to",
    "TRACKINGID": "tracking-id", "SPID": "operator-id", "TIMESTAMP": "timestamp",
    "FROM_MASK": "from-mask", "AGGREGATORID": "aggregator-id", "STATUSDETAILS": "status-details",
}


def _payload(content_type: str, query: Mapping[str, str], body: bytes) -> dict[str, Any]:
    raw = bytes(body or b"").strip()
    if raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark
        raw = raw[3:].strip()
    ctype = (content_type or "").lower()
    if not raw:
        if not query:
            raise ParseError("skycore postback: empty body")
        fields: Any = dict(query)
    elif raw[:1] == b"<":
        fields = {_V1_KEYS.get(k, k.lower()): v for k, v in _xml_fields(raw).items()}
    elif raw[:1] in (b"{", b"[") or "json" in ctype:
        fields = load_json(raw, "skycore postback")
    else:  # form-encoded: the v2 keys, or the v1 XML in an `xml` field
        fields = dict(parse_qsl(raw.decode("utf-8", "replace")))
        xml = fields.get("xml") or fields.get("XML")
        if isinstance(xml, str) and xml.strip().startswith("<"):
            fields = {_V1_KEYS.get(k, k.lower()): v for k, v in _xml_fields(xml.strip().encode()).items()}
    if not isinstance(fields, dict):
        raise ParseError("skycore postback: body is not an object")
    return fields


def _str(value: Any) -> str:
    return value.strip() if isinstance(value, str) else (as_code(value) or "")


@guarded("skycore postback")
def parse_postback(
    method: str, content_type: str, query: Mapping[str, str], body: bytes, now: datetime
) -> list[Observation]:
    fields = _payload(content_type, query, body)
    ref = fields.get("tracking-id", fields.get("trackingid", fields.get("tracking_id")))
    if ref is None:
        raise ParseError("skycore postback: no tracking-id")
    vendor_ref = normalize_ref(ref)
    code = _str(fields.get("code")).upper()
    if not code:
        raise ParseError("skycore postback: no code")
    status = " ".join(_str(fields.get("status")).split())  # v1 XML may wrap the text
    details = " ".join(_str(fields.get("status-details")).split())
    text = f"{status} ({details})" if status and details else (status or details or None)
    recipient = digits(_str(fields.get("to"))) or None
    mapped = _map(code, status)
    failure = None
    state = None
    if mapped is not None:
        state, permanent = mapped
        if state.is_failure:
            failure = Failure(code, text, permanent)
    return [
        Observation(
            vendor=NAME,
            vendor_ref=vendor_ref,
            recipient=recipient,
            state=state,
            code=code[:50],
            text=text,
            event_at=parse_time(fields.get("timestamp")),
            failure=failure,
            raw=fields,
            operator=_operator(fields),
        )
    ]


def _operator(fields: dict[str, Any]) -> str | None:
    """The carrier the postback names (newer accounts): its name, else its id (v1 SPID)."""
    name = " ".join(_str(fields.get("operator-name")).split())
    return (name or _str(fields.get("operator-id")))[:MAX_OPERATOR_LEN] or None


def _request_to(request: Any) -> str | None:
    if request is None:
        return None
    req = json_value(request, "skycore send request")
    if not isinstance(req, dict):
        raise ParseError("skycore send: request is not a JSON object")
    return digits(_str(req.get("to"))) or None


@guarded("skycore send")
def parse_send(response: Any, request: Any | None, now: datetime) -> SendResult:
    """`{"status": "Success", "tracking-id", "to", "status-details"}` -> accepted (the vendor
    says "accepted and queued"); `{"status": "Failure", "error-code", "error-info", "to"}` ->
    rejected with that code, or an AccountError for the vendor's authentication codes. One
    message per response: its raw payload is the response."""
    body = json_value(response, "skycore send")
    if not isinstance(body, dict):
        raise ParseError("skycore send: response is not a JSON object")
    status = _str(body.get("status"))
    recipient = digits(_str(body.get("to"))) or _request_to(request)
    result = SendResult()
    if status.lower() == "success":
        ref = body.get("tracking-id")
        if ref is None:
            raise ParseError("skycore send: success without tracking-id")
        result.observations.append(Observation(
            vendor=NAME, vendor_ref=normalize_ref(ref), recipient=recipient, state=State.accepted, code="Success",
            text=_str(body.get("status-details"))[:200] or None, raw=body, issued_ref=id_text(ref)))
        return result
    if status.lower() != "failure":
        raise ParseError("skycore send: status is neither Success nor Failure")
    code = _str(body.get("error-code")).upper()[:50] or "Failure"
    info = _str(body.get("error-info"))[:200] or None
    if code in AUTH_ERROR_CODES:
        result.account_error = AccountError(code, info or "authentication error")
        return result
    # Skycore publishes no table of per-message send errors: the send was refused, so the
    # message is rejected with the vendor's code kept; permanence unknown.
    result.observations.append(Observation(
        vendor=NAME, vendor_ref=NO_REF, recipient=recipient, state=State.rejected, code=code, text=info,
        failure=Failure(code, info, None), raw=body))
    return result
