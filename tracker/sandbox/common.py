"""What the four fake vendors share: the base class, routes, JSON helpers, number checks."""
from __future__ import annotations

import asyncio
import ipaddress
import random
import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, ClassVar

import orjson
from aiohttp import web
from yarl import URL

from tracker.sandbox.knobs import Knobs
from tracker.sandbox.truth import Message, plan, refused, utcnow

if TYPE_CHECKING:
    from tracker.sandbox.client import Caller
    from tracker.sandbox.server import Sandbox

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _request_key(name: str, kind: type) -> Any:
    factory = getattr(web, "RequestKey", None)  # aiohttp >= 3.12
    return factory(name, kind) if factory else name


REFS: Any = _request_key("sandbox_refs", list)  # what a request was about, for the request log
MALFORMABLE: Any = _request_key("sandbox_malformable", bool)


@dataclass(frozen=True, slots=True)
class Route:
    methods: tuple[str, ...]
    path: str  # under the vendor's prefix, e.g. "/api/send/"
    handler: Handler
    malformable: bool = False  # a status/list/report answer the malformed knob may garble


@dataclass(slots=True)
class Push:
    """One postback the vendor will send."""

    due: float  # monotonic
    body: bytes
    content_type: str
    ref: str | None
    recipient: str | None
    kind: str  # e.g. "sent", "delivered", "batch_complete"
    url: str | None = None  # None: the vendor's account-wide URL at sending time
    attempt: int = 0
    malformed: bool = False  # the first attempt goes out garbled
    duplicate: bool = False
    headers: dict[str, str] | None = None  # besides Content-Type (a vendor's signature)


def dumps(data: Any) -> bytes:
    return orjson.dumps(data)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> web.Response:
    return web.Response(body=dumps(data), status=status, headers=headers,
                        content_type="application/json")


class BadBody(Exception):
    pass


