"""The sending application: a realistic mixed load. Every half second it sends messages through
all five fake vendors over real HTTP (bulk calls and single sends; engageSPARK single sends with
a `clientPushURL`, Twilio sends, single only, with a `StatusCallback`), and writes what it got
into tracker.submissions, as an application does: the raw send response (+ request) for most
calls, `vendor_ref` + `recipient` rows for some.
Each row is written a random moment (up to `hold_s`) after its send, so that postbacks often
arrive before the row (early postbacks: orphan reports). Campaigns (one bulk call of many
numbers) come on top at set times. Rows that cannot be written (the database is down) are kept
and written again, as an application with a retry queue does.

A small share of the steady load's numbers (INVALID_SHARE) are ones every vendor refuses at
send: 7 digits (Spark Sender 203 "Contact Number is Invalid", fewer than 8) or 16 (205 "Length
of Contact is Invalid"), outside E.164 for engageSPARK ("invalid 'to' number"), Sparrow
(`invalid_recipients`), Twilio (21211) and Skycore (the sandbox's E110). A call with a refusal
is always written as its raw response (+ request): that is where the refusal is.

`keys` holds the ground-truth key (vendor, id as issued, recipient for Sparrow else None) of
every message a vendor accepted (or, in a Sparrow batch, refused) and the application wrote a row
for; `refused`, (vendor, digits) of every number refused without an id that it wrote a row for."""
from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import dataclass
from typing import Any, Callable

import aiohttp
import asyncpg
import orjson

from tracker.sandbox.client import SendCall, send_many
from tracker.sandbox.common import digits_or_raw

INSERT = ("INSERT INTO tracker.submissions (vendor, vendor_ref, recipient, client_ref, request,"
          " response) VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb)")
PREFIX = {"sparksender": "6391", "engagespark": "6392", "skycore": "1415", "sparrow": "9779",
          "twilio": "1628"}
# Share of the steady load per vendor, and of it, how much goes in bulk calls.
SHARE = {"sparksender": 0.32, "engagespark": 0.27, "skycore": 0.09, "sparrow": 0.22,
         "twilio": 0.10}
BULK = {"sparksender": 0.8, "engagespark": 0.6, "skycore": 0.0, "sparrow": 1.0, "twilio": 0.0}
# Vendors told with each single send where to push its reports (engageSPARK `clientPushURL`,
# Twilio `StatusCallback`): a live daemon's postback URL, `push_url(vendor)`.
PUSH_PER_SEND = ("engagespark", "twilio")
TICK_S = 0.5
INVALID_SHARE = 0.03  # of the steady load's numbers (campaigns are all valid)
# The application's own writes are durable whatever the database's default (a careful sender's
# choice; what the tracker must do for its own writes is what the scenarios check).
DURABLE = {"synchronous_commit": "on"}

Key = tuple[str, str, "str | None"]


@dataclass(slots=True)
class Row:
    due: float
    vendor: str
    vendor_ref: str | None = None
    recipient: str | None = None
    client_ref: str | None = None
    request: Any = None
    response: Any = None

    def args(self) -> tuple:
        dump = lambda v: None if v is None else orjson.dumps(v).decode()  # noqa: E731
        return (self.vendor, self.vendor_ref, self.recipient, self.client_ref,
                dump(self.request), dump(self.response))


def accepted(call: SendCall) -> list[tuple[str, str]]:
    """(id as issued, recipient) of each message the vendor accepted in one send call."""
    v, req, resp = call.vendor, call.request, call.response
    if not isinstance(resp, dict):
        return []
    if v == "sparksender":
        if "recipient_contact_no" in req:
            ok = resp.get("status_code") == 204 and resp.get("msg_id")
            return [(str(resp["msg_id"]), req["recipient_contact_no"])] if ok else []
        return [(str(i["msgId"]), i["number"]) for g in resp.get("success") or [] for i in g]
    if v == "engagespark":
        if "messages" in req:
            return [(m["id"], req["messages"][i]["to"])
                    for i, m in enumerate(resp.get("messages") or []) if m.get("id")]
        return [(resp["messageId"], req["to"])] if resp.get("messageId") else []
    if v == "skycore":
        ok = resp.get("status") == "Success"
        return [(resp["tracking-id"], req["to"])] if ok else []
    if v == "twilio":  # the Message resource created, or an error object (no sid)
        return [(resp["sid"], req["To"])] if resp.get("sid") else []
    if resp.get("result") != "00":  # sparrow
        return []
    bad = {digits_or_raw(r) for r in resp["data"].get("invalid_recipients") or []}
    return [(resp["data"]["batch_id"], r) for r in req["session"]["recipients"] if r not in bad]


def refused(call: SendCall) -> list[tuple[str | None, str]]:
    """(batch id or None, number) of each number the vendor refused in one send call for the
    number itself (not the account: those calls make no messages); only Sparrow refuses a number
    inside a batch it accepted."""
    v, req, resp = call.vendor, call.request, call.response
    if not isinstance(resp, dict):
        return []
    if v == "sparksender":
        if "recipient_contact_no" in req:
            bad = resp.get("status_code") in (203, 205)
            return [(None, req["recipient_contact_no"])] if bad else []
        return [(None, i["number"]) for g in resp.get("unsuccess") or [] for i in g]
    if v == "engagespark":
        if "messages" in req:
            return [(None, req["messages"][i]["to"]) for i, m in enumerate(resp.get("messages") or [])
                    if m.get("error") == "invalid 'to' number"]
        return [(None, req["to"])] if resp.get("error") == "invalid 'to' number" else []
    if v == "skycore":
        return [(None, req["to"])] if resp.get("error-code") == "E110" else []
    if v == "twilio":
        return [(None, req["To"])] if resp.get("code") == 21211 else []
    data = resp.get("data") if isinstance(resp.get("data"), dict) else {}
    batch = data.get("batch_id") if resp.get("result") == "00" else None
    return [(batch, r) for r in data.get("invalid_recipients") or []]


