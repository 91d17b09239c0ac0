"""The daemon's HTTP listeners: an address already in use is reported naming its setting (and
nothing is left running), a body trickled in is cut off, an idle connection is closed, and no
client can hold more than the listener's connections and a request's header lines."""
from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import aiohttp
import orjson
import pytest
import structlog

from tests.polling_support import wait_until
from tests.postbacks_support import (TOKENS, config_for, metric_value, named, postback_url, readyz,
                                     replace_http, running, session)
from tracker.app import Tracker
from tracker.config_types import Config, DatabaseConfig
from tracker.http import connections, middleware
from tracker.http.connections import HEADERS_MAX
from tracker.throttle import Throttle
from tracker.start_error import StartError


@contextlib.contextmanager
def taken_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        yield f"127.0.0.1:{s.getsockname()[1]}"
    finally:
        s.close()


def on_taken(db_dsn: str | None, key: str, address: str, **database) -> Config:
    config = config_for(db_dsn) if db_dsn else Config(database=DatabaseConfig(**database))
    return replace_http(config, **{key.removeprefix("http."): address})


@pytest.mark.parametrize("key", ["http.listen", "http.ops_listen"])
async def test_an_address_in_use_names_its_setting_before_anything_starts(db_dsn, key):
    with taken_port() as address:
        tr = Tracker(on_taken(db_dsn, key, address))
        with pytest.raises(StartError) as e:
            await tr.start()
    assert e.value.key == key and e.value.value == address
    assert "address already in use" in e.value.reason
    assert str(e.value).startswith(f"{key} = {address}: ")
    assert tr.pool is None and not tr.listen_addresses  # nothing was started


async def test_an_address_in_use_makes_no_embedded_cluster(tmp_path):
    # a new state_dir was initialised (46 MB), the cluster started and stopped, only to exit 2
    with taken_port() as address:
        tr = Tracker(on_taken(None, "http.listen", address, state_dir=str(tmp_path / "state")))
        with pytest.raises(StartError):
            await tr.start()
    assert not (tmp_path / "state").exists() and tr.embedded is None


@pytest.mark.parametrize("key", ["http.listen", "http.ops_listen"])
async def test_an_address_taken_after_the_look_stops_what_started_in_reverse(db_dsn, key, monkeypatch):
    # the look before the start is the early word; the bind decides (another process may take
    # the port in between): what started by then is stopped, nothing left running
    monkeypatch.setattr(connections, "taken", lambda address: None)
    with taken_port() as address:
        tr = Tracker(on_taken(db_dsn, key, address))
        with pytest.raises(StartError) as e:
            await tr.start()
    assert e.value.key == key and "address already in use" in e.value.reason
    assert tr.pool is not None and tr.pool.is_closing()  # the parts that started are stopped
    postbacks = next(c for c in tr.components if type(c).__name__ == "Postbacks")
    assert postbacks.worker is None  # the postback worker too
    if key == "http.ops_listen":  # the postback listener had started: it is closed again
        host, port = tr.listen_addresses["listen"]
        with pytest.raises(OSError):
            await asyncio.open_connection(host, port)


async def closed_within(reader: asyncio.StreamReader, timeout: float) -> float:
    """How long until the server closes the connection (reading what it sends meanwhile)."""
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        while await reader.read(1024):
            pass
    return time.monotonic() - started


async def test_a_body_too_large_is_answered_413_and_the_rest_is_not_read_for_long(db_dsn):
    # aiohttp read and dropped the rest for 10 s: one client pushed 3.8 GB through a
    # connection, 6 s of the daemon's CPU
    async with running(config_for(db_dsn)) as (tr, base):
        host, port = tr.listen_addresses["listen"]
        reader, writer = await asyncio.open_connection(host, port)
        path = postback_url("", "skycore")
        writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {10 ** 10}\r\n\r\n".encode())
        started = time.monotonic()

        async def push() -> None:
            chunk = b"x" * 65536
            with contextlib.suppress(ConnectionError):
                while time.monotonic() - started < 15:
                    writer.write(chunk)
                    await writer.drain()

        pushing = asyncio.create_task(push())
        try:
            async with asyncio.timeout(15):
                answer = await reader.readuntil(b"\r\n")
                with contextlib.suppress(ConnectionResetError):  # closed, or reset: either ends it
                    while await reader.read(65536):
                        pass
            took = time.monotonic() - started
        finally:
            pushing.cancel()
            writer.close()
        assert answer.startswith(b"HTTP/1.1 413")
        assert took < connections.LINGER_S + 3, took