async def read_json(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadBody("invalid JSON document") from exc


async def read_params(request: web.Request) -> dict[str, str]:
    """Query string, form body or JSON object, merged (Spark Sender takes any of them)."""
    params = {k: v for k, v in request.query.items()}
    if request.method == "POST" and request.can_read_body:
        ctype = request.content_type
        if ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            params.update({k: str(v) for k, v in form.items()})
        elif ctype == "application/json":
            try:
                body = orjson.loads(await request.read())
            except orjson.JSONDecodeError:
                body = None
            if isinstance(body, dict):
                params.update({k: "" if v is None else str(v) for k, v in body.items()})
    return params


_CLEAN = re.compile(r"[\s\-()]")
_E164 = re.compile(r"^\+?[1-9]\d{7,14}$")


def clean_number(raw: Any) -> str | None:
    """'+91-(980) 555 0000' -> '919805550000'; None when it is not an international number."""
    if not isinstance(raw, (str, int)) or isinstance(raw, bool):
        return None
    text = _CLEAN.sub("", str(raw))
    return text.lstrip("+") if _E164.match(text) else None


def digits_or_raw(raw: Any) -> str:
    """A number's digits, or the raw text if it has none (bench/_chaos/load.py keys the load's
    refusals so; the fakes' truth uses `refused_digits`, which leaves digitless numbers out)."""
    digits = "".join(ch for ch in str(raw) if ch.isdigit())
    return digits or str(raw).strip()


def refused_digits(raw: Any) -> str | None:
    """A refused number as the tracker keys it (tracker.adapters.base.recipient_digits): its
    decimal digits (of any script, as ASCII digits; a '+', spaces, dashes and letters dropped),
    or None when it has none or is not a string or an integer. A number without digits names no
    message the tracker can have (docs/vendors.md: such recipients are skipped), so the truth
    leaves it out (Vendor.refuse)."""
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        return None
    text = str(raw)
    return "".join(ch if ch <= "9" else str(unicodedata.decimal(ch))
                   for ch in text if ch.isdecimal()) or None


def generic_fault(status: int) -> web.Response:
    """A fault knob's answer where the vendor documents none: a 429 as a bare JSON error, a 5xx
    as a web server's or gateway's HTML page."""
    if status == 429:
        return json_response({"error": "Too Many Requests"}, status=429)
    return web.Response(status=status, text=f"<html><body><h1>{status} Server Error</h1>"
                        "</body></html>", content_type="text/html")


def is_loopback_url(url: str) -> bool:
    try:
        u = URL(url)
    except (ValueError, TypeError):
        return False
    if u.scheme not in ("http", "https") or not u.host:
        return False
    if u.host == "localhost":
        return True
    try:
        return ipaddress.ip_address(u.host).is_loopback
    except ValueError:
        return False


class Vendor:
    """One fake vendor. Subclasses declare routes, what fates they can tell and their codes,
    the credentials they expect, and how an application sends through them (`send_call`, for
    tracker.sandbox.client). Each vendor's module names its class FAKE (the registry:
    tracker.sandbox.server.VENDOR_CLASSES, one per registered adapter)."""

    name: ClassVar[str]
    FATE_MAP: ClassVar[dict[str, str]] = {}  # fates this vendor cannot tell -> what it reports
    CODES: ClassVar[dict[str, tuple[str, ...]]]  # fate -> the vendor's codes for it
    KEYED_BY_RECIPIENT: ClassVar[bool] = False
    TEMP_FAILURES: ClassVar[bool] = False
    CREDENTIALS: ClassVar[dict[str, str]] = {}  # what it expects: the tracker's vendor config keys
    SENDER: ClassVar[str] = "SANDBOX"  # a sender id it takes
    BULK_SEND: ClassVar[bool] = True  # one send call may name many recipients
    # Where its postbacks go: "account" (one URL set on the account, Sandbox.set_postback_url),
    # "per_send" (a URL given with each single send), None (it sends none).
    PUSH_URL: ClassVar[str | None] = None
    SAMPLE_NUMBER: ClassVar[str] = "1555{:07d}"  # sample recipients (the demo), from an int

    @staticmethod
    async def send_call(call: "Caller", recipients: list[str], *, sender: str, message: str,
                        bulk: bool, push_url: str | None) -> tuple[dict[str, Any], Any]:
        """One send call as an application makes it: (the request as sent, without
        credentials; the vendor's raw JSON answer)."""
        raise NotImplementedError

    def __init__(self, sandbox: "Sandbox") -> None:
        self.sandbox = sandbox
        self.messages: dict[str, Message] = {}
        self.rng = random.Random(f"{self.knobs.seed}|{self.name}")

    # -- shared context --
    @property
    def knobs(self) -> Knobs:
        return self.sandbox.get_knobs(self.name)

    @property
    def creds(self) -> dict[str, str]:
        return self.sandbox.credentials[self.name]

    def reseed(self, seed: int) -> None:
        self.rng = random.Random(f"{seed}|{self.name}")

    @staticmethod
    def now() -> float:
        return asyncio.get_running_loop().time()

    def routes(self) -> list[Route]:
        raise NotImplementedError

    def fate_map(self, knobs: Knobs) -> dict[str, str]:
        return self.FATE_MAP

    def codes(self, knobs: Knobs) -> dict[str, tuple[str, ...]]:
        return self.CODES

    # -- messages --
    def accept(self, ref: str, recipient: str, data: dict[str, Any] | None = None) -> Message:
        knobs = self.knobs
        msg, rng = plan(self.name, ref, recipient, knobs=knobs, now=self.now(), wall=utcnow(),
                        fate_map=self.fate_map(knobs), codes=self.codes(knobs),
                        keyed_by_recipient=self.KEYED_BY_RECIPIENT,
                        temp_failures=self.TEMP_FAILURES, data=data)
        self.sandbox.record(msg)
        pushes = self.pushes(msg, knobs)
        if pushes:
            self.sandbox.schedule(self.name, quirks(pushes, knobs, rng))
        return msg

    def refuse(self, ref: str | None, raw: Any, code: str,
               data: dict[str, Any] | None = None) -> Message | None:
        """Record a number refused at send time as `rejected`, keyed by its digits as the tracker
        keys it (`refused_digits`: the raw number as given, or its digits); None, and nothing
        recorded, for a number without digits, which names no message the tracker can have."""
        number = refused_digits(raw)
        if number is None:
            return None
        msg = refused(self.name, ref, number, code, now=self.now(), wall=utcnow(),
                      keyed_by_recipient=self.KEYED_BY_RECIPIENT, data=data)
        self.sandbox.record(msg)
        return msg

    def fault_answer(self, request: web.Request, status: int) -> web.Response:
        """What this vendor answers when a fault knob (rate limit, throttle_share,
        server_error_share) fails `request` with `status` (429, 500, 502 or 503), before its
        handler runs; the middleware adds Retry-After to a 429. By default `generic_fault`: a
        vendor whose pages document no error shape for these statuses."""
        return generic_fault(status)

    def pushes(self, msg: Message, knobs: Knobs) -> list[Push]:
        """The postbacks this message will cause (vendors with callbacks override)."""
        return []

    @staticmethod
    def refs(request: web.Request, *refs: str | None) -> None:
        """Note what a request was about, for the request log."""
        request[REFS].extend(r for r in refs if r)


def quirks(pushes: list[Push], knobs: Knobs, rng: random.Random) -> list[Push]:
    """Apply the postback knobs to one message's postbacks: out of order, malformed, duplicate."""
    pushes = sorted(pushes, key=lambda p: p.due)
    if len(pushes) >= 2 and rng.random() < knobs.out_of_order_share:
        first = pushes.pop(0)  # the 'sent' one goes out after the final one
        first.due = pushes[-1].due + knobs.scaled(rng.uniform(0.1, 1.0))
        pushes.append(first)
    out: list[Push] = []
    for p in pushes:
        p.malformed = rng.random() < knobs.malformed_share
        out.append(p)
        if rng.random() < knobs.duplicate_share:
            out.append(Push(due=p.due + knobs.scaled(rng.uniform(0.1, 2.0)), body=p.body,
                            content_type=p.content_type, ref=p.ref, recipient=p.recipient,
                            kind=p.kind, url=p.url, duplicate=True, headers=p.headers))
    return out
