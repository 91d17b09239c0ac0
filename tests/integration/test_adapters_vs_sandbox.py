"""Must-show: the adapters read the sandbox's vendors as the tracker would, and agree with its
ground truth.

One sandbox, over real HTTP on loopback, 1,000 messages per vendor (bulk and single sends, a few
numbers each vendor refuses at once; engageSPARK with and without clientPushURL and in both field
vocabularies; Skycore postbacks in v2 JSON and v1 XML; Sparrow reports with objects and bare
records), with duplicate and out-of-order postbacks on. Once every vendor has settled:

- every send response goes through adapter.parse_send (with the request where it is needed);
- every message it names is polled through adapter.status_requests -> a real aiohttp request ->
  adapter.parse_status (Sparrow after login_request / parse_login, one report pair per batch;
  engageSPARK also through list_request / parse_list, following next_request);
- every postback the sandbox pushes lands on a small aiohttp receiver and goes through
  adapter.parse_postback.

Then, per message: the highest state the adapters read (over all sources, and per source) is the
truth's final state, or, for a carrier that never sends a receipt, a state that is not final;
no code is unmapped; codes, failure codes and `permanent` are what docs/vendors.md says.
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable, Iterable

import aiohttp
import pytest
from aiohttp import web

from tracker import adapters
from tracker.adapters.base import NO_REF, AccountError, HttpRequest, HttpResponse, MessageRef, Observation
from tracker.config_types import VendorConfig
from tracker.core.states import State
from tracker.sandbox import Sandbox, SendCall, send_many

N = 1000  # messages per vendor (a few of them refused at once by the vendor)
KNOBS = {
    "time_scale": 0.001,  # a vendor-world day is 86 real seconds; receipts come in ~0.02-1 s
    "delivered": 0.55, "read": 0.10, "failed": 0.10, "expired": 0.08, "rejected": 0.10,
    "no_receipt": 0.07, "temp_failure": 0.25, "telco_retry": 0.25,
    "duplicate_share": 0.3, "out_of_order_share": 0.3,
    "postback_timeout_s": 5000.0,  # 5 real seconds: a busy 2-core box must not cause retries
    "token_ttl_s": 10_000_000.0,  # Sparrow's token outlives the test
}
PREFIX = {"sparksender": "94711", "engagespark": "63917", "skycore": "10000", "sparrow": "97798"}
READ_CONCURRENCY = 16

Key = tuple[str, "str | None", "str | None"]  # (vendor, vendor_ref or None, recipient or None)

# -- what docs/vendors.md says, written out independently of the adapters' own tables -----------

S = State
# (vendor, observation code) -> (state, permanent); permanent is only checked for failures.
SPARKSENDER = {"204": (S.accepted, None), "203": (S.rejected, True), "205": (S.rejected, True),
               "0": (S.accepted, None), "4": (S.accepted, None), "1": (S.sent, None),
               "2": (S.delivered, None), "3": (S.failed, None)}
ENGAGESPARK = {"accepted": (S.accepted, None), "pending": (S.accepted, None),
               "deliveredToTelco": (S.sent, None), "confirmed": (S.delivered, None),
               "unreachable": (S.failed, False), "contact absent - permanent": (S.failed, True),
               "contact absent - temporary": (S.failed, False), "expired": (S.expired, False),
               "blocked": (S.rejected, True), "no route": (S.rejected, True),
               "not mobile number": (S.rejected, True), "anti-spam filter": (S.rejected, True),
               "opted out of promotional messaging": (S.rejected, True),
               # refused at send: the per-message error text (bulk) / errorCode (single, 400)
               "invalid 'to' number": (S.rejected, None), "invalid_request": (S.rejected, None)}
# Skycore maps E202 by the STATUS text (v1); (code, status) -> (state, permanent)
SKYCORE = {("Success", None): (S.accepted, None), ("E110", None): (S.rejected, None),
           ("N201", None): (S.sent, None), ("N202", None): (S.delivered, None),
           ("E201", None): (S.failed, None),
           ("E202", "Rejected"): (S.rejected, None),
           ("E202", "Message Sent/Failed"): (S.failed, None),
           ("E202", "Message Sent/Expired"): (S.expired, False),
           ("E202", "Message Sent/NotSupported"): (S.rejected, True)}
SPARROW = {"00": (S.accepted, None), "invalid_recipient": (S.rejected, True),  # compose
           "delivered": (S.delivered, None), "seen": (S.read, None),  # report lists
           "expired": (S.expired, False), "rejected": (S.rejected, True),  # (also batch_complete)
           "02": (S.expired, False)}  # DLR 00/01 are taken by compose "00" above: see expected()
SPARROW_DLR = {"00": (S.delivered, None), "01": (S.read, None), "02": (S.expired, False)}

# The codes the adapters must show for a message's final state, from the truth's vendor code.
FINAL_CODES: dict[str, Callable[[dict[str, Any]], set[str]]] = {
    "sparksender": lambda t: {t["code"]},  # "2" / "3"; refused at send: "203" / "205"
    "engagespark": lambda t: ({"confirmed"} if t["final"] == "delivered" else
                              {t["code"], "invalid_request"} if t["code"] == "invalid 'to' number"
                              else {t["code"]}),
    "skycore": lambda t: {t["code"].split(" ", 1)[0]},  # "E202 Message Sent/Expired" -> E202
    "sparrow": lambda t: {"00": {"delivered", "00"}, "01": {"seen", "01"},
                          "02": {"expired", "02"}, "rejected": {"rejected"},
                          "invalid": {"invalid_recipient", "rejected"}}.get(t["code"], set()),
}


def expected(vendor: str, source: str, o: Observation) -> tuple[State, bool | None]:
    """The documented (state, permanent) for one observation's code."""
    if vendor == "sparksender":
        return SPARKSENDER[o.code]
    if vendor == "engagespark":
        if o.code == "error":  # a hand-off the vendor still retries (done false): not an outcome
            return (S.accepted, None)
        if o.raw.get("done") is False:  # a telco's failure the vendor still retries: with the telco
            return (S.sent, None)
        return ENGAGESPARK[o.code]
    if vendor == "skycore":
        status = o.text.split(" (", 1)[0] if o.code == "E202" else None
        return SKYCORE[(o.code, status)]
    if source == "postback" and o.code in SPARROW_DLR:
        return SPARROW_DLR[o.code]
    return SPARROW[o.code]


