"""The poller's logic in one process: circuit, leases, backoff, Retry-After, account errors and
Sparrow's token, with the vendors played by a MockTransport (tracker.poller.transport) and time
by a ManualClock (tracker.poller.clock), against a real PostgreSQL. Nothing sleeps: a wait the
poller asks for passes on the clock. The sandbox over loopback is left to test_poller.py and
test_poller_faults.py (end to end, ground truth)."""
from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Callable
from urllib.parse import urlsplit

import asyncpg
import orjson
import pytest
import structlog

from tests.polling_support import poller_on
from tracker import intake, metrics
from tracker.adapters.base import HttpRequest, HttpResponse
from tracker.config_types import VENDORS, Config, DatabaseConfig, VendorConfig
from tracker.poller import schedule
from tracker.poller.client import VendorClient, rate_limiter
from tracker.poller.clock import ManualClock
from tracker.poller.transport import MockTransport, TransportError

POLLS = dict(first_poll_s=1.0, max_poll_interval_s=60.0, tracking_window_s=3600.0,
             rate_limit_per_s=1000.0, concurrency=1, request_timeout_s=2.0, batch_size=50,
             circuit_failures=3, circuit_reset_s=30.0)
CREDENTIALS = {"sparksender": dict(user_id="u1", api_key="key-1"),
               "engagespark": dict(org_id="42", api_key="key-2"),
               "skycore": dict(api_key="key-3"),
               "sparrow": dict(api_token="tok-4", partner_token="partner-5"),
               "twilio": dict(account_sid="AC1", auth_token="token-6")}
BATCH = "5c32728e-340f-43b6-898d-d2b24e8e1426"


def config(**changes) -> Config:
    return Config(database=DatabaseConfig(), vendors={
        v: VendorConfig.from_keys(v, base_url=f"http://{v}.test", **CREDENTIALS[v], **{**POLLS, **changes})
        for v in VENDORS})


def answer(body, status: int = 200, **headers: str) -> HttpResponse:
    return HttpResponse(status, headers, orjson.dumps(body))


class Vendors:
    """The vendors' answers, changed by the tests as they go; every request is logged with the
    clock's time."""

    def __init__(self, clock: ManualClock):
        self.clock = clock
        self.sms_status = 2  # Spark Sender: delivered
        self.engagespark_status = 200
        self.engagespark_error = "insufficient funds"
        self.engagespark_body = {"deliveredToTelco": True, "deliveredToPhone": "confirmed", "done": True}
        self.sparrow_login = "ok"
        self.sparrow_receipts = True  # False: the reports list nobody yet
        self.sparrow_tokens: set[str] = set()
        self.logins = 0
        self.token_lifetime_s = 100.0  # expires_on, from our clock's now
        self.throttle: str | None = None  # Retry-After of a 429 for every status call
        self.fail: int | None = None  # HTTP status of every status call
        self.log: list[tuple[float, HttpRequest]] = []
        self.on_request: Callable[[], None] | None = None  # e.g. the database goes away

    def __call__(self, req: HttpRequest) -> HttpResponse:
        self.log.append((self.clock.monotonic(), req))
        if self.on_request is not None:
            self.on_request()
        url = urlsplit(req.url)
        if url.path.endswith("/login/"):
            return self.login()
        if self.throttle is not None:
            return answer({"error": "Too Many Requests"}, 429, **{"Retry-After": self.throttle})
        if self.fail is not None:
            return HttpResponse(self.fail, {}, b"<html>oops</html>")
        if url.hostname == "sparksender.test":
            return answer({"sms_status": self.sms_status})
        if url.hostname == "engagespark.test":
            if self.engagespark_status != 200:
                return answer({"error": self.engagespark_error}, self.engagespark_status)
            ref = url.path.rstrip("/").rsplit("/", 1)[-1]
            return answer({"id": ref, **self.engagespark_body})
        if url.hostname == "sparrow.test":
            token = (req.headers or {}).get("Authorization", "").removeprefix("Bearer ")
            if token not in self.sparrow_tokens:
                return answer({"data": {"errors": "Invalid Token"}, "result": "11"}, 401)
            delivered = SPARROW_NUMBERS if self.sparrow_receipts else []
            records = ({"delivered": [{"to": n} for n in delivered], "seen": []}
                       if url.path.endswith("/delivery/") else {"rejected": [], "expired": []})
            return answer({"result": "00", "data": {"records": records}})
        raise TransportError("no such host")

    def login(self) -> HttpResponse:
        self.logins += 1
        if self.sparrow_login != "ok":
            return answer({"data": {"errors": "Invalid API Token"}, "result": "11"}, 401)
        token = f"jwt-{self.logins}"
        self.sparrow_tokens.add(token)
        expires = self.clock.now() + timedelta(seconds=self.token_lifetime_s)
        return answer({"data": {"message": "Success", "token": token,
                                "expires_on": expires.isoformat()}, "result": "00"})

    def status_calls(self, host: str) -> list[float]:
        return [t for t, r in self.log if urlsplit(r.url).hostname == host and "login" not in r.url]