async def test_a_body_trickled_in_is_cut_off(db_dsn, monkeypatch):
    monkeypatch.setattr(middleware, "_slow_lines", Throttle())  # logged a line a minute: the first
    config = replace_http(config_for(db_dsn), body_timeout_s=0.5, keepalive_timeout_s=30.0)
    async with running(config) as (tr, base):
        host, port = tr.listen_addresses["listen"]
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"POST /postbacks/skycore/{TOKENS['skycore']} HTTP/1.1\r\nHost: x\r\n"
                     "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n".encode())

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                for _ in range(1000):
                    writer.write(b" ")
                    await writer.drain()
                    await asyncio.sleep(0.05)

        sender = asyncio.create_task(trickle())
        try:
            with structlog.testing.capture_logs() as logs:
                took = await closed_within(reader, 5)
        finally:
            sender.cancel()
            writer.close()
        assert 0.4 < took < 3
        assert "request body too slow; connection closed" in [e["event"] for e in logs]
        assert await tr.pool.fetchval("SELECT count(*) FROM tracker.postbacks") == 0


async def test_an_idle_connection_is_closed(db_dsn):
    config = replace_http(config_for(db_dsn), keepalive_timeout_s=0.5)
    async with running(config) as (tr, base):
        host, port = tr.listen_addresses["listen"]
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers never finished
            took = await closed_within(reader, 5)
        finally:
            writer.close()
        assert 0.4 < took < 3


async def healthz(host: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        async with asyncio.timeout(5):
            return (await reader.read()).split(b"\r\n", 1)[0]
    finally:
        writer.close()


async def test_every_address_written_as_ipv6_takes_ipv4_too(db_dsn):
    """`[::]` (every address, as on Linux): asyncio binds an IPv6 socket v6-only, and every
    vendor posting over IPv4 was refused the connection."""
    async with running(replace_http(config_for(db_dsn), listen="[::]:0")) as (tr, _):
        port = tr.listen_addresses["listen"][1]
        for host in ("127.0.0.1", "::1"):
            assert await healthz(host, port) == b"HTTP/1.1 200 OK", host
    with taken_port() as address:  # and the early look sees an IPv4 port taken
        assert connections.taken(f"[::]:{address.rsplit(':', 1)[1]}") == "address already in use"
        assert connections.taken(f"[0::]:{address.rsplit(':', 1)[1]}") == "address already in use"


def test_every_address_where_ipv6_is_off_is_one_line_not_a_traceback(monkeypatch):
    """Python's dual-stack socket raises ValueError where the kernel has IPv6 turned off: the
    start died with a traceback instead of naming the setting."""
    def no_ipv6(*_args, **_kwargs):
        raise ValueError("dualstack_ipv6 not supported on this platform")

    monkeypatch.setattr(connections.socket, "create_server", no_ipv6)
    assert connections.taken("[::]:8080").startswith("the host has IPv6 turned off: listen on 0.0.0.0")


async def test_a_full_listener_sheds_its_oldest_connection_that_holds_no_request(db_dsn):
    # A flood of idle connections used up the process's descriptors (hence the limit); then
    # one client holding the limit's connections, each with a head never finished, shut every
    # vendor out, allow_networks or not: the new connection was the one closed.
    config = replace_http(config_for(db_dsn), max_connections=3, keepalive_timeout_s=30.0)
    async with running(config) as (tr, base):
        host, port = tr.listen_addresses["listen"]

        async def slow_one() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            """Served once (so the server holds it), then the start of a request, and no more."""
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            async with asyncio.timeout(5):
                await reader.readuntil(b"}")
            writer.write(b"GET /healthz HTTP/1.1\r\n")
            return reader, writer

        slow = [await slow_one() for _ in range(3)]
        try:
            for i in range(2):  # the listener full: a new one is served, the oldest slow one closed
                with structlog.testing.capture_logs() as logs:
                    assert await healthz(host, port) == b"HTTP/1.1 200 OK", i
                assert await closed_within(slow[i][0], 5) < 1, i
                if i == 0:
                    [line] = [e for e in logs if e["event"].startswith("connection shed")]
                    assert (line["listener"], line["max_connections"]) == ("listen", 3)
                slow.append(await slow_one())  # full again
            for reader, _ in slow[2:]:  # the younger ones are held
                with pytest.raises(TimeoutError):
                    await closed_within(reader, 0.2)
        finally:
            for _, writer in slow:
                writer.close()
        shed = 'tracker_http_connections_shed_total{listener="listen"}'
        assert await metric_value(base, shed) >= 2


async def test_connections_past_the_limit_each_holding_a_request_are_closed_at_once_counted_and_logged(db_dsn):
    config = replace_http(config_for(db_dsn), max_connections=3, keepalive_timeout_s=30.0,
                          body_timeout_s=30.0)
    async with running(config) as (tr, base):
        host, port = tr.listen_addresses["listen"]
        path = postback_url("", "skycore")
        busy = [await asyncio.open_connection(host, port) for _ in range(3)]
        try:
            for reader, writer in busy:  # a request read, its body awaited: held, not shed
                writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                             "\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n".encode())
                async with asyncio.timeout(5):  # its handler reads the body: the request is held
                    assert b"100 Continue" in await reader.readuntil(b"\r\n\r\n")
            with structlog.testing.capture_logs() as logs:
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                took = await closed_within(reader, 5)  # closed unanswered
                writer.close()
            assert took < 1
            [line] = [e for e in logs if e["event"].startswith("connection refused")]
            assert (line["listener"], line["max_connections"]) == ("listen", 3)
            busy.pop()[1].close()
            for _ in range(100):  # the server sees the close when its loop next runs
                if await healthz(host, port) == b"HTTP/1.1 200 OK":
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("a connection freed was never served again")
        finally:
            for _, writer in busy:
                writer.close()
        refused = 'tracker_http_connections_refused_total{listener="listen"}'
        assert await metric_value(base, refused) >= 1


