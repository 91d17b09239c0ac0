"""engageSPARK (engagespark-*.txt, NOTES.md). Header `Authorization: Token KEY`.

- `POST /v1/messaging/sms/phonenumbers`  bulk {orgid, messages: [{to, from, message}]}
- `POST /v1/sms/contact`                 {orgId, to | contactId, from, message, clientPushURL?}
- `POST /v1/sms/phonenumber`             {orgId, to, from, message, clientPushURL?}
- `GET /v1/organizations/{orgId}/messages/{id}/`  the status object; 404 for an unknown id
- `GET /v1/organizations/{orgId}/messages/`       list: `after` (a message id or an RFC 3339
  time), `limit` (<= 100) or `page` (from 1) and `size` (<= 1000), `dir` (asc | desc),
  `failed`, `startDate`, `endDate` -> {messages, hasNextPage, nextPage, paged}. In `after`/`limit`
  mode `nextPage` is the last id returned (pass it as `after`), in `page` mode the next page number
  (engagespark_listing.py).
Errors: 400 {error, errorCode, context}, 401 {"error": "Invalid Token"}, 402 when knob
`account` is no_funds (every call), 409 duplicate `clientDedup`. The fault knobs' 429 and 500
come in the call's own structure ("The API's response structure will always be the same"): a
send call's success fields with `error` set ("internal service error", the page's words for 500;
"too many requests", the sandbox's) and no message; a status or list call's as its 400s. 502 and
503, which the pages do not list, are a gateway's HTML page.

Status object fields: `deliveredToTelco`, `deliveredToPhone` (unknown | confirmed | failed),
`done`, `error`, `deliveryError`, `successPartCount`, `successT` (null until delivered), ... ;
knob `old_field_names` serves `deliveredToVendor` / `deliveredByVendor` (bools) instead.
A failed hand-off the vendor retries (knob `temp_failure`) shows `deliveredToTelco` false, `error`
"network error", done false, before the final outcome. With `clientPushURL` the status object is
POSTed to it once per delivery receipt (the outcome; none without a receipt). The status object and
the pushes: engagespark_status.py.
"""
from __future__ import annotations

import itertools
import math
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from tracker.sandbox.common import (
    BadBody,
    Push,
    Route,
    Vendor,
    clean_number,
    is_loopback_url,
    json_response,
    read_json,
)
from tracker.sandbox.engagespark_listing import BadQuery, page_of
from tracker.sandbox.engagespark_status import (
    PRICE_MICRO,
    receipt_pushes,
    status_object,
)
from tracker.sandbox.knobs import Knobs
from tracker.sandbox.truth import Message, utcnow