SPARROW_NUMBERS = [f"97798000000{i:02d}" for i in range(5)]


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def vendors(clock):
    return Vendors(clock)


async def make_messages(pool, cfg: Config, vendor: str, n: int) -> None:
    rows = ([("sparrow", BATCH, SPARROW_NUMBERS[i]) for i in range(n)] if vendor == "sparrow"
            else [(vendor, f"{1000 + i}", f"6391700000{i:02d}") for i in range(n)])
    async with pool.acquire() as conn:
        await conn.executemany("INSERT INTO tracker.submissions (vendor, vendor_ref, recipient)"
                               " VALUES ($1, $2, $3)", rows)
        assert (await intake.take_in(conn, cfg)).messages == n
    await make_due(pool)


async def make_due(pool) -> None:
    """As if the time of every next poll had come (the database's clock is the real one)."""
    async with pool.acquire() as conn:
        await conn.execute("UPDATE tracker.messages SET next_poll_at = now()"
                           " WHERE next_poll_at IS NOT NULL")


async def messages(pool, vendor: str):
    async with pool.acquire() as conn:
        # due_in_s: next_poll_at from the database's now(), the clock the write-back dates it by
        return await conn.fetch("SELECT *, extract(epoch FROM next_poll_at - now())::float8 AS due_in_s"
                                " FROM tracker.messages WHERE vendor = $1 ORDER BY id", vendor)


async def count(pool, sql: str) -> int:
    async with pool.acquire() as conn:
        return await conn.fetchval(sql)


def answers_lost(vendor: str) -> float:
    return metrics.REGISTRY.get_sample_value("tracker_poll_answers_lost_total", {"vendor": vendor}) or 0.0


@pytest.fixture
async def worker_of(pool, clock, vendors):
    made = []

    def make(vendor: str, cfg: Config | None = None):
        p = poller_on(cfg or config(), pool, clock=clock, transport=lambda _: MockTransport(vendors))
        made.append(w := p.worker(vendor))
        return w

    yield make
    for w in made:
        await w.close()


def seconds_from(clock, at) -> float:
    return (at - clock.now()).total_seconds()


# --- backoff and leases ---------------------------------------------------------------------------


async def test_a_poll_writes_the_state_and_the_next_poll_by_the_backoff(pool, clock, worker_of):
    cfg = config()
    await make_messages(pool, cfg, "sparksender", 3)
    w = worker_of("sparksender", cfg)
    assert await w.tick() == 0.0
    rows = await messages(pool, "sparksender")
    assert {r["state"] for r in rows} == {"delivered"} and all(r["poll_count"] == 1 for r in rows)
    assert all(r["next_poll_at"] is None and r["lease_owner"] is None for r in rows)  # final


async def test_a_message_still_in_flight_comes_due_after_its_jittered_delay(pool, clock, vendors,
                                                                           worker_of):
    cfg = config()
    vendors.sms_status = 1  # sent, no receipt yet
    await make_messages(pool, cfg, "sparksender", 20)
    w = worker_of("sparksender", cfg)
    await w.tick()
    base = schedule.base_delay(cfg.vendors["sparksender"], 1)
    # from the database's time of the write-back, its reports' received_at (the claim judges
    # what is due by the database's clock, never the daemon's)
    waits = [r[0] for r in await pool.fetch(
        "SELECT extract(epoch FROM m.next_poll_at - o.received_at)::float8 FROM tracker.messages m"
        " JOIN tracker.observations o ON o.message_id = m.id AND o.source = 'poll'"
        " WHERE m.vendor = 'sparksender'")]
    assert len(waits) == 20
    assert all((1 - schedule.JITTER) * base - 1e-3 <= s <= base + 1e-3 for s in waits)
    assert len({round(s, 3) for s in waits}) > 1  # jittered: they spread out