# -- the test's plumbing: an HTTP shell around the sans-I/O adapters ------------------------------

async def fetch(http: aiohttp.ClientSession, req: HttpRequest) -> HttpResponse:
    """What the tracker's shell does with an adapter's HttpRequest."""
    kw: dict[str, Any] = {"params": req.params, "headers": dict(req.headers or {}),
                          "allow_redirects": False}
    if req.json is not None:
        kw["json"] = req.json
    elif req.data is not None:
        kw["data"] = dict(req.data)
    async with http.request(req.method, req.url, **kw) as resp:
        return HttpResponse(resp.status, dict(resp.headers), await resp.read())


def now() -> datetime:
    return datetime.now(timezone.utc)


class Receiver:
    """The postback side: POST /pb/{vendor}, parsed at once with adapter.parse_postback; 200 when
    readable, 400 otherwise (as the tracker answers)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Observation]] = []  # (vendor, observation), arrival order
        self.hits: Counter[str] = Counter()
        self.errors: list[tuple[str, str]] = []
        self._runner: web.AppRunner | None = None
        self.base = ""

    async def _handle(self, request: web.Request) -> web.Response:
        vendor = request.match_info["vendor"]
        body = await request.read()
        self.hits[vendor] += 1
        try:
            found = adapters.get(vendor).parse_postback(
                request.method, request.headers.get("Content-Type", ""), dict(request.query),
                body, now())
        except Exception as exc:  # noqa: BLE001 - recorded and asserted on
            self.errors.append((vendor, f"{type(exc).__name__}: {exc}"))
            return web.json_response({"error": "unreadable"}, status=400)
        self.seen.extend((vendor, o) for o in found)
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/pb/{vendor}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base = f"http://127.0.0.1:{self._runner.addresses[0][1]}/pb/"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, vendor: str) -> str:
        return self.base + vendor


@dataclass
class Run:
    truth: dict[Key, dict[str, Any]]
    calls: dict[str, list[SendCall]]
    # source name -> [(key, observation)]; sources: send, poll, list_page, list_after,
    # report_objects, report_bare, postback
    read: dict[str, dict[str, list[tuple[Key, Observation]]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    pushed_to: set[Key] = field(default_factory=set)  # engageSPARK messages sent with a push URL
    receiver: Receiver | None = None
    postback_log: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, vendor: str, source: str, observations: Iterable[Observation]) -> None:
        for o in observations:
            self.read[vendor][source].append((key_of(o), o))


def key_of(o: Observation) -> Key:
    ref = o.vendor_ref if o.vendor_ref != NO_REF else None
    keyed = adapters.get(o.vendor).KEYED_BY_RECIPIENT or ref is None
    return (o.vendor, ref, o.recipient if keyed else None)


def truth_key(key: tuple[str, str | None, str | None]) -> Key:
    vendor, ref, recipient = key
    return (vendor, adapters.get(vendor).normalize_ref(ref) if ref is not None else None, recipient)


def numbers(vendor: str, start: int, count: int, bad_every: int = 0) -> list[str]:
    """Distinct numbers; every `bad_every`-th one too short to be a phone number."""
    out = []
    for i in range(start, start + count):
        if bad_every and i % bad_every == bad_every - 1:
            out.append(f"58{PREFIX[vendor][-2:]}{i:03d}")  # 7 digits: every vendor refuses it
        else:
            out.append(f"{PREFIX[vendor]}{i:07d}")
    return out


async def bounded(items: Iterable[Any], fn: Callable[[Any], Awaitable[Any]], limit: int) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(item: Any) -> Any:
        async with sem:
            return await fn(item)

    return list(await asyncio.gather(*(one(i) for i in items)))


async def eventually(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"not reached in {timeout} s: {what}"
        await asyncio.sleep(0.05)


# -- sending --------------------------------------------------------------------------------------

async def send_sparksender(sb: Sandbox, http: aiohttp.ClientSession, rx: Receiver) -> list[SendCall]:
    calls = await send_many(sb, "sparksender", numbers("sparksender", 0, 500, 97), bulk=True,
                            session=http)
    calls += await send_many(sb, "sparksender", numbers("sparksender", 500, 495, 97),
                             session=http, concurrency=16)
    # 16 digits: 205 "Length of Contact is Invalid", in a bulk call and a single one
    calls += await send_many(sb, "sparksender", ["9471100000000001", "9471100000000002"],
                             bulk=True, session=http)
    calls += await send_many(sb, "sparksender", ["9471100000000003", "9471100000000004",
                                                 "9471100000000005"], session=http)
    return calls


async def send_engagespark(sb: Sandbox, http: aiohttp.ClientSession, rx: Receiver,
                           run: Run) -> list[SendCall]:
    v = "engagespark"
    calls = await send_many(sb, v, numbers(v, 0, 400, 101), bulk=True, session=http)
    calls += await send_many(sb, v, numbers(v, 400, 200, 101), session=http, concurrency=16)
    pushed = await send_many(sb, v, numbers(v, 600, 200, 101), session=http, concurrency=16,
                             client_push_url=rx.url(v))
    sb.set_knobs(v, old_field_names=True)  # push bodies are made at send time: old names
    pushed += await send_many(sb, v, numbers(v, 800, 200, 101), session=http, concurrency=16,
                              client_push_url=rx.url(v))
    sb.set_knobs(v, old_field_names=False)
    for c in pushed:
        if c.response.get("messageId"):
            run.pushed_to.add((v, c.response["messageId"], None))
    return calls + pushed


async def send_skycore(sb: Sandbox, http: aiohttp.ClientSession, rx: Receiver) -> list[SendCall]:
    calls = await send_many(sb, "skycore", numbers("skycore", 0, 500, 99), session=http,
                            concurrency=16)
    sb.set_knobs("skycore", postback_format="v1")  # fixed per message when the vendor accepts it
    calls += await send_many(sb, "skycore", numbers("skycore", 500, 500, 99), session=http,
                             concurrency=16)
    return calls


async def send_sparrow(sb: Sandbox, http: aiohttp.ClientSession, rx: Receiver) -> list[SendCall]:
    v = "sparrow"
    calls = await send_many(sb, v, numbers(v, 0, 400, 103), bulk=True, session=http)
    calls += await send_many(sb, v, numbers(v, 400, 400, 103), bulk=True, session=http)
    # single composes; two of them with no valid recipient at all (DATA_ERROR, no batch)
    calls += await send_many(sb, v, numbers(v, 800, 200, 97), session=http, concurrency=16)
    return calls


# -- reading, as the tracker does -----------------------------------------------------------------

def vendor_cfg(sb: Sandbox, vendor: str) -> VendorConfig:
    return VendorConfig.from_keys(vendor, **sb.vendor_config(vendor))


def refs_from_sends(run: Run, vendor: str) -> list[MessageRef]:
    """The messages the intake would hold: what parse_send named, with a vendor id."""
    return [MessageRef(o.vendor_ref, o.recipient) for _, o in run.read[vendor]["send"]
            if o.vendor_ref != NO_REF]


async def poll_each(http: aiohttp.ClientSession, adapter: Any, cfg: VendorConfig,
                    refs: list[MessageRef]) -> list[Observation]:
    async def one(ref: MessageRef) -> list[Observation]:
        [req] = adapter.status_requests(cfg, [ref])
        result = adapter.parse_status([await fetch(http, req)], [ref], now())
        assert result.account_error is None and result.transient_error is None, result
        return result.observations

    return [o for obs in await bounded(refs, one, READ_CONCURRENCY) for o in obs]


async def read_sparksender(sb: Sandbox, http: aiohttp.ClientSession, run: Run) -> None:
    adapter = adapters.get("sparksender")
    run.add("sparksender", "poll",
            await poll_each(http, adapter, vendor_cfg(sb, "sparksender"),
                            refs_from_sends(run, "sparksender")))


async def read_engagespark(sb: Sandbox, http: aiohttp.ClientSession, run: Run,
                           sent_after: datetime) -> None:
    v = "engagespark"
    adapter, cfg = adapters.get(v), vendor_cfg(sb, v)
    run.add(v, "poll", await poll_each(http, adapter, cfg, refs_from_sends(run, v)))

    async def listing(req: HttpRequest | None) -> tuple[list[Observation], int]:
        out, pages = [], 0
        while req is not None:
            result = adapter.parse_list(await fetch(http, req), now(), req)
            assert result.account_error is None and result.transient_error is None, result
            out += result.observations
            req, pages = result.next_request, pages + 1
        return out, pages

    sb.set_knobs(v, old_field_names=True)  # the seed's deliveredToVendor / deliveredByVendor
    try:
        found, pages = await listing(adapter.list_request(cfg, page=1, size=250))
        assert pages == 4  # 990 accepted messages, 250 a page: next_request followed
        run.add(v, "list_page", found)
    finally:
        sb.set_knobs(v, old_field_names=False)
    found, pages = await listing(adapter.list_request(cfg, after=sent_after))
    assert pages == 1
    run.add(v, "list_after", found)


async def read_sparrow(sb: Sandbox, http: aiohttp.ClientSession, run: Run) -> None:
    v = "sparrow"
    adapter, cfg = adapters.get(v), vendor_cfg(sb, v)
    token: list[str] = []

    async def login() -> str:
        got = adapter.parse_login(await fetch(http, adapter.login_request(cfg)), now())
        assert got.account_error is None and got.token, got
        token[:] = [got.token]
        assert got.expires_on > now()  # expires_on read
        return got.token

    await login()
    batches: dict[str, list[MessageRef]] = defaultdict(list)
    for ref in refs_from_sends(run, v):
        batches[ref.vendor_ref].append(ref)
    assert len(batches) == 2 + 198

    async def one(refs: list[MessageRef]) -> list[Observation]:
        for attempt in range(2):
            reqs = adapter.status_requests(cfg, refs, token[0])
            assert len(reqs) == 2  # delivery, failed: one pair for the whole batch
            result = adapter.parse_status([await fetch(http, r) for r in reqs], refs, now())
            if result.account_error is not None and result.account_error.code == "http_401" and not attempt:
                await login()  # the shell logs in again once on a 401
                continue
            assert result.account_error is None and result.transient_error is None, result
            return result.observations
        raise AssertionError("unreachable")

    for source, bare in (("report_objects", False), ("report_bare", True)):
        sb.set_knobs(v, bare_records=bare)
        found = await bounded(list(batches.values()), one, READ_CONCURRENCY)
        run.add(v, source, [o for obs in found for o in obs])
    sb.set_knobs(v, bare_records=False)


# -- the run ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
async def run() -> Run:
    t0 = time.monotonic()
    sb = Sandbox(knobs=KNOBS, seed=2024)
    rx = Receiver()
    await rx.start()
    await sb.start()
    sb.set_postback_url("skycore", rx.url("skycore"))
    sb.set_postback_url("sparrow", rx.url("sparrow"))
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30),
                                 connector=aiohttp.TCPConnector(limit=64))
    try:
        result = Run(truth={}, calls={}, receiver=rx)
        sent_after = now() - timedelta(seconds=1)
        calls = await asyncio.gather(send_sparksender(sb, http, rx),
                                     send_engagespark(sb, http, rx, result),
                                     send_skycore(sb, http, rx), send_sparrow(sb, http, rx))
        result.calls = dict(zip(("sparksender", "engagespark", "skycore", "sparrow"), calls))
        result.seconds["send"] = time.monotonic() - t0
        for vendor, vcalls in result.calls.items():
            adapter = adapters.get(vendor)
            for c in vcalls:
                parsed = adapter.parse_send(c.response, c.request, now())
                assert parsed.account_error is None, (vendor, c.response)
                result.add(vendor, "send", parsed.observations)

        # Drive every vendor to settle, then let the last postbacks out.
        await eventually(lambda: all(t["settled"] or t["fate"] == "no_receipt"
                                     for t in sb.truth().values()), 30, "all messages settled")
        quiet = [0]

        def postbacks_done() -> bool:
            logged = sum(1 for e in sb.postbacks if e["status"] is not None or e["error"])
            done = sb.pending_postbacks() == 0 and logged == sum(rx.hits.values())
            quiet[0] = quiet[0] + 1 if done else 0
            return quiet[0] >= 3

        await eventually(postbacks_done, 30, "every postback delivered")
        result.seconds["settled"] = time.monotonic() - t0
        result.truth = {truth_key(k): v for k, v in sb.truth().items()}

        await asyncio.gather(read_sparksender(sb, http, result),
                             read_engagespark(sb, http, result, sent_after),
                             read_sparrow(sb, http, result))
        assert adapters.get("skycore").status_requests(vendor_cfg(sb, "skycore"),
                                                       refs_from_sends(result, "skycore")) == []
        for vendor, o in rx.seen:
            result.read[vendor]["postback"].append((key_of(o), o))
        result.postback_log = list(sb.postbacks)
        result.requests = list(sb.requests)
        result.seconds["total"] = time.monotonic() - t0
        return result
    finally:
        await http.close()
        await sb.stop()
        await rx.stop()


# -- assertions -------------------------------------------------------------------------------------

VENDORS = ("sparksender", "engagespark", "skycore", "sparrow")


def highest(pairs: Iterable[tuple[Key, Observation]]) -> dict[Key, State]:
    best: dict[Key, State] = {}
    for key, o in pairs:
        if o.state is not None and (key not in best or o.state > best[key]):
            best[key] = o.state
    return best


def unsettled_read(vendor: str) -> State:
    """What the adapters can read of a message whose carrier never sends a receipt."""
    return S.accepted if vendor == "sparrow" else S.sent  # Sparrow reports only outcomes


def want(vendor: str, t: dict[str, Any]) -> State:
    return State[t["final"]] if t["final"] != "unknown" else unsettled_read(vendor)


def test_the_run_is_big_enough(run: Run) -> None:
    by_vendor = Counter(k[0] for k in run.truth)
    assert by_vendor == {"sparksender": 1000, "engagespark": 1000, "skycore": 1000, "sparrow": 1000}
    for vendor in VENDORS:
        fates = Counter(t["fate"] for k, t in run.truth.items() if k[0] == vendor)
        can_tell = {"sparksender": {"delivered", "failed"},
                    "engagespark": {"delivered", "failed", "expired", "rejected"},
                    "skycore": {"delivered", "failed", "expired", "rejected"},
                    "sparrow": {"delivered", "read", "expired", "rejected"}}[vendor]
        assert can_tell | {"no_receipt"} <= set(fates), (vendor, fates)
        # refused at once, without an id
        assert sum(1 for k in run.truth if k[0] == vendor and k[1] is None) >= 2


@pytest.mark.parametrize("vendor", VENDORS)
def test_every_message_is_read_and_its_highest_state_is_the_truth(run: Run, vendor: str) -> None:
    truth = {k: t for k, t in run.truth.items() if k[0] == vendor}
    pairs = [p for source in run.read[vendor].values() for p in source]
    assert {k for k, _ in pairs} == set(truth)  # every message named, nothing invented
    best = highest(pairs)
    wrong = {k: (best.get(k), t["final"], t["fate"]) for k, t in truth.items()
             if best.get(k) != want(vendor, t)}
    assert not wrong, f"{len(wrong)} messages disagree, e.g. {list(wrong.items())[:5]}"
    # A carrier that never sends a receipt: the adapters read no final state at all.
    silent = [k for k, t in truth.items() if t["fate"] == "no_receipt"]
    assert silent and not [k for k in silent if best[k].is_final]


@pytest.mark.parametrize("vendor", VENDORS)
def test_no_unmapped_codes_and_codes_as_documented(run: Run, vendor: str) -> None:
    seen_codes: Counter[str] = Counter()
    for source, pairs in run.read[vendor].items():
        for key, o in pairs:
            assert o.state is not None, (source, o.code, o.text)  # nothing unmapped
            state, permanent = expected(vendor, source, o)
            assert o.state == state, (source, o.code, o.text, o.state)
            if state.is_failure:
                assert o.failure is not None and o.failure.code == o.code, (source, o)
                assert o.failure.permanent is permanent, (source, o.code, o.failure)
            else:
                assert o.failure is None, (source, o)
            seen_codes[o.code] += 1
    documented = {"sparksender": SPARKSENDER, "engagespark": ENGAGESPARK,
                  "skycore": {c for c, _ in SKYCORE}, "sparrow": {**SPARROW, **SPARROW_DLR}}[vendor]
    # The run reaches every documented code of the vendor, but the "nothing happened yet" ones
    # that a settled vendor no longer answers (pushes start at "sent").
    not_after_settling = {"sparksender": {"0", "4"}, "engagespark": {"pending"}}.get(vendor, set())
    assert set(documented) - set(seen_codes) <= not_after_settling, set(documented) - set(seen_codes)


@pytest.mark.parametrize("vendor", VENDORS)
def test_final_observations_carry_the_vendors_code(run: Run, vendor: str) -> None:
    """The observation that made a message final names the vendor's own outcome code."""
    finals: dict[Key, set[str]] = defaultdict(set)
    texts: dict[Key, set[str]] = defaultdict(set)
    for pairs in run.read[vendor].values():
        for key, o in pairs:
            if o.state is not None and o.state.is_final and o.state == want(vendor, run.truth[key]):
                finals[key].add(o.code)
                texts[key].add(o.text or "")
    for key, t in run.truth.items():
        if key[0] != vendor or t["final"] == "unknown":
            continue
        assert finals[key] and finals[key] <= FINAL_CODES[vendor](t), (key, t["code"], finals[key])
        if vendor == "skycore" and " " in t["code"]:  # v1: E202 told apart by STATUS
            assert any(x.startswith(t["code"].split(" ", 1)[1]) for x in texts[key])