async def test_a_request_with_more_header_lines_than_the_limit_is_refused(db_dsn):
    # aiohttp's default (128 lines of 8,190 bytes) let one unfinished request hold 2 MB
    async with running(config_for(db_dsn)) as (tr, base):
        host, port = tr.listen_addresses["listen"]
        reader, writer = await asyncio.open_connection(host, port)
        many = b"".join(b"X-Filler-%d: x\r\n" % i for i in range(HEADERS_MAX + 1))
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
        async with asyncio.timeout(5):
            status = (await reader.read()).split(b"\r\n", 1)[0]
        writer.close()
        assert status.endswith(b" 400 Bad Request"), status  # aiohttp's parser answers HTTP/1.0
        assert await healthz(host, port) == b"HTTP/1.1 200 OK"


async def test_expect_100_continue_invites_only_a_body_that_would_be_read(db_dsn):
    # aiohttp's own expect handler invited the body before any check: 50 MB taken in for a 413
    async with running(config_for(db_dsn)) as (tr, base):
        await tr.pool.execute("INSERT INTO tracker.messages (vendor, vendor_ref) VALUES ('skycore', 'x-1')")
        host, port = tr.listen_addresses["listen"]

        async def first_answer(path: str, length: int) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {length}\r\nExpect: 100-continue\r\n\r\n".encode())
            async with asyncio.timeout(5):
                return await reader.readuntil(b"\r\n\r\n"), reader, writer

        good = f"/postbacks/skycore/{TOKENS['skycore']}"
        for path, length, status in ((f"/postbacks/skycore/{'w' * 32}", 100, b" 404 "),
                                     (good, 50_000_000, b" 413 ")):
            head, _, writer = await first_answer(path, length)
            writer.close()
            assert status in head.split(b"\r\n", 1)[0] and b"100 Continue" not in head, head
        body = orjson.dumps({"origin": "SMS_MT", "code": "N202", "status": "Delivered",
                             "to": "10000000001", "tracking-id": "x-1"})
        head, reader, writer = await first_answer(good, len(body))
        assert head == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(body)
        async with asyncio.timeout(5):
            answer = await reader.readuntil(b"\r\n\r\n")
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200 OK"), answer


async def test_what_the_router_refuses_is_counted_and_the_server_does_not_name_its_versions(db_dsn, monkeypatch):
    # a vendor posting with a method we do not take (PUT) was refused without a trace
    monkeypatch.setattr(middleware, "_method_lines", Throttle())
    async with running(config_for(db_dsn)) as (tr, base):
        with structlog.testing.capture_logs() as logs:
            async with aiohttp.ClientSession() as s:
                async with s.put(f"{base}/postbacks/skycore/{TOKENS['skycore']}", data=b"{}") as r:
                    assert r.status == 405 and r.headers["Server"] == "tracker"
                async with s.delete(f"{base}/postbacks/skycore/{TOKENS['skycore']}") as r:
                    assert r.status == 405  # another method: no line more (a key a method grew
                                            # without bound where any token is a method)
                async with s.get(f"{base}/no-such-page") as r:
                    assert r.status == 404 and r.headers["Server"] == "tracker"
                async with s.get(f"{base}/healthz") as r:
                    assert r.status == 200 and r.headers["Server"] == "tracker"
        assert await metric_value(base, 'tracker_http_refused_total{status="405"}') >= 1
        assert await metric_value(base, 'tracker_http_refused_total{status="404"}') >= 1
        assert [e["method"] for e in logs if e["event"] == "request refused: method not allowed"] == ["PUT"]