async def test_a_daemon_clock_behind_the_databases_writes_next_polls_by_the_databases(pool, clock, vendors,
                                                                                      worker_of):
    # The claim judges what is due by the database's now(): next polls dated by a daemon's clock
    # an hour behind were due at once, and the same messages were polled in a loop.
    clock.start -= timedelta(hours=1)
    cfg = config()
    vendors.sms_status = 1  # sent, no receipt yet: polled again later
    await make_messages(pool, cfg, "sparksender", 5)
    w = worker_of("sparksender", cfg)
    await w.tick()
    base = schedule.base_delay(cfg.vendors["sparksender"], 1)
    rows = await messages(pool, "sparksender")
    assert all(r["poll_count"] == 1 and (1 - schedule.JITTER) * base - 1 <= r["due_in_s"] <= base for r in rows)
    received = await pool.fetchval("SELECT max(abs(extract(epoch FROM received_at - now())))"
                                   " FROM tracker.observations WHERE source = 'poll'")
    assert received < 60  # reports dated by the database too
    sent = len(vendors.status_calls("sparksender.test"))
    await w.tick()
    assert len(vendors.status_calls("sparksender.test")) == sent  # nothing due again


async def test_the_lease_holds_the_claim_and_a_stale_claim_writes_nothing(pool, clock, worker_of):
    cfg = config()
    await make_messages(pool, cfg, "sparksender", 4)
    w = worker_of("sparksender", cfg)
    rows, lease_until, *_ = await w.claim(probe=False)
    assert len(rows) == 4 and (await w.claim(probe=False))[0] == []  # leased: nobody else
    async with pool.acquire() as conn:  # the lease runs out; another poller takes them over
        await conn.execute("UPDATE tracker.messages SET lease_until = now() - interval '1 s'")
    other = worker_of("sparksender", cfg)
    other.owner = "other"
    assert len((await other.claim(probe=False))[0]) == 4
    before = answers_lost("sparksender")
    await w.write(rows, await w.poll(rows), lease_until)
    assert await count(pool, "SELECT count(*) FROM tracker.observations WHERE source = 'poll'") == 0
    assert {r["lease_owner"] for r in await messages(pool, "sparksender")} == {"other"}
    assert answers_lost("sparksender") == before + 4  # counted, not only logged


async def tick_losing_the_database_before_the_write(w, pool, db_dsn, vendors) -> None:
    """One tick whose claim succeeds and whose write-back finds the database away (a closed
    pool: every acquire fails); then the database is back."""
    gone = await asyncpg.create_pool(db_dsn, min_size=0, max_size=1)
    await gone.close()
    vendors.on_request = lambda: setattr(w, "pool", lambda: gone)  # between claim and write
    with pytest.raises(asyncpg.InterfaceError):
        await w.tick()
    vendors.on_request = None
    w.pool = lambda: pool


async def test_answers_the_database_refused_are_written_when_it_answers_again(
        pool, db_dsn, clock, vendors, worker_of):
    cfg = config()
    await make_messages(pool, cfg, "sparksender", 3)
    w = worker_of("sparksender", cfg)
    await tick_losing_the_database_before_the_write(w, pool, db_dsn, vendors)
    assert {r["lease_owner"] for r in await messages(pool, "sparksender")} == {w.owner}
    await w.tick()
    rows = await messages(pool, "sparksender")
    assert {r["state"] for r in rows} == {"delivered"} and all(r["poll_count"] == 1 for r in rows)
    assert {r["lease_owner"] for r in rows} == {None}
    assert len(vendors.status_calls("sparksender.test")) == 3  # answered once, not asked again
    assert w.unwritten == []