def es_deadline(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%f") + f"{dt.microsecond % 1000:03d}Z"


# The fault knobs' 429 and 500 in engageSPARK's response structure ("The API's response structure
# will always be the same"): 500 in the page's words, 429 (undocumented) in the sandbox's. 502
# and 503, which the pages do not list, are a gateway's HTML page (vendor_http.Faults).
FAULTS = {429: ("too many requests", "too_many_requests"),
          500: ("internal service error", "internal_error")}
BULK_PATH = "/v1/messaging/sms/phonenumbers"
SINGLE_PATHS = ("/v1/sms/contact", "/v1/sms/phonenumber")


def parts_of(text: str) -> int:
    return 1 if len(text) <= 160 else math.ceil(len(text) / 153)


def error(status: int, text: str, code: str, **context: Any) -> web.Response:
    return json_response({"error": text, "errorCode": code, "context": context}, status=status)


class EngageSpark(Vendor):
    name = "engagespark"
    CREDENTIALS = {"org_id": "1234", "api_key": "sandbox-engagespark-key"}
    SENDER = "engageSPARK"
    PUSH_URL = "per_send"  # clientPushURL on a single send
    SAMPLE_NUMBER = "63917{:07d}"
    FATE_MAP = {"read": "delivered"}
    CODES = {
        "delivered": ("confirmed",),
        "failed": ("unreachable", "contact absent - permanent", "contact absent - temporary"),
        "expired": ("expired",),
        "rejected": ("blocked", "no route", "not mobile number", "anti-spam filter",
                     "opted out of promotional messaging"),
        "no_receipt": ("unknown",),
    }
    TEMP_FAILURES = True

    def __init__(self, sandbox: Any) -> None:
        super().__init__(sandbox)
        self._ids = itertools.count(1235)
        self._contacts: dict[str, int] = {}  # number -> contactId
        self._contact_ids = itertools.count(654321)
        self._dedup: set[str] = set()
        self.order: list[Message] = []  # accepted messages, oldest first
        self._pos: dict[str, int] = {}  # ref -> index in order

    def routes(self) -> list[Route]:
        return [
            Route(("POST",), "/v1/messaging/sms/phonenumbers", self.bulk),
            Route(("POST",), "/v1/sms/contact", self.contact),
            Route(("POST",), "/v1/sms/phonenumber", self.phonenumber),
            Route(("GET",), "/v1/organizations/{org}/messages/{id}/", self.status,
                  malformable=True),
            Route(("GET",), "/v1/organizations/{org}/messages/", self.listing, malformable=True),
        ]

    # -- guards --
    def _guard(self, request: web.Request) -> web.Response | None:
        knobs = self.knobs
        auth = request.headers.get("Authorization", "")
        scheme, _, key = auth.partition(" ")
        if (knobs.bad_credentials or scheme.lower() != "token"
                or key.strip() != self.creds["api_key"]):
            return json_response({"error": "Invalid Token"}, status=401)
        if knobs.account == "no_funds":
            return error(402, "insufficient funds", "insufficient_funds")
        return None

    def fault_answer(self, request: web.Request, status: int) -> web.Response:
        """A send call's answer in the structure of its success (bulk: `error`, estimates,
        `acceptedMessages`, `messages` empty; single: `error`, `messageId` empty, ...); a status
        or list call's as its 400s are ({error, errorCode, context})."""
        if status not in FAULTS:
            return super().fault_answer(request, status)
        text, code = FAULTS[status]
        path = request.path.rstrip("/")
        if path.endswith(BULK_PATH):
            return json_response({"error": text, **self._estimate(0), "acceptedMessages": 0,
                                  "deliveryDeadline": "", "messages": []}, status=status)
        if path.endswith(SINGLE_PATHS):
            return json_response({"error": text, "messageId": "", "estimateParts": 0,
                                  **self._estimate(0), "deliveryDeadline": "", "contactId": 0,
                                  "to": "", "message": ""}, status=status)
        return error(status, text, code)

    def _org_ok(self, org: Any) -> bool:
        return str(org).strip() == str(self.creds["org_id"])

    # -- sending --
    def _create(self, to: str, sender: str, text: str, index: int | None, *, contact_id: int = 0,
                push_url: str | None = None, client_ref: str = "") -> tuple[Message, datetime]:
        knobs = self.knobs
        wall = utcnow()
        n = next(self._ids)
        org = self.creds["org_id"]
        ref = f"SMS{wall:%Y%m%dT%H%M%S}-{org}-{n:04d}" + ("" if index is None else f"-{index}")
        deadline = wall + timedelta(seconds=knobs.scaled(knobs.deadline_s))
        data = {"sender": sender, "text": text, "parts": parts_of(text), "contact_id": contact_id,
                "push_url": push_url, "client_ref": client_ref, "deadline": deadline}
        msg = self.accept(ref, to, data)
        self._pos[msg.ref] = len(self.order)
        self.order.append(msg)
        return msg, deadline

    @staticmethod
    def _estimate(parts: int) -> dict[str, Any]:
        micro = parts * PRICE_MICRO
        return {"estimateMicro": micro, "estimate": f"{micro / 1e6:.2f}"}

    def _check_message(self, to: Any, text: Any) -> tuple[str | None, str | None]:
        number = clean_number(to)
        if number is None:
            return None, "invalid 'to' number"
        if not isinstance(text, str) or not text.strip():
            return number, "empty message"
        if parts_of(text) > 7:
            return number, "message too long"
        return number, None

    async def bulk(self, request: web.Request) -> web.Response:
        if (denied := self._guard(request)) is not None:
            return denied
        try:
            body = await read_json(request)
        except BadBody:
            return error(400, "invalid JSON document", "invalid_json")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return error(400, "'messages' must be a list", "invalid_request")
        if not self._org_ok(body.get("orgid", body.get("orgId", ""))):
            return error(400, "invalid orgid", "invalid_org")
        out, deadline, accepted, total = [], None, 0, 0
        for i, m in enumerate(body["messages"]):
            m = m if isinstance(m, dict) else {}
            number, err = self._check_message(m.get("to"), m.get("message"))
            if err is not None:
                self.refuse(None, number or m.get("to"), err)
                out.append({"id": "", "estimateMicro": 0, "estimate": "0.00", "error": err})
                continue
            msg, deadline = self._create(number, str(m.get("from", "")), m["message"], i)
            self.refs(request, msg.ref)
            est = self._estimate(msg.data["parts"])
            total += est["estimateMicro"]
            accepted += 1
            out.append({"id": msg.ref, **est, "error": ""})
        return json_response({
            "error": "", "estimateMicro": total, "estimate": f"{total / 1e6:.2f}",
            "acceptedMessages": accepted,
            "deliveryDeadline": es_deadline(deadline or utcnow()), "messages": out})

    async def contact(self, request: web.Request) -> web.Response:
        return await self._single(request, contacts=True)

    async def phonenumber(self, request: web.Request) -> web.Response:
        return await self._single(request, contacts=False)

    async def _single(self, request: web.Request, contacts: bool) -> web.Response:
        if (denied := self._guard(request)) is not None:
            return denied
        try:
            body = await read_json(request)
        except BadBody:
            return error(400, "invalid JSON document", "invalid_json")
        if not isinstance(body, dict):
            return error(400, "invalid JSON document", "invalid_json")
        if not self._org_ok(body.get("orgId", body.get("orgid", ""))):
            return error(400, "invalid orgId", "invalid_org")
        push_url = body.get("clientPushURL") or None
        if push_url is not None and not (isinstance(push_url, str) and is_loopback_url(push_url)):
            return error(400, "clientPushURL must be a loopback http URL in the sandbox",
                         "invalid_push_url")
        dedup = body.get("clientDedup")
        if dedup:
            if str(dedup) in self._dedup:
                return error(409, "duplicate clientDedup", "duplicate", clientDedup=str(dedup))
        to, contact_id = body.get("to"), 0
        if contacts and body.get("contactId"):
            if to:
                return error(400, "cannot send both 'to' and 'contactId'", "invalid_request")
            contact_id = int(body["contactId"]) if str(body["contactId"]).isdigit() else -1
            to = next((n for n, c in self._contacts.items() if c == contact_id), None)
            if to is None:
                return error(400, "contact not found", "invalid_contact", contactId=contact_id)
        text = body.get("message")
        number, err = self._check_message(to, text)
        if err is not None:
            self.refuse(None, number or to, err)
            return json_response({
                "error": err, "errorCode": "invalid_request", "context": {}, "messageId": "",
                "estimateParts": 0, **self._estimate(0), "deliveryDeadline": "",
                "contactId": 0, "to": str(to or ""),
                "message": text if isinstance(text, str) else ""},
                status=400)
        if contacts and not contact_id:
            contact_id = self._contacts.setdefault(number, next(self._contact_ids))
        if dedup:
            self._dedup.add(str(dedup))
        msg, deadline = self._create(number, str(body.get("from", "")), text, None,
                                     contact_id=contact_id, push_url=push_url,
                                     client_ref=str(body.get("client_ref", "") or ""))
        self.refs(request, msg.ref)
        parts = msg.data["parts"]
        return json_response({
            "error": "", "messageId": msg.ref, "estimateParts": parts, **self._estimate(parts),
            "deliveryDeadline": es_deadline(deadline), "contactId": contact_id, "to": number,
            "message": text})

    # -- status (tracker.sandbox.engagespark_status) --
    @staticmethod
    def status_object(msg: Message, state: str, knobs: Knobs) -> dict[str, Any]:
        return status_object(msg, state, knobs)

    def pushes(self, msg: Message, knobs: Knobs) -> list[Push]:
        return receipt_pushes(msg, knobs)

    async def status(self, request: web.Request) -> web.Response:
        if (denied := self._guard(request)) is not None:
            return denied
        ref = request.match_info["id"].strip().upper()
        self.refs(request, ref)
        msg = self.sandbox.message(self.name, ref)
        if msg is None or not self._org_ok(request.match_info["org"]):
            return json_response({"error": "not found"}, status=404)
        state, _ = msg.state_at(self.now())
        return json_response(self.status_object(msg, state, self.knobs))

    async def listing(self, request: web.Request) -> web.Response:
        if (denied := self._guard(request)) is not None:
            return denied
        if not self._org_ok(request.match_info["org"]):
            return json_response({"error": "not found"}, status=404)
        now = self.now()
        try:
            page = page_of(self.order, self._pos, request.query, now)
        except BadQuery as e:
            return error(400, str(e), "invalid_parameter", **e.context)
        knobs = self.knobs
        self.refs(request, *(m.ref for m in page.messages))
        return json_response({
            "messages": [self.status_object(m, m.state_at(now)[0], knobs) for m in page.messages],
            "hasNextPage": page.more, "nextPage": page.next_page, "paged": page.paged})

    # -- how an application sends through it (tracker.sandbox.client) --
    @staticmethod
    async def send_call(call, recipients, *, sender, message, bulk, push_url):
        """The bulk phonenumbers call, or /v1/sms/phonenumber (with clientPushURL) for one."""
        org_id = call.cfg["org_id"]
        org: Any = int(org_id) if org_id.isdigit() else org_id
        headers = {"Authorization": f"Token {call.cfg['api_key']}"}
        if bulk:
            body: dict[str, Any] = {"orgid": org, "messages": [
                {"to": n, "from": sender, "message": message} for n in recipients]}
            path = "/v1/messaging/sms/phonenumbers"
        else:
            body = {"orgId": org, "to": recipients[0], "from": sender, "message": message}
            if push_url:
                body["clientPushURL"] = push_url
            path = "/v1/sms/phonenumber"
        return body, await call("POST", call.base + path, json=body, headers=headers)


FAKE = EngageSpark