@pytest.mark.parametrize("vendor,source", [
    ("sparksender", "poll"), ("engagespark", "poll"), ("engagespark", "list_page"),
    ("engagespark", "list_after"), ("sparrow", "report_objects"), ("sparrow", "report_bare"),
    ("skycore", "postback"), ("engagespark", "postback"), ("sparrow", "postback")])
def test_each_source_alone_agrees(run: Run, vendor: str, source: str) -> None:
    """Each way of reading a vendor, on its own, tells each message's settled state."""
    best = highest(run.read[vendor][source])
    assert best
    for key, t in run.truth.items():
        if key[0] != vendor:
            continue
        got = best.get(key)
        if key[1] is None:  # refused at send, no id: only the send response tells
            assert got is None, (key, got)
            continue
        if vendor == "sparrow":
            # Sparrow reports and DLRs tell outcomes only; DLRs have no carrier "rejected".
            if t["final"] == "unknown" or (source == "postback" and t["code"] == "rejected"):
                assert got is None, (key, got)
                continue
        elif vendor == "engagespark" and source == "postback" and (
                key not in run.pushed_to or t["final"] == "unknown"):  # pushes are receipts only
            assert got is None, (key, got)
            continue
        assert got == want(vendor, t), (key, got, t)


def test_engagespark_pushes_are_receipts_only(run: Run) -> None:
    """NOTES: "whenever we receive a delivery receipt we POST to this URL": every push is a
    receipt, an outcome or a telco's temporary failure the vendor retries after (done false,
    read as `sent`), none for a message without one (hand-off retries are polled:
    tests/integration/test_engagespark_sandbox_pushes.py)."""
    pushed = run.read["engagespark"]["postback"]
    assert pushed
    retried = 0
    for key, o in pushed:
        if o.raw["done"] is False:
            retried += 1
            assert (o.state, o.raw["deliveryError"]) == (S.sent, "contact absent - temporary"), (key, o.raw)
        else:
            assert o.raw["done"] is True and o.state is not None and o.state.is_final, (key, o.raw)
        assert run.truth[key]["final"] != "unknown", key
    assert retried  # the knob telco_retry drew some
    silent = {truth_key(k) for k in run.pushed_to if run.truth[truth_key(k)]["final"] == "unknown"}
    assert silent and not silent & {k for k, _ in pushed}