class Load:
    def __init__(self, vendors: dict[str, dict[str, str]], dsn: str, push_url: Callable[[str], str],
                 rate: float, seed: int, hold_s: float = 1.5) -> None:
        self.vendors, self.dsn, self.push_url = vendors, dsn, push_url
        self.rate, self.hold_s = rate, hold_s
        self.rng = random.Random(seed)
        self.numbers = itertools.count(1)
        self.keys: set[Key] = set()
        self.refused: set[tuple[str, str]] = set()
        self.queue: list[Row] = []
        self.rows_written = 0
        self.send_failures = 0
        self.write_failures = 0
        self.sending: set[asyncio.Task] = set()
        self.limit = asyncio.Semaphore(8)
        self.sent_all = asyncio.Event()
        self.quiet = asyncio.Event()  # set: rows are held back (see scenarios.db_crash)
        self.http: aiohttp.ClientSession | None = None

    def _numbers(self, vendor: str, n: int, invalid_share: float = 0.0) -> list[str]:
        return [self._invalid(vendor) if invalid_share and self.rng.random() < invalid_share
                else f"{PREFIX[vendor]}{next(self.numbers):08d}" for _ in range(n)]

    def _invalid(self, vendor: str) -> str:
        """A number every vendor refuses, never the same twice: too short or too long."""
        i = next(self.numbers)
        return f"9{i:06d}" if self.rng.random() < 0.5 else f"{PREFIX[vendor]}{i:012d}"

    async def run(self, seconds: float, campaigns: list[tuple[float, str, int]] = ()) -> None:
        """Send for `seconds` (campaigns at their offsets), then write every row still held."""
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=32), timeout=aiohttp.ClientTimeout(total=5))
        writer = asyncio.create_task(self._writer())
        try:
            began = time.monotonic()
            todo = sorted(campaigns)
            while (elapsed := time.monotonic() - began) < seconds:
                while todo and todo[0][0] <= elapsed:
                    _, vendor, n = todo.pop(0)
                    self._spawn(vendor, self._numbers(vendor, n), bulk=True)
                self._tick()
                await asyncio.sleep(TICK_S)
            await asyncio.gather(*self.sending, return_exceptions=True)
            self.sent_all.set()
            await writer
        finally:
            writer.cancel()
            await self.http.close()

    def _tick(self) -> None:
        budget = self.rate * TICK_S
        for vendor, share in SHARE.items():
            n = max(1, round(budget * share * (0.5 + self.rng.random())))
            n_bulk = round(n * BULK[vendor])
            if n_bulk:
                self._spawn(vendor, self._numbers(vendor, n_bulk, INVALID_SHARE), bulk=True)
            for number in self._numbers(vendor, n - n_bulk, INVALID_SHARE):
                push = self.push_url(vendor) if vendor in PUSH_PER_SEND else None
                self._spawn(vendor, [number], bulk=False, push=push)

    def _spawn(self, vendor: str, numbers: list[str], bulk: bool, push: str | None = None) -> None:
        task = asyncio.create_task(self._send(vendor, numbers, bulk, push))
        self.sending.add(task)
        task.add_done_callback(self.sending.discard)

    async def _send(self, vendor: str, numbers: list[str], bulk: bool, push: str | None) -> None:
        async with self.limit:
            try:
                calls = await send_many(self.vendors, vendor, numbers, bulk=bulk, session=self.http,
                                        client_push_url=push, attempts=3)
            except Exception:  # noqa: BLE001 - the vendor is down: the application gives up
                self.send_failures += 1
                return
        for call in calls:
            self._rows(call)

    def _rows(self, call: SendCall) -> None:
        got, bad = accepted(call), refused(call)
        if not got and not bad:
            self.send_failures += 1
            return
        v = call.vendor
        for ref, number in got:
            self.keys.add((v, ref, number if v == "sparrow" else None))
        for ref, number in bad:
            if ref is None:
                self.refused.add((v, digits_or_raw(number)))
            else:  # refused inside a Sparrow batch: keyed by it
                self.keys.add((v, ref, digits_or_raw(number)))
        due = time.monotonic() + self.rng.uniform(0.0, self.hold_s)
        client_ref = f"app-{self.rng.randrange(10**9)}" if self.rng.random() < 0.3 else None
        if not bad and self.rng.random() < 0.25:  # the application parsed the vendor's ids itself
            self.queue += [Row(due, v, ref, number, client_ref) for ref, number in got]
        else:
            self.queue.append(Row(due, v, client_ref=client_ref, request=call.request,
                                  response=call.response))

    async def _writer(self) -> None:
        conn: asyncpg.Connection | None = None
        while not (self.sent_all.is_set() and not self.queue):
            if self.quiet.is_set():
                await asyncio.sleep(0.1)
                continue
            now = time.monotonic()
            due = [r for r in self.queue if r.due <= now] if not self.sent_all.is_set() else list(self.queue)
            if due:
                try:
                    if conn is None or conn.is_closed():
                        conn = await asyncpg.connect(self.dsn, timeout=2, server_settings=DURABLE)
                    await conn.executemany(INSERT, [r.args() for r in due], timeout=10)
                    ids = {id(r) for r in due}
                    self.queue = [r for r in self.queue if id(r) not in ids]
                    self.rows_written += len(due)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                    self.write_failures += 1  # the database is down: keep them, try again
                    if conn is not None:
                        conn.terminate()
                    conn = None
                    await asyncio.sleep(0.5)
                    continue
            await asyncio.sleep(0.1)
        if conn is not None:
            await conn.close()
