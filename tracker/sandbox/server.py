"""The sandbox: one aiohttp server on loopback serving a fake of every registered vendor under its
path prefix (`/sparksender`, `/engagespark`, ...), plus admin routes under `/_sandbox`. Here: its
state (knobs, credentials, ground truth, the request and postback logs) and its lifecycle; the
vendors' routes and the faults played on them: vendor_http.py; the admin routes: admin.py.

Neither the truth nor the logs ever hold credentials (no query strings, no bodies, no URLs of
postbacks, whose path carries the receiver's token).
"""
from __future__ import annotations

import asyncio
import collections
import ipaddress
import time
from importlib import import_module
from typing import Any, Iterable, Mapping

import aiohttp
from aiohttp import web

from tracker.adapters import VENDORS  # every registered vendor has its fake here
from tracker.sandbox.admin import add_admin_routes
from tracker.sandbox.common import REFS, Push, Vendor, dumps, is_loopback_url
from tracker.sandbox.knobs import Knobs
from tracker.sandbox.postbacks import Dispatcher
from tracker.sandbox.truth import RANK, Message, iso, merged_truth, utcnow
from tracker.sandbox.vendor_http import Faults, add_vendor_routes

# One fake per registered vendor: tracker/sandbox/<vendor>.py names its class FAKE.
VENDOR_CLASSES: dict[str, type[Vendor]] = {
    v: import_module(f"tracker.sandbox.{v}").FAKE for v in VENDORS}
DEFAULT_CREDENTIALS: dict[str, dict[str, str]] = {
    v: dict(fake.CREDENTIALS) for v, fake in VENDOR_CLASSES.items()}

TruthKey = tuple[str, str | None, str | None]


