"""The vendors' HTTP/1.1 client (tracker.http.client) against real servers on loopback: an
aiohttp application for well-formed answers, raw asyncio servers for what aiohttp would not
send (a body until close, a stale keep-alive connection, a broken answer), TLS with a test CA."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl

import orjson
import pytest
import trustme
from aiohttp import web

from tracker.adapters.base import HttpRequest
from tracker.http.client import KEEPALIVE_S, HttpClient
from tracker.http.client import TransportError

SECRET = "s3cret-api-key"
SEEN = web.AppKey("seen", object)


class Seen:
    """What the echo server saw: the connections, the most requests at once."""
    def __init__(self) -> None:
        self.peers: set = set()
        self.in_flight = self.most = 0


async def echo(request: web.Request) -> web.Response:
    seen = request.config_dict[SEEN]
    seen.peers.add(request.transport.get_extra_info("peername"))
    seen.in_flight += 1
    seen.most = max(seen.most, seen.in_flight)
    try:
        if "slow" in request.query:
            await asyncio.sleep(float(request.query["slow"]))
        body = await request.read()
    finally:
        seen.in_flight -= 1
    headers = {"Connection": "close"} if "close" in request.query else {}
    return web.json_response({"method": request.method, "path_qs": request.path_qs,
                              "headers": dict(request.headers), "body": body.decode(),
                              "names": [k.decode().lower() for k, _ in request.raw_headers]},
                             headers={**headers, "Retry-After": "7"})


async def chunked(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for i in range(int(request.query["n"])):
        await resp.write(b"x" * 1000 + str(i % 10).encode())
    await resp.write_eof()
    return resp


async def sized(request: web.Request) -> web.Response:
    return web.Response(body=b"y" * int(request.query["n"]))


@contextlib.asynccontextmanager
async def serving(tls: ssl.SSLContext | None = None):
    """The echo, chunked and sized routes on 127.0.0.1: (what the echo saw, the base URL)."""
    app = web.Application()
    app[SEEN] = Seen()
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/sized", sized)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls).start()
        host, port = runner.addresses[0][:2]
        yield app[SEEN], f"{'https' if tls else 'http'}://{host}:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def server():
    async with serving() as served:
        yield served


async def raw_server(answer):
    """A server that runs `answer(reader, writer, n)` for each connection (n counts them)."""
    count = 0

    async def handle(reader, writer):
        nonlocal count
        count += 1
        try:
            await answer(reader, writer, count)
        finally:
            writer.close()
    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    return srv, f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"


async def read_head(reader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


async def test_a_request_is_sent_as_given_and_its_answer_read(server):
    seen, base = server
    t = HttpClient(4, 5.0)
    try:
        get = await t(HttpRequest("GET", base + "/echo", params={"msg_id": "a b+c", "api_key": SECRET},
                                  headers={"Authorization": "Basic xyz"}))
        form = await t(HttpRequest("POST", base + "/echo?x=1", data={"to": "+15551230000"}))
        js = await t(HttpRequest("POST", base + "/echo", json={"ids": [1, 2]}))
        raw = await t(HttpRequest("PUT", base.replace("//", "//us%40er:p%3Ass@") + "/echo",
                                  headers={"content-type": "text/plain"}, content=b"as it is"))
    finally:
        await t.close()
    assert get.status == 200 and get.headers["retry-after"] == "7"  # headers: any case
    g = orjson.loads(get.body)
    assert g["method"] == "GET" and g["path_qs"] == f"/echo?msg_id=a+b%2Bc&api_key={SECRET}"
    assert g["headers"]["Authorization"] == "Basic xyz" and "Content-Length" not in g["headers"]
    f = orjson.loads(form.body)
    assert f["path_qs"] == "/echo?x=1" and f["body"] == "to=%2B15551230000"
    assert f["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    j = orjson.loads(js.body)
    assert j["body"] == '{"ids":[1,2]}' and j["headers"]["Content-Type"] == "application/json"
    r = orjson.loads(raw.body)
    assert r["method"] == "PUT" and r["body"] == "as it is" and r["headers"]["Content-Length"] == "8"
    assert r["headers"]["Content-Type"] == "text/plain" and r["names"].count("content-type") == 1
    assert r["headers"]["Authorization"] == "Basic " + base64.b64encode(b"us@er:p:ss").decode()
    assert r["headers"]["Host"] == base.removeprefix("http://")
    assert len(seen.peers) == 1 and t.opened == 1  # one kept-alive connection for all four


async def test_connections_are_limited_and_a_closing_answer_is_not_reused(server):
    seen, base = server
    t = HttpClient(2, 5.0)
    try:
        await asyncio.gather(*(t(HttpRequest("GET", base + "/echo", params={"slow": "0.05"}))
                               for _ in range(6)))
        assert seen.most == 2 and t.opened == 2
        await t(HttpRequest("GET", base + "/echo", params={"close": "1"}))
        await asyncio.gather(*(t(HttpRequest("GET", base + "/echo", params={"slow": "0.05"}))
                               for _ in range(2)))
    finally:
        await t.close()
    assert t.opened == 3  # the connection the server closed was not used again


async def test_chunked_and_sized_answers_and_the_body_limit(server):
    _, base = server
    t = HttpClient(2, 5.0, max_body=50_000)
    try:
        ok = await t(HttpRequest("GET", base + "/chunked", params={"n": "40"}))
        assert len(ok.body) == 40 * 1001 and ok.body.endswith(b"9")
        for path, n in (("/chunked", "60"), ("/sized", "60000")):
            with pytest.raises(TransportError, match="^answer too large$"):
                await t(HttpRequest("GET", base + path, params={"n": n}))
        assert (await t(HttpRequest("GET", base + "/sized", params={"n": "10"}))).body == b"y" * 10
    finally:
        await t.close()


async def test_a_timeout_names_only_its_kind_and_the_connection_is_dropped(server):
    _, base = server
    t = HttpClient(2, 0.5)  # a slow machine still answers a plain request in time
    try:
        with pytest.raises(TransportError) as e:
            await t(HttpRequest("GET", base + "/echo", params={"slow": "2", "api_key": SECRET}))
        assert str(e.value) == "timeout" and SECRET not in repr(e.value)
        assert (await t(HttpRequest("GET", base + "/echo"))).status == 200
        assert t.opened == 2  # the timed-out connection's late answer cannot be read as this one's
    finally:
        await t.close()


async def test_a_body_until_close_is_whole():
    async def answer(reader, writer, n):
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, ")
        await writer.drain()
        writer.write(b"part two")
    srv, base = await raw_server(answer)
    t = HttpClient(1, 5.0)
    try:
        r = await t(HttpRequest("GET", base + "/x"))
    finally:
        await t.close()
        srv.close()
    assert (r.status, r.body) == (200, b"part one, part two")


async def test_a_stale_kept_alive_connection_is_replaced_once():
    """The server keeps the first connection open after its answer, then closes it as the next
    request comes (its idle timeout, racing the request): that request goes out again, once,
    on a new connection."""
    async def answer(reader, writer, n):
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        if n == 1:
            await read_head(reader)  # the second request: closed unanswered
    srv, base = await raw_server(answer)
    t = HttpClient(1, 5.0)
    try:
        assert (await t(HttpRequest("GET", base + "/x"))).body == b"ok"
        assert (await t(HttpRequest("GET", base + "/x"))).body == b"ok"
    finally:
        await t.close()
        srv.close()
    assert t.opened == 2


async def test_an_idle_connection_is_not_reused_past_its_keepalive(server):
    seen, base = server
    now = [0.0]
    t = HttpClient(1, 5.0, clock=lambda: now[0])
    try:
        await t(HttpRequest("GET", base + "/echo"))
        now[0] += KEEPALIVE_S - 1
        await t(HttpRequest("GET", base + "/echo"))
        assert t.opened == 1
        now[0] += KEEPALIVE_S + 1
        await t(HttpRequest("GET", base + "/echo"))
    finally:
        await t.close()
    assert t.opened == 2 and len(seen.peers) == 2


@pytest.mark.parametrize("reply, kind", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "closed the connection without answering"),
    (b"", "closed the connection without answering"),
    (b"SMTP ready\r\n\r\n", "malformed answer"),
])
async def test_a_broken_answer_is_a_transport_error(reply, kind):
    async def answer(reader, writer, n):
        await read_head(reader)
        writer.write(reply)
    srv, base = await raw_server(answer)
    t = HttpClient(1, 5.0)
    try:
        with pytest.raises(TransportError, match=f"^{kind}$"):
            await t(HttpRequest("GET", base + "/x", params={"api_key": SECRET}))
    finally:
        await t.close()
        srv.close()


async def test_endless_headers_are_cut_off_and_a_big_body_after_short_ones_is_not():
    # an answer whose headers never end: the parser would keep them all (1.4 GB in 3 s once,
    # until the request's timeout); past MAX_HEAD the connection is dropped at once
    async def answer(reader, writer, n):
        await read_head(reader)
        if n == 1:
            writer.write(b"HTTP/1.1 200 OK\r\n")
            for i in range(2000):
                writer.write(b"X-Filler-%d: %s\r\n" % (i, b"y" * 100))
                await writer.drain()
            await reader.read()  # never ends them: holds on until the client hangs up
        else:  # headers, then 1 MB of body in the same reads
            body = b"z" * (1 << 20)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    srv, base = await raw_server(answer)
    t = HttpClient(1, 20.0)
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(TransportError, match="^answer's headers over 65536 bytes$"):
            await t(HttpRequest("GET", base + "/x"))
        assert asyncio.get_running_loop().time() - started < 10  # not the request's timeout
        big = await t(HttpRequest("GET", base + "/y"))
        assert big.status == 200 and len(big.body) == 1 << 20
    finally:
        await t.close()
        srv.close()


async def test_refused_and_unsendable_requests():
    t = HttpClient(1, 5.0)
    srv, base = await raw_server(lambda *a: asyncio.sleep(0))
    srv.close()
    await srv.wait_closed()
    try:
        with pytest.raises(TransportError, match="^cannot connect: Connection refused$"):
            await t(HttpRequest("GET", base + "/x"))
        with pytest.raises(TransportError, match="^invalid request$"):
            await t(HttpRequest("GET", base + "/x", headers={"X-A": "1\r\nX-Injected: 2"}))
        with pytest.raises(TransportError, match="^unsupported URL$"):
            await t(HttpRequest("GET", "ftp://example.com/x"))
        # a host name the resolver refuses before asking (an empty label, one over 63
        # characters) raised UnicodeError, which no caller expects: a sink's events looped
        for host in ("hooks..example.com", "a" * 64 + ".example.com"):
            with pytest.raises(TransportError, match="^cannot connect: the host name is no valid DNS name$"):
                await t(HttpRequest("GET", f"https://{host}/x"))
    finally:
        await t.close()
    assert t.opened == 0


async def test_tls_is_verified():
    ca = trustme.CA()
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(served)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    good, default = HttpClient(1, 5.0, tls=trusting), HttpClient(1, 5.0)
    async with serving(tls=served) as (_, base):
        try:
            assert (await good(HttpRequest("GET", base + "/echo"))).status == 200
            with pytest.raises(TransportError, match="^cannot connect: TLS CERTIFICATE_VERIFY_FAILED$"):
                await default(HttpRequest("GET", base + "/echo"))  # the system's trust store knows no test CA
        finally:
            await good.close()
            await default.close()


async def test_each_vendors_transport_takes_answers_as_large_as_its_calls_need_and_no_larger(server):
    # One message's status is small; 32 MiB for every vendor let one hostile answer of empty
    # objects take a gigabyte to parse. A Sparrow batch report of 200,000 recipients is 10 MB.
    from tracker.config_types import VendorConfig
    from tracker.poller.transport import vendor_transport

    _, base = server
    two_mib = HttpRequest("GET", base + "/sized", params={"n": str(2 * 1024 * 1024)})
    for vendor, fits in (("twilio", False), ("sparksender", False), ("engagespark", True), ("sparrow", True)):
        t = vendor_transport(VendorConfig(name=vendor))
        try:
            if fits:
                assert len((await t(two_mib)).body) == 2 * 1024 * 1024
            else:
                with pytest.raises(TransportError, match="^answer too large$"):
                    await t(two_mib)
        finally:
            await t.close()
