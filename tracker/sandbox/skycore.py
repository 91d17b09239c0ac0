"""Skycore Messaging API v2 (skycore-sendsms-v2.txt, NOTES.md). Postback-only: no status query.

- `POST /` (the API_ENDPOINT_URL), header `x-api-key`, JSON {"action": "sendsms", "to", "from",
  "message-text", "from-mask"?, "campaign-ref"?, "click-tracking"?}
  -> {"status": "Success", "tracking-id", "to", "from", "status-details"} or
     {"status": "Failure", "error-code", "error-info", "to"} (HTTP 200 either way).
- Postbacks to the one account-wide URL (`Sandbox.set_postback_url("skycore", url)`): N201 when
  sent, then N202 / E201 / E202 when a receipt comes (none for a carrier without receipts).
  v2: JSON with origin, code, sent-as, status (Sent | Delivered | Failed | Rejected), to, from,
  timestamp, tracking-id, campaign-ref, operator-id, operator-name (from-mask when used).
  Knob `postback_format` "v1": the XML POSTBACK, where E202 is told apart by STATUS
  ("Message Sent/Failed", "Message Sent/Expired", "Message Sent/NotSupported").
  v2 has no "expired": the sandbox reports an expiry as E201 Failed there.
Errors: E100 (bad request, from the vendor's intro page), E103 (bad key: one of the documented
authentication codes; which one is the sandbox's choice), E111 Invalid Sender (the page), E110
invalid recipient (the sandbox's choice: the real code is not public). E110 and E111 refuse one
message without an id: the truth holds its `to` digits as `rejected`. The page documents no
HTTP errors (every answer is HTTP 200): the fault knobs' 429 is a bare {"error": ...} and their
5xx a web server's HTML page.
"""
from __future__ import annotations

import string
from typing import Any

from aiohttp import web

from tracker.sandbox.common import (BadBody, Push, Route, Vendor, clean_number,
                                    dumps, json_response, read_json)
from tracker.sandbox.knobs import Knobs
from tracker.sandbox.truth import Message

V2_STATUS = {"N201": "Sent", "N202": "Delivered", "E201": "Failed", "E202": "Rejected"}
V1_STATUS = {"N201": "Message Sent", "N202": "Message Sent/Delivered", "E201": "Message Failed"}
OPERATORS = (("0001470", "AT&T"), ("0001471", "T-Mobile"), ("0001472", "Verizon Wireless"))
ALNUM = string.ascii_lowercase + string.digits
BAD_REQUEST = ("Invalid request. Please make a valid JSON POST request with all the required "
               "variables.")


def failure(code: str, info: str, to: Any = "") -> web.Response:
    return json_response({"status": "Failure", "error-code": code, "error-info": info,
                          "to": str(to or "")})