def test_both_field_vocabularies_and_both_record_shapes_were_read(run: Run) -> None:
    es = run.read["engagespark"]
    assert all("deliveredToTelco" in o.raw for _, o in es["poll"])
    assert all("deliveredToVendor" in o.raw and "deliveredToTelco" not in o.raw
               for _, o in es["list_page"])
    pushed = [o.raw for _, o in es["postback"]]
    assert any("deliveredToVendor" in r for r in pushed) and any("deliveredToTelco" in r for r in pushed)
    sp = run.read["sparrow"]
    assert sp["report_objects"] and all(isinstance(o.raw, dict) for _, o in sp["report_objects"])
    assert sp["report_bare"] and all(isinstance(o.raw, str) for _, o in sp["report_bare"])
    assert all(o.event_at is not None for _, o in sp["report_objects"])  # Nepal-time "ts" read
    sky = [o for _, o in run.read["skycore"]["postback"]]
    assert {type(o.raw.get("origin")) for o in sky} == {str}
    formats = Counter("sent-as" in o.raw for o in sky)  # v2 JSON has sent-as, v1 XML does not
    assert formats[True] and formats[False]
    assert all(o.event_at is not None for o in sky)


def test_postbacks_came_duplicated_and_out_of_order_and_all_were_read(run: Run) -> None:
    rx = run.receiver
    assert rx is not None and not rx.errors, rx.errors[:3]
    log = run.postback_log
    assert all(e["status"] == 200 and e["error"] is None for e in log), [
        e for e in log if e["status"] != 200][:3]
    assert sum(rx.hits.values()) == len(log)
    for vendor in ("skycore", "engagespark", "sparrow"):
        assert any(e["duplicate"] for e in log if e["vendor"] == vendor), vendor
        if vendor == "engagespark":  # one receipt per message: nothing to arrive out of order
            continue
        # Out of order: some message had a lower-ranked report arrive after a higher one
        # (Skycore / engageSPARK "sent" after the outcome; Sparrow "delivered" after "seen").
        arrivals: dict[Key, list[State]] = defaultdict(list)
        for v, o in rx.seen:
            if v == vendor and o.state is not None:
                arrivals[key_of(o)].append(o.state)
        late = [k for k, states in arrivals.items()
                if any(b < a for i, a in enumerate(states) for b in states[i + 1:])]
        assert late, vendor


