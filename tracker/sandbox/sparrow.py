"""Sparrow SMS international (sparrow-international.txt, NOTES.md). One compose call makes a
batch; the tracked unit is (batch uuid, recipient).

- `POST /v1/autho/apitoken/login/` {api_token, partner_token} -> {"data": {"message": "Success",
  "token", "expires_on"}, "meta": {}, "result": "00", "status": "OK"}; the token lasts
  `token_ttl_s` (scaled); errors 401 {"data": {"errors": "Invalid API Token"}, ...}.
- `POST /v1/intlsms/compose/` (Bearer) {data: {text, msg_type}, session: {sender_name, tag,
  recipients}} -> batch_id, valid_recipients, invalid_recipients; result 00 OK, 01 DRAFT (knob
  `account` no_funds: saved, never sent), 11 DATA_ERROR (HTTP 400; when no recipient is valid,
  each is refused without a batch: truth key (sparrow, None, number)).
- `GET /v1/intlsms/compose/report/{uuid}/` aggregated; `.../delivery/` records.delivered and
  records.seen; `.../failed/` records.rejected (refused at compose or by the carrier) and
  records.expired. The page contradicts itself (POST vs GET, `compose/` vs `campaign/`,
  `/delivered` vs `/delivery`): the sandbox serves one variant, its settings `report_method`,
  `report_prefix` and `report_path` (tracker.sandbox.sparrow_settings; `set_report`). The other
  prefix or path answers 404 and the other method 405, plain text as a web server's router
  does. A record is {"to": digits, "ts": "YYYY-MM-DD HH:MM:SS"} or, with knob `bare_records`,
  the bare number string.
- Callbacks to the account URL (`Sandbox.set_postback_url("sparrow", url)`): per recipient
  {"dlr_type": "instant", "dlr_data": [{"ts", "to", "id": batch uuid, "status"}]} with 00 delivered,
  01 seen, 02 expired; and one {"dlr_type": "batch_complete", ...} once the batch is dispatched.
Sparrow has no "failed" in its reports: the sandbox reports a failure as expired. Times without a
zone ("ts") are in its setting `naive_time_zone` (`set_naive_time_zone`), by default Nepal time
(+05:45), like `expires_on`: the sandbox's reading of the vendor.
A compose refused whole with 11 DATA_ERROR ("data.text is required") refuses each number it names:
the truth holds each as (sparrow, None, digits) `rejected`, code 11, as it does the numbers of a
compose without a valid one (code invalid). Refused numbers without digits are not in the truth.
Sandbox choices: the fault knobs' 429 and 500 in the envelope, `result` the HTTP status (the page's
11 means "Message Sending Failed", a refusal), `status` TOO_MANY_REQUESTS / SERVER_ERROR; 502 and
503 a gateway's HTML page; 401 bodies for bad or expired Bearer tokens ({"data": {"errors": ...},
"result": "11", "status": "UNAUTHORIZED"}) and 404 for an unknown batch are not documented.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
from aiohttp import web

from tracker.sandbox.common import (MALFORMABLE, BadBody, Push, Route, Vendor, clean_number,
                                    dumps, json_response, read_json)
from tracker.sandbox.client import SendError
from tracker.sandbox.knobs import Knobs
from tracker.sandbox.sparrow_settings import (REPORT_CHOICES, REPORT_METHODS,  # noqa: F401 - re-exported
                                              REPORT_PATHS, REPORT_PREFIXES, changed, naive, naive_zone,
                                              report_variant, unrouted_answer)
from tracker.sandbox.truth import Message, utcnow

DLR = {"delivered": "00", "read": "01", "expired": "02"}
ACCOUNT_LOGIN = {"suspended": "Account is Expired", "inactive": "Invalid User"}
# The fault knobs' 429 and 500 in Sparrow's envelope (vendor_http.Faults). The page documents only
# results 00, 01 and 11 ("Message Sending Failed", HTTP 400), none of which a throttled or failed
# call is: the sandbox's `result` is the HTTP status. 502 and 503 are a gateway's HTML page.
FAULTS = {429: ("Too Many Requests", "TOO_MANY_REQUESTS"),
          500: ("Internal Server Error", "SERVER_ERROR")}


def envelope(data: Any, result: str = "00", status: str = "OK") -> dict[str, Any]:
    return {"data": data, "meta": {}, "result": result, "status": status}


def fail(http: int, text: str, status: str = "DATA_ERROR", **extra: Any) -> web.Response:
    return json_response(envelope({"errors": text, **extra}, "11", status), status=http)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Sparrow(Vendor):
    name = "sparrow"
    KEYED_BY_RECIPIENT = True
    CREDENTIALS = {"api_token": "sandbox-sparrow-api-token",
                   "partner_token": "sandbox-sparrow-partner-token"}
    SENDER = "SandboxCo"
    PUSH_URL = "account"  # the DLR callback URL, set on the account
    SAMPLE_NUMBER = "97798{:08d}"
    FATE_MAP = {"failed": "expired"}
    CODES = {"delivered": ("00",), "read": ("01",), "expired": ("02",), "rejected": ("rejected",),
             "no_receipt": ("sent",)}

    def __init__(self, sandbox: Any) -> None:
        super().__init__(sandbox)
        self._secret = os.urandom(16)
        self._tokens: dict[str, float] = {}  # token -> expiry (monotonic)
        self.batches: dict[str, dict[str, Any]] = {}

    def routes(self) -> list[Route]:
        return [  # every report variant routed: report() refuses those not served
            Route(("POST",), "/v1/autho/apitoken/login/", self.login),
            Route(("POST",), "/v1/intlsms/compose/", self.compose),
            *(Route(REPORT_METHODS, f"/v1/intlsms/{prefix}/report/{{uuid}}/{tail}", self.report,
                    malformable=True)
              for prefix in REPORT_PREFIXES for tail in ("", *(f"{p}/" for p in REPORT_PATHS), "failed/"))]

    def fault_answer(self, request: web.Request, status: int) -> web.Response:
        if status in FAULTS:
            text, state = FAULTS[status]
            return json_response(envelope({"errors": text}, str(status), state), status=status)
        return super().fault_answer(request, status)

    # -- auth --
    async def login(self, request: web.Request) -> web.Response:
        try:
            body = await read_json(request)
        except BadBody:
            return fail(400, "Invalid request body")
        body = body if isinstance(body, dict) else {}
        knobs = self.knobs
        if knobs.bad_credentials or body.get("api_token") != self.creds["api_token"]:
            return fail(401, "Invalid API Token")
        if body.get("partner_token") != self.creds["partner_token"]:
            return fail(401, "Invalid Partner Token")
        if knobs.account in ACCOUNT_LOGIN:
            return fail(401, ACCOUNT_LOGIN[knobs.account])
        now, wall = self.now(), utcnow()
        ttl = knobs.scaled(knobs.token_ttl_s)
        self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
        token = self._jwt(wall + timedelta(seconds=ttl))
        self._tokens[token] = now + ttl
        return json_response(envelope({
            "message": "Success", "token": token,
            "expires_on": (wall + timedelta(seconds=ttl)).astimezone(self.zone()).isoformat()}))

    def _jwt(self, expires: datetime) -> str:
        head = _b64(b'{"alg":"HS256","typ":"JWT"}')
        claims = _b64(orjson.dumps({"token_type": "access", "exp": int(expires.timestamp()),
                                    "jti": uuid.UUID(int=self.rng.getrandbits(128)).hex,
                                    "user_id": 1}))
        sig = _b64(hmac.new(self._secret, f"{head}.{claims}".encode(), hashlib.sha256).digest())
        return f"{head}.{claims}.{sig}"

    def _guard(self, request: web.Request) -> web.Response | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        expiry = self._tokens.get(token.strip())
        if self.knobs.bad_credentials or scheme.lower() != "bearer" or expiry is None:
            return fail(401, "Invalid Token", "UNAUTHORIZED")
        if expiry <= self.now():
            return fail(401, "Token Expired", "UNAUTHORIZED")
        return None

    # -- compose --
    async def compose(self, request: web.Request) -> web.Response:
        if (denied := self._guard(request)) is not None:
            return denied
        try:
            body = await read_json(request)
        except BadBody:
            return fail(400, "Invalid request body")
        data = body.get("data") if isinstance(body, dict) else None
        session = body.get("session") if isinstance(body, dict) else None
        if not isinstance(data, dict) or not isinstance(session, dict):
            return fail(400, "data and session are required")
        text, recipients = data.get("text"), session.get("recipients")
        if not isinstance(text, str) or not text.strip():
            # 11 DATA_ERROR for the whole compose: each number it names is refused, no batch
            for raw in recipients if isinstance(recipients, list) else ():
                self.refuse(None, raw, "11", {"raw": raw})
            return fail(400, "data.text is required")
        if not isinstance(recipients, list) or not recipients:
            return fail(400, "session.recipients is required")
        valid: dict[str, None] = {}  # distinct, in order
        invalid: list[Any] = []
        for raw in recipients:
            number = clean_number(raw)
            if number is None:
                invalid.append(raw)
            else:
                valid.setdefault(number)
        if not valid:  # refused without a batch: the truth keys them (sparrow, None, number)
            for raw in invalid:
                self.refuse(None, raw, "invalid", {"raw": raw})  # one key per number: merged
            return fail(400, "No valid recipients", invalid_recipients=invalid)
        knobs = self.knobs
        batch_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        parts = 1 if len(text) <= 160 else -(-len(text) // 153)
        draft = knobs.account == "no_funds"
        batch: dict[str, Any] = {
            "uuid": batch_id, "sender_name": str(session.get("sender_name", "")), "text": text,
            "msg_type": str(data.get("msg_type", "")), "tags": session.get("tag") or [],
            "created": utcnow(), "valid": list(valid), "invalid": invalid, "messages": {},
            "draft": draft, "dispatched_at": None,
        }
        self.batches[batch_id] = batch
        self.refs(request, batch_id)
        answer = {"batch_id": batch_id, "credits_required": parts * len(valid),
                  "valid_recipients": len(valid), "invalid_recipients": invalid}
        if draft:
            return json_response(envelope({"message": "Saved as draft (Billing Error)", **answer},
                                          "01", "DRAFT"))
        for number in valid:
            batch["messages"][number] = self.accept(batch_id, number, {"batch": batch_id})
        for raw in invalid:
            self.refuse(batch_id, raw, "invalid", {"batch": batch_id, "raw": raw})
        batch["dispatched_at"] = max(m.time_of("sent") or m.t0 for m in batch["messages"].values())
        self.sandbox.schedule(self.name, [Push(
            due=batch["dispatched_at"], content_type="application/json", ref=batch_id,
            recipient=None, kind="batch_complete", body=dumps({
                "dlr_type": "batch_complete", "dlr_data": {
                    "uuid": batch_id, "status": "dispatched", "accepted_count": str(len(valid)),
                    "rejected_count": str(len(invalid)),
                    "rejected_numbers": [str(r) for r in invalid]}}))])
        return json_response(envelope({"message": "Queued successfully", **answer}))

    def pushes(self, msg: Message, knobs: Knobs) -> list[Push]:
        zone = self.zone()
        return [Push(due=t, content_type="application/json", ref=msg.ref, recipient=msg.recipient,
                     kind=state, body=dumps({"dlr_type": "instant", "dlr_data": [{
                         "ts": naive(msg.wall(t), zone), "to": msg.recipient, "id": msg.ref,
                         "status": DLR[state]}]}))
                for t, state in msg.timeline if state in DLR]

    # -- settings (tracker.sandbox.sparrow_settings) --
    def zone(self) -> timezone:
        """The zone of the times it writes (naive_time_zone)."""
        return naive_zone(self.creds)

    def set_naive_time_zone(self, zone: str | None) -> None:
        """Write times in another zone (`+HH:MM`, `-HH:MM`, `UTC`; None: back to +05:45)."""
        self.sandbox.credentials[self.name] = changed(self.creds, naive_time_zone=zone)

    def report_variant(self, creds: dict[str, str] | None = None) -> tuple[str, str, str]:
        """(method, prefix, delivered/seen path) served: the settings REPORT_CHOICES names."""
        return report_variant(self.creds if creds is None else creds)

    def set_report(self, method: str | None = None, path: str | None = None,
                   prefix: str | None = None) -> None:
        """Serve another report variant (None: that setting back to its default)."""
        self.sandbox.credentials[self.name] = changed(
            self.creds, report_method=method, report_prefix=prefix, report_path=path)

    async def report(self, request: web.Request) -> web.Response:
        method, prefix, path = self.report_variant()
        kind = request.path.rstrip("/").rsplit("/", 1)[-1]
        unrouted = (kind in REPORT_PATHS and kind != path) or f"/{prefix}/report/" not in request.path
        if unrouted or request.method != method:
            request[MALFORMABLE] = False  # the router's answer, not the vendor's
            return unrouted_answer(404 if unrouted else 405, method)
        if (denied := self._guard(request)) is not None:
            return denied
        batch_id = request.match_info["uuid"].strip().lower()
        self.refs(request, batch_id)
        batch = self.batches.get(batch_id)
        if batch is None:
            return fail(404, "Batch not found")
        head = {"uuid": batch_id, "sender_name": batch["sender_name"],
                "created_at": batch["created"].astimezone(self.zone()).isoformat()}
        if kind in ("delivery", "delivered", "failed"):
            head["campaign_name"] = ""
            head["records"] = self._records(batch, kind == "failed")
            return json_response(envelope(head))
        now = self.now()
        n_ok, n_bad = len(batch["valid"]), len(batch["invalid"])
        total = n_ok + n_bad
        status = ("draft" if batch["draft"] else
                  "dispatched" if batch["dispatched_at"] <= now else "queued")
        return json_response(envelope({
            **head, "text": batch["text"], "msg_type": batch["msg_type"], "tags": batch["tags"],
            "rejected": n_bad, "accepted": 0 if batch["draft"] else n_ok, "status": status,
            "total": total,
            "accepted_percentage": 0 if batch["draft"] else round(100 * n_ok / total),
            "rejected_percentage": round(100 * n_bad / total),
            "performed_by": {"uuid": "a2773d0f-99d7-4aac-9937-7629e99bee8e",
                             "name": "Sandbox User", "email": "sandbox@example.invalid"}}))

    def _records(self, batch: dict[str, Any], failed: bool) -> dict[str, list[Any]]:
        now = self.now()
        names = ("rejected", "expired") if failed else ("delivered", "seen")
        records: dict[str, list[Any]] = {n: [] for n in names}
        bare, zone = self.knobs.bare_records, self.zone()

        def add(name: str, number: str, when: datetime) -> None:
            records[name].append(number if bare else {"to": number, "ts": naive(when, zone)})

        if failed:
            for raw in batch["invalid"]:
                add("rejected", str(raw), batch["created"])
        for msg in batch["messages"].values():
            state, since = msg.state_at(now)
            name = "seen" if state == "read" else state
            if name in records:
                add(name, msg.recipient, msg.wall(since))
        return records

    # -- how an application sends through it (tracker.sandbox.client) --
    @staticmethod
    async def send_call(call, recipients, *, sender, message, bulk, push_url):
        """One compose for all recipients, after a login (its token kept in call.memo)."""
        async with call.lock:
            if "token" not in call.memo:
                answer = await call("POST", call.base + "/v1/autho/apitoken/login/", json={
                    "api_token": call.cfg["api_token"], "partner_token": call.cfg["partner_token"]})
                data = answer.get("data") if isinstance(answer, dict) else None
                token = data.get("token") if isinstance(data, dict) else None
                if not token:
                    raise SendError("sparrow: login refused")
                call.memo["token"] = token
        body = {"data": {"text": message, "msg_type": "plain"},
                "session": {"sender_name": sender, "tag": ["sandbox"], "recipients": recipients}}
        answer = await call("POST", call.base + "/v1/intlsms/compose/", json=body,
                            headers={"Authorization": f"Bearer {call.memo['token']}"})
        return body, answer


FAKE = Sparrow