class Skycore(Vendor):
    name = "skycore"
    CREDENTIALS = {"api_key": "sandboxSkycoreApiKey0001"}
    SENDER = "00000"
    BULK_SEND = False  # one recipient per call
    PUSH_URL = "account"  # one postback URL, set in the dashboard
    SAMPLE_NUMBER = "1555{:07d}"

    def fate_map(self, knobs: Knobs) -> dict[str, str]:
        if knobs.postback_format == "v1":
            return {"read": "delivered"}
        return {"read": "delivered", "expired": "failed"}

    def codes(self, knobs: Knobs) -> dict[str, tuple[str, ...]]:
        if knobs.postback_format == "v1":
            return {"delivered": ("N202",), "no_receipt": ("N201",),
                    "failed": ("E201 Message Failed", "E202 Message Sent/Failed"),
                    "expired": ("E202 Message Sent/Expired",),
                    "rejected": ("E202 Message Sent/NotSupported",)}
        return {"delivered": ("N202",), "failed": ("E201",), "rejected": ("E202",),
                "no_receipt": ("N201",)}

    def routes(self) -> list[Route]:
        return [Route(("POST",), "/", self.send)]

    async def send(self, request: web.Request) -> web.Response:
        knobs = self.knobs
        if knobs.bad_credentials or request.headers.get("x-api-key") != self.creds["api_key"]:
            return failure("E103", "Invalid API Key.")
        try:
            body = await read_json(request)
        except BadBody:
            return failure("E100", BAD_REQUEST)
        if not isinstance(body, dict):
            return failure("E100", BAD_REQUEST)
        to, sender, text = body.get("to"), body.get("from"), body.get("message-text")
        if (str(body.get("action", "")).lower() != "sendsms" or not to or not sender
                or not isinstance(text, str) or not text):
            return failure("E100", BAD_REQUEST, to)
        if clean_number(sender) is None and not str(sender).isdigit():
            self.refuse(None, to, "E111")  # one message refused without an id (not E10x: auth)
            return failure("E111", "Invalid Sender.", to)
        number = clean_number(to)
        if number is None:
            self.refuse(None, to, "E110")
            return failure("E110", "Invalid Recipient.", to)
        tid = "".join(self.rng.choice(ALNUM) for _ in range(12))
        operator = OPERATORS[int(number[-1]) % len(OPERATORS)]
        self.accept(tid, number, {"from": str(sender), "mask": body.get("from-mask"),
                                  "campaign": body.get("campaign-ref"), "operator": operator,
                                  "format": knobs.postback_format})
        self.refs(request, tid)
        return json_response({"status": "Success", "tracking-id": tid, "to": to, "from": sender,
                              "status-details": "SMS request accepted and queued for delivery"})

    def pushes(self, msg: Message, knobs: Knobs) -> list[Push]:
        out = []
        for t, state in msg.timeline[1:]:
            code_text = "N201" if state == "sent" else msg.code
            code, _, status = code_text.partition(" ")
            if msg.data["format"] == "v1":
                body, ctype = self._v1(msg, t, code, status or V1_STATUS[code]), "application/xml"
            else:
                body, ctype = dumps(self._v2(msg, t, code)), "application/json"
            out.append(Push(due=t, body=body, content_type=ctype, ref=msg.ref, recipient=None,
                            kind=state))
        return out

    @staticmethod
    def _v2(msg: Message, t: float, code: str) -> dict[str, Any]:
        d = msg.data
        body = {"origin": "SMS_MT", "code": code, "sent-as": "SMS", "status": V2_STATUS[code],
                "from": d["from"], "to": msg.recipient, "tracking-id": msg.ref,
                "campaign-ref": d["campaign"] or "", "operator-id": d["operator"][0],
                "operator-name": d["operator"][1],
                "timestamp": msg.wall(t).isoformat(timespec="microseconds")}
        if d["mask"]:
            body["from-mask"] = d["mask"]
        return body

    @staticmethod
    def _v1(msg: Message, t: float, code: str, status: str) -> bytes:
        d = msg.data
        mask = f"<FROM_MASK>{_xml(d['mask'])}</FROM_MASK>" if d["mask"] else ""
        return (
            "<?xml version='1.0'?><POSTBACK><ORIGIN>SMS_MT</ORIGIN>"
            f"<CODE>{code}</CODE><STATUS>{_xml(status)}</STATUS><FROM>{_xml(d['from'])}</FROM>"
            f"{mask}<TO>{msg.recipient}</TO><TRACKINGID>{msg.ref}</TRACKINGID>"
            f"<SPID>{d['operator'][0]}</SPID>"
            f"<TIMESTAMP>{msg.wall(t).isoformat(timespec='seconds')}</TIMESTAMP></POSTBACK>"
        ).encode()

    # -- how an application sends through it (tracker.sandbox.client) --
    @staticmethod
    async def send_call(call, recipients, *, sender, message, bulk, push_url):
        """sendsms for one recipient (Skycore has no bulk call)."""
        body = {"action": "sendsms", "to": recipients[0], "from": sender, "message-text": message}
        answer = await call("POST", call.base + "/", json=body,
                            headers={"x-api-key": call.cfg["api_key"]})
        return body, answer


def _xml(text: Any) -> str:
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("'", "&apos;").replace('"', "&quot;"))


FAKE = Skycore