def test_send_responses_name_every_message_once(run: Run) -> None:
    for vendor in VENDORS:
        sends = run.read[vendor]["send"]
        keys = [k for k, _ in sends]
        assert len(keys) == len(set(keys)) == 1000, vendor
        states = Counter(o.state for _, o in sends)
        assert set(states) == {S.accepted, S.rejected}, (vendor, states)
        for key, o in sends:
            t = run.truth[key]
            if o.state == S.rejected:
                assert t["final"] == "rejected" and o.code in FINAL_CODES[vendor](t) | {
                    "invalid 'to' number", "invalid_request", "E110"}, (key, o.code, t["code"])
            if vendor == "engagespark" and o.state == S.accepted:
                assert o.deadline is not None and o.deadline > now() - timedelta(minutes=5)


# -- edges the big run keeps away from ------------------------------------------------------------

async def read_batch(sb: Sandbox, http: aiohttp.ClientSession, refs: list[MessageRef]) -> Any:
    adapter, cfg = adapters.get("sparrow"), vendor_cfg(sb, "sparrow")
    token = adapter.parse_login(await fetch(http, adapter.login_request(cfg)), now()).token
    reqs = adapter.status_requests(cfg, refs, token)
    return adapter.parse_status([await fetch(http, r) for r in reqs], refs, now())