async def test_answers_kept_past_their_lease_are_dropped_and_the_messages_polled_again(
        pool, db_dsn, clock, vendors, worker_of):
    cfg = config()
    await make_messages(pool, cfg, "sparksender", 2)
    w = worker_of("sparksender", cfg)
    await tick_losing_the_database_before_the_write(w, pool, db_dsn, vendors)
    async with pool.acquire() as conn:  # the outage outlasted the lease
        await conn.execute("UPDATE tracker.messages SET lease_until = now() - interval '1 s'")
    lease_until = w.unwritten[0].lease_until
    clock.advance(seconds_from(clock, lease_until) + 1)
    await make_due(pool)
    await w.tick()
    assert w.unwritten == []
    rows = await messages(pool, "sparksender")
    assert {r["state"] for r in rows} == {"delivered"} and {r["lease_owner"] for r in rows} == {None}
    assert len(vendors.status_calls("sparksender.test")) == 4  # asked again: the kept answers dropped


# --- Retry-After ----------------------------------------------------------------------------------


async def test_a_429_with_retry_after_pauses_every_call_that_long(pool, clock, vendors, worker_of):
    cfg = config(circuit_failures=50)
    await make_messages(pool, cfg, "sparksender", 5)
    vendors.throttle = "1"
    w = worker_of("sparksender", cfg)
    await w.tick()
    calls = vendors.status_calls("sparksender.test")
    assert len(calls) == 5 and min(b - a for a, b in zip(calls, calls[1:])) >= 1.0 - 1e-9  # floats
    assert await count(pool, "SELECT count(*) FROM tracker.observations WHERE source = 'poll'") == 0
    # polled (the vendor answered), due again after the backoff, at least the Retry-After
    rows = await messages(pool, "sparksender")
    assert all(r["poll_count"] == 1 and r["due_in_s"] >= 0.9 for r in rows)  # less what the test took
    vendors.throttle = None
    clock.advance(1.0)
    await make_due(pool)
    await w.tick()
    assert {r["state"] for r in await messages(pool, "sparksender")} == {"delivered"}


async def test_a_long_retry_after_hands_the_rest_back_unpolled(pool, clock, vendors, worker_of):
    cfg = config()
    await make_messages(pool, cfg, "sparksender", 10)
    vendors.throttle = "5"  # longer than a request timeout (2 s)
    w = worker_of("sparksender", cfg)
    assert await w.tick() == 0.0
    assert len(vendors.status_calls("sparksender.test")) == 1  # nothing else went out
    rows = await messages(pool, "sparksender")
    assert sum(r["poll_count"] for r in rows) == 1  # the rest were handed back unpolled
    assert all(r["lease_owner"] is None and 4.9 <= r["due_in_s"] for r in rows)
    assert await w.tick() == pytest.approx(1.0)  # paused: the loop sleeps, nothing is claimed
    assert len(vendors.status_calls("sparksender.test")) == 1


async def test_a_retry_after_of_days_waits_no_longer_than_the_longest_backoff(pool, clock, vendors, worker_of):
    # the vendor-wide pause and each message's next poll: at most max_poll_interval_s (it was a
    # day: past most tracking windows, with the last look before a window's end skipped)
    cfg = config(max_poll_interval_s=120.0)
    await make_messages(pool, cfg, "sparksender", 4)
    vendors.throttle = "1e400"
    w = worker_of("sparksender", cfg)
    await w.tick()
    rows = await messages(pool, "sparksender")
    assert sum(r["poll_count"] for r in rows) == 1  # one went out; the rest handed back
    assert all(0 < r["due_in_s"] <= 120.0 + 1e-6 for r in rows)


# --- the circuit ----------------------------------------------------------------------------------