class Sandbox:
    """Fake servers of the four vendors, with knobs, ground truth and a request log.

    Knobs: `knobs` applies to every vendor, `vendor_knobs` overrides per vendor (a Knobs or a
    dict of changes), `seed` (if given) overrides the knobs' seed everywhere.
    """

    def __init__(self, knobs: Knobs | Mapping[str, Any] | None = None, *, seed: int | None = None,
                 vendor_knobs: Mapping[str, Knobs | Mapping[str, Any]] | None = None,
                 credentials: Mapping[str, Mapping[str, str]] | None = None,
                 log_max: int = 100_000) -> None:
        base = knobs if isinstance(knobs, Knobs) else Knobs().with_changes(knobs or {})
        if seed is not None:
            base = base.with_changes({"seed": seed})
        self._knobs: dict[str, Knobs] = {v: base for v in VENDORS}
        for vendor, k in (vendor_knobs or {}).items():
            self._check_vendor(vendor)
            self._knobs[vendor] = k if isinstance(k, Knobs) else base.with_changes(k)
        self.credentials: dict[str, dict[str, str]] = {
            v: dict(DEFAULT_CREDENTIALS[v], **dict((credentials or {}).get(v, {})))
            for v in VENDORS}
        self.postback_urls: dict[str, str] = {}
        self.proxies: dict[str, str] = {}  # public URL prefix -> loopback prefix (set_proxy)
        self.requests: collections.deque[dict[str, Any]] = collections.deque(maxlen=log_max)
        self.postbacks: collections.deque[dict[str, Any]] = collections.deque(maxlen=log_max)
        self.request_count = 0  # ever logged: the deques keep only the last log_max
        self.postback_count = 0
        self._messages: dict[TruthKey, list[Message]] = {}  # every timeline under a key
        self.vendors: dict[str, Vendor] = {v: VENDOR_CLASSES[v](self) for v in VENDORS}
        self._dispatchers: dict[str, Dispatcher] = {}
        self._faults = Faults(self)
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self.url: str | None = None

    # -- lifecycle --
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if host != "localhost" and not _is_loopback_ip(host):
            raise ValueError("the sandbox listens on loopback addresses only")
        if self._runner is not None:
            raise RuntimeError("sandbox already started")
        app = web.Application(middlewares=[self._faults.middleware], client_max_size=4 * 1024 * 1024)
        add_admin_routes(app, self)
        add_vendor_routes(app, self)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0,
                               handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        sock_host, sock_port = runner.addresses[0][:2]
        self.url = f"http://{'[' + sock_host + ']' if ':' in sock_host else sock_host}:{sock_port}"
        return self.url

    async def stop(self) -> None:
        for d in self._dispatchers.values():
            await d.stop()
        self._dispatchers.clear()
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "Sandbox":
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- addresses and configuration --
    def base_url(self, vendor: str) -> str:
        self._check_vendor(vendor)
        if self.url is None:
            raise RuntimeError("sandbox not started")
        return f"{self.url}/{vendor}"

    def vendor_config(self, vendor: str) -> dict[str, str]:
        """`base_url` plus credentials: the tracker's vendor config keys for this vendor."""
        return {"base_url": self.base_url(vendor), **self.credentials[vendor]}

    def set_postback_url(self, vendor: str, url: str | None) -> None:
        """The account-wide postback URL (Skycore postbacks, Sparrow callbacks)."""
        self._check_vendor(vendor)
        if url is None:
            self.postback_urls.pop(vendor, None)
            return
        if not is_loopback_url(url):
            raise ValueError("postback URLs must point at a loopback address")
        self.postback_urls[vendor] = url

    def set_proxy(self, public_base: str, local_base: str | None) -> None:
        """Postbacks addressed under `public_base` (what the vendor is told, and signs) go to
        `local_base` on loopback instead, as a reverse proxy in front of the receiver takes them."""
        if local_base is None:
            self.proxies.pop(public_base.rstrip("/"), None)
            return
        if not is_loopback_url(local_base):
            raise ValueError("a proxy must forward to a loopback address")
        self.proxies[public_base.rstrip("/")] = local_base.rstrip("/")

    def via_proxy(self, url: str) -> str:
        """Where a postback addressed to `url` really goes (set_proxy)."""
        for public, local in self.proxies.items():
            if url == public or url.startswith(public + "/") or url.startswith(public + "?"):
                return local + url[len(public):]
        return url

    def get_knobs(self, vendor: str) -> Knobs:
        return self._knobs[vendor]

    def set_knobs(self, vendor: str | None = None, **changes: Any) -> None:
        """Change knobs for one vendor, or all when `vendor` is None."""
        targets = [vendor] if vendor else list(VENDORS)
        new = {}
        for v in targets:
            self._check_vendor(v)
            new[v] = self._knobs[v].with_changes(changes)  # validate all before applying any
        for v, k in new.items():
            if k.seed != self._knobs[v].seed:
                self.vendors[v].reseed(k.seed)
            self._knobs[v] = k

    def configure(self, spec: Mapping[str, Any]) -> None:
        """Apply a knob spec: top-level knobs for every vendor, then `"vendors": {name: {...}}`."""
        if not isinstance(spec, Mapping):
            raise ValueError("knob spec must be a JSON object")
        common = {k: v for k, v in spec.items() if k != "vendors"}
        per = spec.get("vendors") or {}
        if not isinstance(per, Mapping):
            raise ValueError("'vendors' must map vendor names to knob objects")
        for v, changes in per.items():  # validate everything first
            self._check_vendor(v)
            if not isinstance(changes, Mapping):
                raise ValueError(f"knobs for {v} must be an object")
            self._knobs[v].with_changes({**common, **changes})
        if common:
            self.set_knobs(None, **common)
        for v, changes in per.items():
            self.set_knobs(v, **changes)

    # -- ground truth --
    def record(self, msg: Message) -> None:
        """Add a timeline under its key; a second one never replaces the first (truth() merges
        them: the highest state either reports)."""
        self._messages.setdefault(msg.key, []).append(msg)

    def truth(self) -> dict[TruthKey, dict[str, Any]]:
        """(vendor, vendor_ref, recipient for Sparrow else None) -> what the message ends as.

        vendor_ref is None (and recipient set) for a number the vendor refused without an id:
        its digits, as the tracker keys the message it makes of the refusal (a '+', spaces and
        letters dropped); a refused number without digits, which the tracker skips, is not here."""
        now = asyncio.get_running_loop().time()
        return {key: merged_truth(msgs, now) for key, msgs in self._messages.items()}

    def expected(self, window_s: float, pushes: bool | Iterable[str] = True) -> dict[TruthKey, str]:
        """Key -> what a tracker with this tracking window ends with (Message.expected): the
        truth's `final` unless the outcome settles after the window and is not pushed to it.
        `pushes`: whether the vendors' postbacks reach the tracker: all, none, or these vendors'."""
        pushing = set(VENDORS) if pushes is True else set() if pushes is False else set(pushes)

        def one(m: Message) -> str:
            fake = self.vendors[m.vendor]
            pushed = ({p.kind for p in fake.pushes(m, self._knobs[m.vendor])}
                      if m.vendor in pushing and m.ref is not None else ())
            return m.expected(window_s, pushed)

        return {key: max((one(m) for m in msgs), key=RANK.__getitem__)
                for key, msgs in self._messages.items()}

    def message(self, vendor: str, ref: str, recipient: str | None = None) -> Message | None:
        """The first timeline recorded under the key (the one the vendor accepted, if any)."""
        msgs = self._messages.get((vendor, ref, recipient))
        return msgs[0] if msgs else None

    # -- postbacks and the request log --
    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64),
                json_serialize=lambda o: dumps(o).decode())
        return self._http

    def schedule(self, vendor: str, pushes: Iterable[Push]) -> None:
        d = self._dispatchers.get(vendor)
        if d is None:
            d = self._dispatchers[vendor] = Dispatcher(self, vendor)
        for p in pushes:
            d.schedule(p)

    def log_postback(self, entry: dict[str, Any]) -> None:
        self.postback_count += 1
        entry["seq"] = self.postback_count
        self.postbacks.append(entry)

    def pending_postbacks(self, vendor: str | None = None) -> int:
        return sum(d.pending for v, d in self._dispatchers.items() if vendor in (None, v))

    def log_request(self, request: web.Request, vendor: str, status: int,
                    retry_after: str | None = None, garbled: str | None = None) -> None:
        self.request_count += 1
        self.requests.append({
            "seq": self.request_count, "t": time.monotonic(), "wall": iso(utcnow()),
            "vendor": vendor, "method": request.method, "path": request.path,
            "status": status, "retry_after": retry_after, "garbled": garbled,
            "refs": list(request.get(REFS, ())),
        })

    @staticmethod
    def _check_vendor(vendor: str) -> None:
        if vendor not in VENDORS:
            raise ValueError(f"unknown vendor {vendor!r}; one of {', '.join(VENDORS)}")


def _is_loopback_ip(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