async def test_an_open_files_limit_too_low_for_the_connections_is_said_at_start(db_dsn, monkeypatch):
    from tracker.http import connections

    monkeypatch.setattr(connections, "raise_open_files", lambda: (300, 300))
    monkeypatch.setattr(connections, "Capped", Recorded)
    with structlog.testing.capture_logs() as logs:
        async with running(config_for(db_dsn)):
            pass
    [line] = [e for e in logs if e["event"].startswith("the process may open fewer files")]
    assert (line["open_files_limit"], line["max_connections"], line["listener"]) == (300, 512, "listen")
    # and the listener holds what the descriptors allow (a flood took them all before the cap:
    # the embedded cluster's keeper could not open its pid file)
    assert line["holds"] == 300 - connections.OPEN_FILES_RESERVE == Recorded.limits[-1]


class Recorded(connections.Capped):
    limits: list[int] = []

    def __init__(self, server, limit: int, listener: str) -> None:
        super().__init__(server, limit, listener)
        Recorded.limits.append(limit)


def test_the_open_files_soft_limit_is_raised_to_the_hard_one():
    import resource

    from tracker.http.connections import raise_open_files

    soft, hard = raise_open_files()
    assert soft == hard == resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def test_a_stop_with_a_drain_time_says_so_on_readyz_and_still_answers_with_connection_close(db_dsn):
    """http.drain_s: behind a load balancer, a stop first turns /readyz 503 while requests are
    still answered, each closing its connection; only then do the listeners close."""
    tr = Tracker(replace_http(config_for(db_dsn), drain_s=3.0))
    await tr.start()
    host, port = tr.listen_addresses["listen"]
    base = f"http://{host}:{port}"
    async with session() as s:
        status, _ = await readyz(s, base)
        assert status == 200
        async with s.get(base + "/healthz") as r:  # kept alive while not draining
            assert r.status == 200 and r.headers.get("Connection") != "close"
        with structlog.testing.capture_logs() as logs:
            stopping = asyncio.create_task(tr.stop())

            async def draining() -> bool:
                return (await readyz(s, base))[0] == 503
            await wait_until(draining, timeout=2.0, step=0.02)
        _, body = await readyz(s, base)
        assert named(body, "tracker") == ["stopping: draining for http.drain_s = 3 s"]
        assert [p["component"] for p in body["problems"]] == ["tracker"]
        async with s.post(postback_url(base, "skycore"), data=orjson.dumps(
                {"origin": "SMS_MT", "code": "N202", "status": "Delivered", "to": "10000000001",
                 "tracking-id": "drained-1", "timestamp": "2024-05-01T12:00:00+00:00"}),
                headers={"Content-Type": "application/json"}) as r:
            assert r.status == 200 and r.headers["Connection"] == "close"
        assert not stopping.done()
        assert await tr.pool.fetchval("SELECT count(*) FROM tracker.postbacks") == 1
        await stopping
    assert any(e["event"].startswith("draining") and e["drain_s"] == 3.0 for e in logs)
    with pytest.raises(OSError):
        await asyncio.open_connection(host, port)


async def test_a_stop_without_a_drain_time_closes_the_listeners_at_once(db_dsn):
    tr = Tracker(config_for(db_dsn))  # drain_s = 0, the default
    await tr.start()
    host, port = tr.listen_addresses["listen"]
    with structlog.testing.capture_logs() as logs:
        await tr.stop()
    assert not tr.drain.under_way
    assert not any(e["event"].startswith("draining") for e in logs)
    with pytest.raises(OSError):
        await asyncio.open_connection(host, port)


async def test_every_ipv4_address_is_bound_and_looked_at_as_before(db_dsn):
    # `0.0.0.0`, the usual production setting, beside the dual-stack path for `[::]`: taken
    # for it, every IPv4 listener failed to bind (reviewer B, session 28).
    async with running(replace_http(config_for(db_dsn), listen="0.0.0.0:0")) as (tr, _):
        port = tr.listen_addresses["listen"][1]
        assert await healthz("127.0.0.1", port) == b"HTTP/1.1 200 OK"
    with taken_port() as address:
        assert connections.taken(f"0.0.0.0:{address.rsplit(':', 1)[1]}") == "address already in use"