@pytest.mark.parametrize("vendor,break_it", [
    ("sparksender", lambda v: setattr(v, "sms_status", 8)),  # Client is Suspended
    ("engagespark", lambda v: setattr(v, "engagespark_status", 402)),  # insufficient funds
    ("sparrow", lambda v: setattr(v, "sparrow_login", "refused")),  # Invalid API Token
])
async def test_an_account_error_opens_the_circuit_changes_nothing_and_a_probe_closes_it(
        pool, clock, vendors, worker_of, vendor, break_it):
    cfg = config()
    await make_messages(pool, cfg, vendor, 5)
    break_it(vendors)
    w = worker_of(vendor, cfg)
    with structlog.testing.capture_logs() as logs:
        await w.tick()
    assert w.health.circuit.state == "open"
    assert any(e["event"] == "vendor circuit open: polls paused" for e in logs)
    text = repr(logs) + repr(w.health.stats)  # what reaches the logs and tracker.poll_stats
    assert not [s for c in CREDENTIALS.values() for s in c.values() if s in text and len(s) > 2]
    assert w.health.stats.failed == 1 and w.health.stats.last_error.startswith("account error")
    rows = await messages(pool, vendor)
    assert all(r["state"] == "submitted" and r["poll_count"] == 0 for r in rows)  # unchanged
    assert all(29.9 <= r["due_in_s"] <= 30.1 for r in rows)  # the reset
    assert await count(pool, "SELECT count(*) FROM tracker.observations WHERE source = 'poll'") == 0
    sent = len(vendors.log)
    await make_due(pool)
    assert await w.tick() > 0 and len(vendors.log) == sent  # open: nothing is sent
    # The account is fixed; after the reset one message is the probe, and it closes the circuit.
    vendors.__init__(clock)
    clock.advance(30.0)
    await w.tick()
    assert w.health.circuit.state == "closed"
    assert sum(r["poll_count"] for r in await messages(pool, vendor)) == (5 if vendor == "sparrow" else 1)
    await w.tick()
    assert {r["state"] for r in await messages(pool, vendor)} == {"delivered"}


async def test_transient_errors_in_a_row_open_the_circuit_and_a_failed_probe_reopens_it(
        pool, clock, vendors, worker_of):
    cfg = config(batch_size=2)
    await make_messages(pool, cfg, "sparksender", 10)
    vendors.fail = 503
    w = worker_of("sparksender", cfg)
    await w.tick()
    assert w.health.circuit.state == "closed" and w.health.circuit.failures == 2
    await w.tick()  # the third error in a row opens it; the fourth message goes back unpolled
    assert w.health.circuit.state == "open" and len(vendors.log) == 3
    clock.advance(30.0)
    await make_due(pool)
    await w.tick()  # the probe: one message, fails
    assert w.health.circuit.state == "open" and len(vendors.log) == 4
    vendors.fail = None
    clock.advance(30.0)
    await make_due(pool)
    await w.tick()
    assert w.health.circuit.state == "closed" and len(vendors.log) == 5


async def test_a_timeout_counts_as_an_error_and_the_message_is_polled_again(pool, clock, vendors,
                                                                            worker_of):
    cfg = config()
    await make_messages(pool, cfg, "sparksender", 1)

    def timeout(req):
        raise TransportError("timeout")

    w = worker_of("sparksender", cfg)
    w.client.transport = MockTransport(timeout)
    await w.tick()
    assert w.health.stats.last_error == "timeout" and w.health.circuit.failures == 1
    [row] = await messages(pool, "sparksender")
    assert row["state"] == "submitted" and row["poll_count"] == 1 and row["next_poll_at"] is not None


# --- Sparrow's token ------------------------------------------------------------------------------


async def test_a_token_already_expired_by_our_clock_is_kept_not_a_login_before_every_call(
        pool, clock, vendors, worker_of):
    # A vendor clock two hours slow (or naive_time_zone wrong): expires_on was past on arrival,
    # and every status call logged in first, without a word.
    cfg = config()
    vendors.sparrow_receipts = False
    vendors.token_lifetime_s = -7200.0
    await make_messages(pool, cfg, "sparrow", 5)
    w = worker_of("sparrow", cfg)
    with structlog.testing.capture_logs() as logs:
        for _ in range(4):
            await w.tick()
            clock.advance(10.0)
            await make_due(pool)
    assert vendors.logins == 1 and len(vendors.status_calls("sparrow.test")) == 8
    [line] = [e for e in logs if e["event"].startswith("login token's expires_on is past")]
    assert line["vendor"] == "sparrow"


