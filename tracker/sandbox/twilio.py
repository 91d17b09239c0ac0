"""Twilio Programmable Messaging, from Twilio's public API documentation (docs/vendors.md#sources).
HTTP basic auth (AccountSid, AuthToken) on every call.

- `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` form `To`, `From`, `Body`,
  `StatusCallback`? -> 201 and the Message resource (`sid` SM..., `status` "queued", ...), or an
  error object `{"code", "message", "more_info", "status"}`: 21211 invalid To, 21602 no body,
  21604 no From, 20003 bad credentials (401). A 21211, 21602 or 21604 is one message refused
  without a SID: the truth holds its To's digits as `rejected` (none for a To without digits).
- `GET /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json` -> the Message resource as it is
  now: `queued` then `sending` (accepted), `sent`, `delivered` / `read`, or `undelivered` with
  `error_code` and `error_message`; 404 `{"code": 20404}` for a SID it does not know.
- Status callbacks to the `StatusCallback` given at send, one per change after the first
  (`sent`, then the outcome): form-encoded `MessageSid`, `MessageStatus`, `SmsSid`, `SmsStatus`,
  `AccountSid`, `From`, `To`, `ApiVersion`, `ErrorCode` (undelivered), `RawDlrDoneDate`
  (delivered, undelivered), signed with `X-Twilio-Signature` over the StatusCallback URL as
  given (the public one: `Sandbox.set_proxy` carries it to loopback): HMAC-SHA1 with the auth
  token, or, as a Webhook Rule with a SharedKey makes Twilio do, with the shared key's secret and
  its algorithm (HMAC_SHA256 unless told), `X-Twilio-Webhooks-Signature-Settings:
  key=<id>,algorithm=<alg>` added. The knob: the credential `shared_key_secret` (the tracker's
  vendor config key, so `vendor_config` hands it on), given as `Sandbox(credentials={"twilio":
  {"shared_key_secret": ...}})` or by `use_shared_key(secret, algorithm)`.
A message that never left Twilio's queue (30001 queue overflow: "queued for 10 hours and then
they automatically fail"; 30036 validity period expired: "Twilio does not send the message") is
`failed`, never `sent` before it. 30002 (account suspended after the message was queued, before Twilio sent it) is `failed` the same
way; 30009 (missing segment) is `undelivered` after `sent`. The fault knobs answer with Twilio's
error objects 20429 (429), 20500 (500), 20503 (503); a 502 is a gateway's HTML page.
Sandbox choices (the documentation does not say): an inactive,
suspended or unfunded account is 401 with code 20005 on every call, maintenance is 503;
callbacks are sent once (no retries).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from tracker.sandbox.common import Push, Route, Vendor, clean_number, json_response
from tracker.sandbox.knobs import Knobs
from tracker.sandbox.truth import Message

API = "/2010-04-01/Accounts/{account}"
STATUS = {"sent": "sent", "delivered": "delivered", "failed": "undelivered",
          "rejected": "undelivered", "expired": "failed"}
# failed in Twilio's queue: `failed`, never `sent` (30002: the account was suspended after the
# message was queued and before Twilio sent it)
NEVER_SENT = frozenset({"30001", "30002", "30036"})
ERRORS = {"30001": "Queue overflow", "30002": "Account suspended",
          "30003": "Unreachable destination handset", "30009": "Missing segment",
          "30036": "Validity Period Expired",
          "30004": "Message blocked", "30005": "Unknown destination handset",
          "30006": "Landline or unreachable carrier",
          "30007": "Message filtered (carrier violation)", "30008": "Unknown error"}
ACCOUNT_DOWN = ("inactive", "suspended", "no_funds")
# The fault knobs' answers as Twilio's error objects (its error pages 20429, 20500, 20503); a 502
# is a gateway's HTML page (Twilio documents no code for it): vendor_http.Faults.
FAULTS = {429: (20429, "Too Many Requests"), 500: (20500, "Internal Server Error"),
          503: (20503, "Service Unavailable")}
HASHES = {"HMAC_SHA1": hashlib.sha1, "HMAC_SHA256": hashlib.sha256}  # a SharedKey's algorithms
SHARED_KEY_ID = "webhooks_sharedkey_sandbox0000000000000000000"


def error(status: int, code: int, message: str) -> web.Response:
    return json_response({"code": code, "message": message, "status": status,
                          "more_info": f"https://www.twilio.com/docs/errors/{code}"}, status=status)


def sign(token: str, url: str, params: dict[str, str], algorithm: str = "HMAC_SHA1") -> str:
    """The X-Twilio-Signature Twilio puts on a callback (HMAC-SHA1 with the auth token, or a
    SharedKey's algorithm with its secret; base64)."""
    data = url + "".join(k + params[k] for k in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), HASHES[algorithm]).digest()).decode()


