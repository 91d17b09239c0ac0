"""A small sending client that behaves like a business application: it sends messages through a
vendor's send API over real HTTP and keeps, for each send call, the request as sent and the
vendor's raw answer, ready for the tracker's intake table (`request` / `response` jsonb).

    calls = await send_many(sandbox, "sparrow", ["9779800000001", "9779800000002"], bulk=True)
    for vendor, request, response in calls: ...

Per vendor, `bulk=True` means: Spark Sender /api/bulkSMS/, engageSPARK the bulk phonenumbers
call, Sparrow one compose for all recipients; Skycore has no bulk call (one send per recipient).
`bulk=False` makes one call per recipient (engageSPARK: /v1/sms/phonenumber, which takes
`client_push_url`). The request kept for Spark Sender is its parameters without `api_key`.
A 429 (after Retry-After, capped) or a 5xx is retried a few times; what still fails raises
SendError.
"""
from __future__ import annotations

import asyncio
from typing import Any, Mapping, NamedTuple

import aiohttp
import orjson

SENDERS = {"sparksender": "SparkDEMO", "engagespark": "engageSPARK", "skycore": "00000",
           "sparrow": "SandboxCo"}


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
    cfg = _config(target, vendor)
    sender = sender or SENDERS[vendor]
    if client_push_url and (vendor != "engagespark" or bulk):
        raise ValueError("client_push_url: only engageSPARK single sends take a push URL")
    own = session is None
    http = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    try:
        sender_ = _Sender(http, cfg, vendor, sender, message, attempts)
        if bulk and vendor != "skycore":
            batches = [list(recipients)] if recipients else []
        else:
            batches = [[r] for r in recipients]
        limit = asyncio.Semaphore(max(1, concurrency))

        async def one(batch: list[str]) -> SendCall:
            async with limit:
                return await sender_.send(batch, bulk, client_push_url)

        return list(await asyncio.gather(*(one(b) for b in batches)))
    finally:
        if own:
            await http.close()


class _Sender:
    def __init__(self, http: aiohttp.ClientSession, cfg: dict[str, str], vendor: str,
                 sender: str, message: str, attempts: int) -> None:
        self.http, self.cfg, self.vendor = http, cfg, vendor
        self.sender, self.message, self.attempts = sender, message, attempts
        self.base = cfg["base_url"].rstrip("/")
        self._token: str | None = None
        self._login_lock = asyncio.Lock()

    async def send(self, batch: list[str], bulk: bool, push_url: str | None) -> SendCall:
        return await getattr(self, f"_{self.vendor}")(batch, bulk, push_url)

    async def _call(self, method: str, url: str, **kw: Any) -> Any:
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

    async def _sparksender(self, batch: list[str], bulk: bool, push_url: str | None) -> SendCall:
        params = {"user_id": self.cfg["user_id"], "sender_id": self.sender,
                  "message": self.message}
        if bulk:
            params["recipient_contacts"] = ",".join(batch)
            path = "/api/bulkSMS/"
        else:
            params["recipient_contact_no"] = batch[0]
            path = "/api/send/"
        answer = await self._call("POST", self.base + path,
                                  data={**params, "api_key": self.cfg["api_key"]})
        return SendCall(self.vendor, params, answer)

    async def _engagespark(self, batch: list[str], bulk: bool, push_url: str | None) -> SendCall:
        org: Any = int(self.cfg["org_id"]) if self.cfg["org_id"].isdigit() else self.cfg["org_id"]
        headers = {"Authorization": f"Token {self.cfg['api_key']}"}
        if bulk:
            body: dict[str, Any] = {"orgid": org, "messages": [
                {"to": n, "from": self.sender, "message": self.message} for n in batch]}
            path = "/v1/messaging/sms/phonenumbers"
        else:
            body = {"orgId": org, "to": batch[0], "from": self.sender, "message": self.message}
            if push_url:
                body["clientPushURL"] = push_url
            path = "/v1/sms/phonenumber"
        answer = await self._call("POST", self.base + path, json=body, headers=headers)
        return SendCall(self.vendor, body, answer)

    async def _skycore(self, batch: list[str], bulk: bool, push_url: str | None) -> SendCall:
        body = {"action": "sendsms", "to": batch[0], "from": self.sender,
                "message-text": self.message}
        answer = await self._call("POST", self.base + "/", json=body,
                                  headers={"x-api-key": self.cfg["api_key"]})
        return SendCall(self.vendor, body, answer)

    async def _sparrow(self, batch: list[str], bulk: bool, push_url: str | None) -> SendCall:
        token = await self._login()
        body = {"data": {"text": self.message, "msg_type": "plain"},
                "session": {"sender_name": self.sender, "tag": ["sandbox"], "recipients": batch}}
        answer = await self._call("POST", self.base + "/v1/intlsms/compose/", json=body,
                                  headers={"Authorization": f"Bearer {token}"})
        return SendCall(self.vendor, body, answer)

    async def _login(self) -> str:
        async with self._login_lock:
            if self._token is None:
                answer = await self._call("POST", self.base + "/v1/autho/apitoken/login/", json={
                    "api_token": self.cfg["api_token"], "partner_token": self.cfg["partner_token"]})
                data = answer.get("data") if isinstance(answer, dict) else None
                token = data.get("token") if isinstance(data, dict) else None
                if not token:
                    raise SendError("sparrow: login refused")
                self._token = token
            return self._token