async def test_sparrow_logs_in_once_refreshes_before_expiry_and_after_a_401(pool, clock, vendors,
                                                                           worker_of):
    cfg = config()
    vendors.sparrow_receipts = False  # in flight: polled again and again
    await make_messages(pool, cfg, "sparrow", 5)
    w = worker_of("sparrow", cfg)
    await w.tick()
    assert vendors.logins == 1 and len(vendors.status_calls("sparrow.test")) == 2  # one pair
    clock.advance(50.0)
    await make_due(pool)
    await w.tick()
    assert vendors.logins == 1  # the token (100 s) is still fresh
    clock.advance(45.0)  # 5 s before it expires: inside the refresh margin (a tenth of 100 s)
    await make_due(pool)
    await w.tick()
    assert vendors.logins == 2
    vendors.sparrow_tokens.clear()  # the vendor revokes every token it gave
    await make_due(pool)
    await w.tick()
    assert vendors.logins == 3  # refused with 401: logged in again, the call retried once
    assert len(vendors.status_calls("sparrow.test")) == 2 * 4 + 2
    assert w.health.stats.failed == 0 and w.health.stats.ok == 4
    assert {r["poll_count"] for r in await messages(pool, "sparrow")} == {4}


# --- the rate limit -------------------------------------------------------------------------------


def test_the_rate_limit_allows_bursts_of_a_tenth_of_a_second():
    limiter = rate_limiter(VendorConfig("x", rate_limit_per_s=25.0))
    assert (limiter.max_rate, limiter.time_period) == (2.5, 0.1)
    slow = rate_limiter(VendorConfig("x", rate_limit_per_s=2.0))
    assert (slow.max_rate, slow.time_period) == (1.0, 0.5)  # one request at least


async def test_the_rate_limit_holds():
    rate, n = 100.0, 120
    times: list[float] = []
    transport = MockTransport(lambda req: times.append(time.monotonic()) or answer({}))
    client = VendorClient(VendorConfig("x", rate_limit_per_s=rate), transport)
    await asyncio.gather(*(client.fetch(HttpRequest("GET", "http://x.test/")) for _ in range(n)))
    worst = max(sum(1 for u in times[i:] if u < t + 1.0) for i, t in enumerate(times))
    assert worst <= rate * 1.1 + 1  # bursts of a tenth of a second's worth at most
    assert times[-1] - times[0] >= (n - rate * 0.1) / rate - 0.05  # not faster than the rate


async def test_a_missing_setting_opens_the_circuit_but_a_bug_does_not(pool, clock, vendors, worker_of):
    cfg = config()
    await make_messages(pool, cfg, "sparksender", 2)
    w = worker_of("sparksender", cfg)
    w.cfg = VendorConfig("sparksender", base_url="http://sparksender.test", **POLLS)  # no credentials
    await w.tick()
    assert w.health.circuit.state == "open" and "config" in w.health.stats.last_error
    assert vendors.log == []  # nothing was sent
    w = worker_of("sparksender", cfg)
    await make_due(pool)

    def bug(*args):
        raise ValueError("a bug, not a configuration")

    w.adapter = type("Buggy", (), {"status_requests": staticmethod(bug)})()
    with pytest.raises(ValueError):
        await w.tick()  # the supervisor logs it and restarts the loop; the circuit is not touched
    assert w.health.circuit.state == "closed" and w.health.stats.failed == 0


async def test_status_calls_send_the_id_as_the_vendor_issued_it(pool, clock, vendors, worker_of):
    # Matching uses the normalized id (no leading zeros, upper case); the vendor gets its own.
    async with pool.acquire() as conn:
        await conn.executemany("INSERT INTO tracker.submissions (vendor, vendor_ref, recipient)"
                               " VALUES ($1, $2, $3)", [("sparksender", "000123", "639170000001"),
                                                        ("engagespark", "abC-42", "639170000002")])
        assert (await intake.take_in(conn, config())).messages == 2
    await make_due(pool)
    for vendor in ("sparksender", "engagespark"):
        await worker_of(vendor).tick()
    sent = {urlsplit(r.url).hostname: r for _, r in vendors.log}
    spark = sent["sparksender.test"]
    assert "000123" in (spark.url, *(spark.params or {}).values(), *(spark.data or {}).values())
    assert sent["engagespark.test"].url.rstrip("/").endswith("/abC-42")
    async with pool.acquire() as conn:
        states = dict(await conn.fetch("SELECT vendor, state::text FROM tracker.messages"))
    assert states == {"sparksender": "delivered", "engagespark": "delivered"}