async def test_sparrow_compose_with_no_valid_recipient_is_refused_without_a_batch() -> None:
    async with Sandbox(knobs=KNOBS, seed=5) as sb, aiohttp.ClientSession() as http:
        [call] = await send_many(sb, "sparrow", ["+977-1234"], session=http)
        assert call.response["result"] == "11" and "batch_id" not in call.response["data"]
        [o] = adapters.get("sparrow").parse_send(call.response, call.request, now()).observations
        assert (o.vendor_ref, o.recipient, o.state, o.code) == (NO_REF, "9771234", S.rejected,
                                                                "invalid_recipient")
        assert sb.truth()[("sparrow", None, "9771234")]["final"] == "rejected"
        assert key_of(o) == ("sparrow", None, "9771234")


async def test_sparrow_invalid_recipient_without_digits_does_not_lose_the_batch() -> None:
    knobs = {**KNOBS, "delivered": 1.0, "read": 0.0, "failed": 0.0, "expired": 0.0,
             "rejected": 0.0, "no_receipt": 0.0}
    rx = Receiver()
    await rx.start()
    try:
        async with Sandbox(knobs=knobs, seed=5) as sb, aiohttp.ClientSession() as http:
            sb.set_postback_url("sparrow", rx.url("sparrow"))
            [call] = await send_many(sb, "sparrow", ["9779800000001", "N/A"], bulk=True,
                                     session=http)
            assert call.response["data"]["invalid_recipients"] == ["N/A"]
            await eventually(lambda: all(t["settled"] for t in sb.truth().values()), 10, "settled")
            await eventually(lambda: sb.pending_postbacks() == 0 and rx.hits["sparrow"] >= 2, 10,
                             "callbacks")
            assert not rx.errors, rx.errors  # batch_complete with rejected_numbers ["N/A"]
            sent = adapters.get("sparrow").parse_send(call.response, call.request, now())
            assert [(o.recipient, o.state) for o in sent.observations] == [
                ("9779800000001", S.accepted)]
            batch = call.response["data"]["batch_id"]
            result = await read_batch(sb, http, [MessageRef(batch, "9779800000001")])
            assert [(o.recipient, o.state) for o in result.observations] == [
                ("9779800000001", S.delivered)]
    finally:
        await rx.stop()
