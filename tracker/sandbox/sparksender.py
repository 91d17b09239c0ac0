"""Spark Sender (spark-sender.txt, NOTES.md). Result codes live in the JSON body, always HTTP 200.

- `GET|POST /api/send/`      user_id, api_key, sender_id, message, recipient_contact_no
                             -> {"status_code": 204, "msg_id": "14364"} or {"status_code": 2xx}
- `GET|POST /api/bulkSMS/`   ... recipient_contacts "a,b,c"
                             -> {"success": [[{number, msgId}]], "unsuccess": [[{number, status}]]}
- `GET|POST /api/getStatus/` user_id, api_key, msg_id -> {"sms_status": N}
  0 pending, 4 processing (accepted), 1 send (sent; forever for a carrier without receipts),
  2 delivered, 3 fail (failed, expired and rejected alike), 5 invalid msg id, 6 bad key,
  7 api inactive, 8 suspended.
Parameters come as query string, form body or JSON object. Knob `account`: inactive 201/7,
suspended 210/8, no_funds 208, maintenance 214 (215 with an `error` text on bulk calls).
No HTTP errors are documented (every answer is HTTP 200): the fault knobs' 429 is a bare
{"error": ...} and their 5xx a web server's HTML page.
Sandbox choices (not documented by the vendor): a number with anything but digits and a leading
'+' or with fewer than 8 digits gets 203, more than 15 digits 205; one of country code 850 206
(country not available), 500 212 (no rate card), 672 213 (no route); an empty message 209. A call
refused whole for its message (209, or 216 for a knob `blocked_words` word) is answered
{"status_code": N}, and the truth holds each number it named as refused with that code.
"""
from __future__ import annotations

import itertools
from typing import Any

from aiohttp import web

from tracker.sandbox.common import Route, Vendor, json_response, read_params
from tracker.sandbox.knobs import Knobs

ACCOUNT_SEND = {"inactive": 201, "suspended": 210, "no_funds": 208, "maintenance": 214}
ACCOUNT_STATUS = {"inactive": 7, "suspended": 8}
MESSAGE_REFUSALS = {209, 216}  # refuse the message itself: each number it names is refused (truth)
STATUS = {"sent": 1, "delivered": 2, "failed": 3, "rejected": 3}
# The page's per-country send codes (both calls list them): numbers of these country codes are
# refused with them, one number at a time (the bulk call's `unsuccess`). Which countries is the
# sandbox's choice; none of them is a country the demo, the tests or the benches send to.
COUNTRY_REFUSALS = (("850", 206),  # Country is not Available for Sending SMS
                    ("500", 212),  # Rate Card is not Set for the Country
                    ("672", 213))  # Route is not Set for the Country