async def test_an_engagespark_failure_before_the_stored_deadline_is_not_final(pool, clock, vendors,
                                                                             worker_of):
    # The vendor's page shape: no `done`, no deadline; the deadline stored at intake decides.
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO tracker.submissions (vendor, vendor_ref) VALUES ('engagespark', 'E1')")
        assert (await intake.take_in(conn, config())).messages == 1
    await make_due(pool)
    vendors.engagespark_body = {"deliveredToTelco": False, "error": "telco timeout"}
    await worker_of("engagespark").tick()
    async with pool.acquire() as conn:
        m = await conn.fetchrow("SELECT state::text, next_poll_at FROM tracker.messages")
        assert m["state"] == "accepted" and m["next_poll_at"] is not None  # still polled
        seen = await conn.fetchrow("SELECT code, text FROM tracker.observations WHERE source = 'poll'")
        assert tuple(seen) == ("error", "telco timeout")  # the vendor's code and words kept


async def test_a_vendor_error_text_that_echoes_a_secret_is_stored_masked(pool, clock, vendors, worker_of):
    # vendor_health shows the last error; a vendor that echoes the key it was sent must not put
    # the key into the database.
    from tracker.logging import register_secret

    key = "sk-live-9f8e7d6c5b4a3210"
    register_secret(key)
    cfg = config()
    await make_messages(pool, cfg, "engagespark", 1)
    vendors.engagespark_status, vendors.engagespark_error = 401, f"Invalid API key {key}"
    w = worker_of("engagespark", cfg)
    await w.tick()
    assert w.health.stats.last_error and key not in w.health.stats.last_error
    assert "Invalid API key" in w.health.stats.last_error


async def test_requests_queued_for_the_rate_limit_never_go_inside_a_retry_after():
    # Eight polls wait for tokens at 10/s when the vendor answers 429 Retry-After: 5; none of
    # those still queued may reach it during the pause (found by bench/chaos.py, throttling).
    clock_times: list[float] = []
    throttled = [True]

    def vendor(req):
        clock_times.append(time.monotonic())
        if throttled[0]:
            throttled[0] = False
            return answer({"error": "slow down"}, 429, **{"Retry-After": "0.5"})
        return answer({})

    client = VendorClient(VendorConfig("x", rate_limit_per_s=10.0, request_timeout_s=2.0),
                          MockTransport(vendor))
    await asyncio.gather(*(client.fetch(HttpRequest("GET", "http://x.test/")) for _ in range(8)))
    first = clock_times[0]
    inside = [t for t in clock_times[1:] if t < first + 0.5]
    assert inside == [], f"{len(inside)} requests inside the Retry-After"
    assert len(clock_times) == 8


@pytest.mark.parametrize("given, paused_s", [
    ("0", 1.0), ("-3", 1.0), ("Wed, 21 Oct 2015 07:28:00 GMT", 1.0),  # no wait left: still throttled
    ("1e400", 600.0), ("Fri, 31 Dec 9999 23:59:59 GMT", 600.0)])  # capped at max_poll_interval_s
async def test_a_429_pauses_at_least_a_second_and_at_most_a_poll_interval(given, paused_s):
    calls = []

    def vendor(req):
        calls.append(req)
        return answer({"error": "slow down"}, 429, **{"Retry-After": given})

    client = VendorClient(VendorConfig("x", rate_limit_per_s=100.0, max_poll_interval_s=600.0),
                          MockTransport(vendor))
    await client.fetch(HttpRequest("GET", "http://x.test/"))
    assert paused_s - 0.5 < client.pause_left() <= paused_s


async def test_a_list_claim_is_leased_for_its_requests_not_one_per_message(pool, clock, worker_of):
    # A daemon killed holding a list claim once stranded its messages for 17 minutes: the lease
    # was one request per message at the vendor's rate (found by bench/chaos.py).
    cfg = config(rate_limit_per_s=10.0, request_timeout_s=10.0, list_poll_min=100)
    await make_messages(pool, cfg, "engagespark", 300)
    claimed, lease_until, listing, _ = await worker_of("engagespark", cfg).claim(False)
    assert listing and len(claimed) == 300
    async with pool.acquire() as conn:
        lease_s = await conn.fetchval("SELECT extract(epoch FROM $1::timestamptz - now())", lease_until)
    assert lease_s < 60  # pages and at most a batch asked for one by one: not 1,030 s