class Twilio(Vendor):
    name = "twilio"
    # `read` is WhatsApp's and RCS's: an SMS (all the fake sends) is at most `delivered`.
    FATE_MAP = {"read": "delivered"}
    # A fate's code is drawn uniformly from its tuple: repeats are weights. 30002 (account
    # suspended) and 30009 (missing segment) come at 1 in 11 of failures each.
    CODES = {"delivered": ("delivered",),
             "failed": ("30003", "30008", "30001") * 3 + ("30002", "30009"),
             "rejected": ("30004", "30005", "30006", "30007"), "expired": ("30036",),
             "no_receipt": ("sent",)}
    CREDENTIALS = {"account_sid": "AC00000000000000000000000000sandbox",
                   "auth_token": "sandbox-twilio-auth-token"}
    # An API key of the account (Twilio's advice for production): its SID and secret are the
    # API's basic credentials instead of the account SID and auth token.
    API_KEY = {"api_key_sid": "SK0000000000000000000000000sandbox",
               "api_key_secret": "sandbox-twilio-api-key-secret"}
    SENDER = "+15005550006"
    BULK_SEND = False  # one message per call
    PUSH_URL = "per_send"  # StatusCallback with each message
    SAMPLE_NUMBER = "1415{:07d}"

    def __init__(self, sandbox: Any) -> None:
        super().__init__(sandbox)
        self.shared_key_algorithm = "HMAC_SHA256"  # with creds["shared_key_secret"]

    def use_shared_key(self, secret: str | None, algorithm: str = "HMAC_SHA256") -> None:
        """Sign the callbacks of messages sent from now on with a SharedKey (its secret and
        algorithm: HMAC_SHA1 or HMAC_SHA256), as a Webhook Rule makes Twilio do; None: with the
        auth token again. The secret is a credential, so that `vendor_config` hands it on."""
        if algorithm not in HASHES:
            raise ValueError(f"twilio sandbox: algorithm {' | '.join(HASHES)}")
        creds = {k: v for k, v in self.creds.items() if k != "shared_key_secret"}
        self.sandbox.credentials[self.name] = creds | ({"shared_key_secret": secret} if secret else {})
        self.shared_key_algorithm = algorithm

    def signed(self, url: str, params: dict[str, str]) -> dict[str, str]:
        """A callback's signature headers, as Twilio signs it now."""
        secret = self.creds.get("shared_key_secret")
        if not secret:
            return {"X-Twilio-Signature": sign(self.creds["auth_token"], url, params)}
        algorithm = self.shared_key_algorithm
        return {"X-Twilio-Signature": sign(secret, url, params, algorithm),
                "X-Twilio-Webhooks-Signature-Settings": f"key={SHARED_KEY_ID},algorithm={algorithm}"}

    def routes(self) -> list[Route]:
        return [Route(("POST",), API + "/Messages.json", self.create),
                Route(("GET",), API + "/Messages/{sid}.json", self.fetch, malformable=True)]

    def fault_answer(self, request: web.Request, status: int) -> web.Response:
        if status in FAULTS:
            return error(status, *FAULTS[status])
        return super().fault_answer(request, status)

    # -- guards --
    def _guard(self, request: web.Request) -> web.Response | None:
        knobs = self.knobs
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        try:
            user, _, password = base64.b64decode(given.strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            user = password = ""
        known = {(self.creds["account_sid"], self.creds["auth_token"]),
                 (self.API_KEY["api_key_sid"], self.API_KEY["api_key_secret"])}
        if (knobs.bad_credentials or scheme.lower() != "basic" or (user, password) not in known
                or request.match_info["account"] != self.creds["account_sid"]):
            return error(401, 20003, "Authenticate")
        if knobs.account in ACCOUNT_DOWN:
            return error(401, 20005, "Account not active")
        if knobs.account == "maintenance":
            return error(503, 20503, "Service unavailable")
        return None

    # -- the Message resource --
    @staticmethod
    def status(msg: Message, state: str) -> str | None:
        """Twilio's status for a step of the timeline; None: a step it does not show."""
        if msg.code in NEVER_SENT:
            return None if state == "sent" else "failed"
        return STATUS[state]

    def resource(self, msg: Message, state: str, since: float) -> dict[str, Any]:
        d = msg.data
        status = None if state == "accepted" else self.status(msg, state)
        if status is None:  # accepted, or sent where Twilio never sent it: still in its queue
            since = since if state == "accepted" else msg.t0
            sent_at = msg.time_of("sent") or since
            status = "queued" if self.now() - since < (sent_at - since) / 2 else "sending"
        failed = status in ("undelivered", "failed")
        sent = status not in ("queued", "sending") and msg.code not in NEVER_SENT
        sid, account = msg.ref, self.creds["account_sid"]
        return {
            "account_sid": account, "api_version": "2010-04-01", "body": d["body"],
            "date_created": format_datetime(msg.wall0), "date_sent": (
                format_datetime(msg.wall(msg.time_of("sent"))) if sent else None),
            "date_updated": format_datetime(msg.wall(since)), "direction": "outbound-api",
            "error_code": int(msg.code) if failed else None,
            "error_message": ERRORS.get(msg.code) if failed else None,
            "from": d["from"], "messaging_service_sid": None, "num_media": "0",
            "num_segments": "1", "price": None, "price_unit": "USD", "sid": sid,
            "status": status, "to": "+" + msg.recipient,
            "uri": f"/2010-04-01/Accounts/{account}/Messages/{sid}.json",
        }

    async def create(self, request: web.Request) -> web.Response:
        if (denied := self._guard(request)) is not None:
            return denied
        form = {k: str(v) for k, v in (await request.post()).items()}
        to, sender, body = form.get("To", ""), form.get("From", ""), form.get("Body", "")
        if not sender:  # refused without a SID: the tracker keys it by the To's digits
            self.refuse(None, to, "21604")
            return error(400, 21604, "A 'From' phone number is required.")
        if not body.strip():
            self.refuse(None, to, "21602")
            return error(400, 21602, "Message body is required.")
        number = clean_number(to) if to.strip().startswith("+") else None
        if number is None:
            self.refuse(None, to, "21211")
            return error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        sid = "SM%032x" % self.rng.getrandbits(128)
        msg = self.accept(sid, number, {"body": body, "from": sender,
                                        "callback": form.get("StatusCallback") or None})
        self.refs(request, sid)
        answer = self.resource(msg, "accepted", msg.t0)
        return json_response({**answer, "status": "queued"}, status=201)

    async def fetch(self, request: web.Request) -> web.Response:
        if (denied := self._guard(request)) is not None:
            return denied
        sid = request.match_info["sid"]
        self.refs(request, sid)
        msg = self.sandbox.message(self.name, sid)
        if msg is None:
            return error(404, 20404, f"The requested resource /2010-04-01/Accounts/"
                                     f"{self.creds['account_sid']}/Messages/{sid}.json was not found")
        state, since = msg.state_at(self.now())
        return json_response(self.resource(msg, state, since))

    # -- status callbacks --
    def pushes(self, msg: Message, knobs: Knobs) -> list[Push]:
        url = msg.data.get("callback")
        if not url:
            return []
        out = []
        for t, state in msg.timeline[1:]:
            status = self.status(msg, state)
            if status is None:
                continue
            params = {"AccountSid": self.creds["account_sid"], "ApiVersion": "2010-04-01",
                      "From": msg.data["from"], "MessageSid": msg.ref, "MessageStatus": status,
                      "SmsSid": msg.ref, "SmsStatus": status, "To": "+" + msg.recipient}
            if status in ("undelivered", "failed"):
                params["ErrorCode"] = msg.code
            if status in ("delivered", "undelivered"):
                params["RawDlrDoneDate"] = msg.wall(t).strftime("%y%m%d%H%M")
            out.append(Push(due=t, body=urlencode(params).encode(), kind=state, url=url,
                            content_type="application/x-www-form-urlencoded", ref=msg.ref,
                            recipient=None,
                            headers=self.signed(url, params)))
        return out

    # -- how an application sends through it (tracker.sandbox.client) --
    @staticmethod
    async def send_call(call, recipients, *, sender, message, bulk, push_url):
        """One message: POST Messages.json with basic auth; the request kept has no credentials."""
        form = {"To": "+" + recipients[0].lstrip("+"), "From": sender, "Body": message}
        if push_url:
            form["StatusCallback"] = push_url
        sid = call.cfg["account_sid"]
        basic = base64.b64encode(f"{sid}:{call.cfg['auth_token']}".encode()).decode()
        answer = await call("POST", f"{call.base}/2010-04-01/Accounts/{sid}/Messages.json",
                            data=form, headers={"Authorization": f"Basic {basic}"})
        return form, answer


FAKE = Twilio
