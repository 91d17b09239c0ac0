"""A small sending client that behaves like a business application: it sends messages through a
vendor's send API over real HTTP and keeps, for each send call, the request as sent and the
vendor's raw answer, ready for the tracker's intake table (`request` / `response` jsonb).

    calls = await send_many(sandbox, "sparrow", ["9779800000001", "9779800000002"], bulk=True)
    for vendor, request, response in calls: ...

How each vendor is called is its fake's `send_call` (tracker.sandbox.<vendor>): `bulk=True` means one
call for all recipients where the vendor has such a call (Spark Sender /api/bulkSMS/, the
engageSPARK bulk phonenumbers call, one Sparrow compose), else one call per recipient.
`client_push_url` goes with single sends to a vendor that takes a postback URL per send
(engageSPARK `clientPushURL`). The request kept never holds credentials. A 429 (after
Retry-After, capped) or a 5xx is retried a few times; what still fails raises SendError.
"""
from __future__ import annotations

import asyncio
from typing import Any, Mapping, NamedTuple

import aiohttp
import orjson


class SendCall(NamedTuple):
    vendor: str
    request: dict[str, Any]  # JSON-able: the request as sent (no credentials)
    response: Any  # the vendor's raw JSON answer


class SendError(RuntimeError):
    pass


def _config(target: Any, vendor: str) -> dict[str, str]:
    if hasattr(target, "vendor_config"):
        return target.vendor_config(vendor)
    cfg = target.get(vendor, target) if isinstance(target, Mapping) else None
    if not isinstance(cfg, Mapping) or "base_url" not in cfg:
        raise ValueError("target: a Sandbox, or a mapping with base_url and credentials "
                         "(per vendor or for this vendor)")
    return {k: str(v) for k, v in cfg.items()}


async def send_many(target: Any, vendor: str, recipients: list[str], *, bulk: bool = False,
                    client_push_url: str | None = None, message: str = "Hello from the sandbox",
                    sender: str | None = None, session: aiohttp.ClientSession | None = None,
                    concurrency: int = 8, attempts: int = 5) -> list[SendCall]:
    """Send `message` to `recipients` through `vendor`; one SendCall per HTTP send call."""
    from tracker.sandbox.server import VENDOR_CLASSES  # (the server imports every fake)

    fake = VENDOR_CLASSES[vendor]
    cfg = _config(target, vendor)
    sender = sender or fake.SENDER
    bulk = bulk and fake.BULK_SEND
    if client_push_url and (fake.PUSH_URL != "per_send" or bulk):
        raise ValueError(f"client_push_url: {vendor} takes no postback URL with "
                         f"{'a bulk send' if bulk else 'a send'}")
    own = session is None
    http = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    try:
        caller = Caller(http, cfg, vendor, attempts)
        batches = ([list(recipients)] if recipients else []) if bulk else [[r] for r in recipients]
        limit = asyncio.Semaphore(max(1, concurrency))

        async def one(batch: list[str]) -> SendCall:
            async with limit:
                request, answer = await fake.send_call(caller, batch, sender=sender,
                                                       message=message, bulk=bulk,
                                                       push_url=client_push_url)
                return SendCall(vendor, request, answer)

        return list(await asyncio.gather(*(one(b) for b in batches)))
    finally:
        if own:
            await http.close()


class Caller:
    """An application's calls to one vendor: `cfg` (base_url, credentials), JSON answers, 429
    and 5xx retried; `memo` keeps what the calls share (Sparrow's login token)."""

    def __init__(self, http: aiohttp.ClientSession, cfg: dict[str, str], vendor: str,
                 attempts: int) -> None:
        self.http, self.cfg, self.vendor, self.attempts = http, cfg, vendor, attempts
        self.base = cfg["base_url"].rstrip("/")
        self.memo: dict[str, Any] = {}
        self.lock = asyncio.Lock()

    async def __call__(self, method: str, url: str, **kw: Any) -> Any:
        delay = 0.05
        for attempt in range(self.attempts):
            async with self.http.request(method, url, **kw) as resp:
                body = await resp.read()
                if resp.status == 429 or resp.status >= 500:
                    if attempt + 1 < self.attempts:
                        retry = resp.headers.get("Retry-After", "")
                        await asyncio.sleep(min(float(retry), 5.0) if retry.isdigit() else delay)
                        delay *= 2
                        continue
                    raise SendError(
                        f"{self.vendor}: HTTP {resp.status} after {self.attempts} attempts")
                try:
                    return orjson.loads(body)
                except orjson.JSONDecodeError as exc:
                    raise SendError(f"{self.vendor}: HTTP {resp.status}, not JSON") from exc
        raise SendError(f"{self.vendor}: no attempts made")