class SparkSender(Vendor):
    name = "sparksender"
    CREDENTIALS = {"user_id": "1001", "api_key": "sandbox-sparksender-key"}
    SENDER = "SparkDEMO"
    SAMPLE_NUMBER = "9477{:07d}"
    FATE_MAP = {"read": "delivered", "expired": "failed", "rejected": "failed"}
    CODES = {"delivered": ("2",), "failed": ("3",), "no_receipt": ("1",)}

    def __init__(self, sandbox: Any) -> None:
        super().__init__(sandbox)
        self._ids = itertools.count(14364)

    def routes(self) -> list[Route]:
        both = ("GET", "POST")
        return [Route(both, "/api/send/", self.send), Route(both, "/api/bulkSMS/", self.bulk),
                Route(both, "/api/getStatus/", self.status, malformable=True)]

    def _account_error(self, p: dict[str, str], knobs: Knobs) -> int | None:
        if (knobs.bad_credentials or p.get("user_id") != self.creds["user_id"]
                or p.get("api_key") != self.creds["api_key"]):
            return 202
        if knobs.account in ACCOUNT_SEND:
            return ACCOUNT_SEND[knobs.account]
        if not p.get("sender_id"):
            return 211
        message = p.get("message", "")
        if not message.strip() or len(message) > 480:
            return 209
        if any(w.lower() in message.lower() for w in knobs.blocked_words):
            return 216
        return None

    @staticmethod
    def _number_error(raw: str) -> int | None:
        text = raw.strip()
        body = text[1:] if text.startswith("+") else text
        if not body.isdigit() or len(body) < 8:
            return 203
        if len(body) > 15:
            return 205
        return next((code for prefix, code in COUNTRY_REFUSALS if body.startswith(prefix)), None)

    def _accept(self, raw: str) -> str:
        ref = str(next(self._ids))
        self.accept(ref, raw.strip().lstrip("+"))
        return ref

    async def send(self, request: web.Request) -> web.Response:
        p = await read_params(request)
        knobs = self.knobs
        code = self._account_error(p, knobs)
        if code is None:
            raw = p.get("recipient_contact_no", "").strip()
            code = 207 if not raw else self._number_error(raw)
            if code is not None and raw:
                self.refuse(None, raw, str(code))
        elif code in MESSAGE_REFUSALS and p.get("recipient_contact_no", "").strip():
            self.refuse(None, p["recipient_contact_no"], str(code))
        if code is not None:
            return json_response(self._error_body(code))
        ref = self._accept(p["recipient_contact_no"])
        self.refs(request, ref)
        return json_response({"status_code": 204, "msg_id": ref})

    async def bulk(self, request: web.Request) -> web.Response:
        p = await read_params(request)
        knobs = self.knobs
        code = self._account_error(p, knobs)
        numbers = [n.strip() for n in p.get("recipient_contacts", "").split(",") if n.strip()]
        if code is None and not numbers:
            code = 207
        if code in MESSAGE_REFUSALS:  # the whole call refused: every number it named
            for raw in numbers:
                self.refuse(None, raw, str(code))
        if code is not None:
            return json_response(self._error_body(code, bulk=True))
        success: list[dict[str, Any]] = []
        unsuccess: list[dict[str, Any]] = []
        for raw in numbers:
            err = self._number_error(raw)
            if err is None:
                ref = self._accept(raw)
                success.append({"number": raw, "msgId": ref})
                self.refs(request, ref)
            else:
                self.refuse(None, raw, str(err))
                unsuccess.append({"number": raw, "status": err})
        return json_response({"success": [success], "unsuccess": [unsuccess]})

    @staticmethod
    def _error_body(code: int, bulk: bool = False) -> dict[str, Any]:
        if code == 214 and bulk:
            return {"status_code": 215, "error": "Scheduled maintenance in progress"}
        return {"status_code": code}

    async def status(self, request: web.Request) -> web.Response:
        p = await read_params(request)
        knobs = self.knobs
        if (knobs.bad_credentials or p.get("user_id") != self.creds["user_id"]
                or p.get("api_key") != self.creds["api_key"]):
            return json_response({"sms_status": 6})
        if knobs.account in ACCOUNT_STATUS:
            return json_response({"sms_status": ACCOUNT_STATUS[knobs.account]})
        raw = p.get("msg_id", "").strip()
        ref = str(int(raw)) if raw.isdigit() else raw  # leading zeros do not matter
        self.refs(request, ref)
        msg = self.sandbox.message(self.name, ref)
        if msg is None or not raw.isdigit():
            return json_response({"sms_status": 5})
        now = self.now()
        state, since = msg.state_at(now)
        if state == "accepted":
            sent_at = msg.time_of("sent") or now
            code = 0 if now - since < (sent_at - since) / 2 else 4
        else:
            code = STATUS[state]
        return json_response({"sms_status": code})

    # -- how an application sends through it (tracker.sandbox.client) --
    @staticmethod
    async def send_call(call, recipients, *, sender, message, bulk, push_url):
        """/api/send/ or /api/bulkSMS/; the request kept is its parameters without api_key."""
        params = {"user_id": call.cfg["user_id"], "sender_id": sender, "message": message}
        if bulk:
            params["recipient_contacts"] = ",".join(recipients)
            path = "/api/bulkSMS/"
        else:
            params["recipient_contact_no"] = recipients[0]
            path = "/api/send/"
        answer = await call("POST", call.base + path, data={**params, "api_key": call.cfg["api_key"]})
        return params, answer


FAKE = SparkSender
