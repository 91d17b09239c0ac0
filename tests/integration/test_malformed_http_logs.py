"""Malformed HTTP sent to a real aiohttp server on loopback is logged as one brief WARNING per
request (no traceback), at most a few a minute, with a count of the lines left out."""
from __future__ import annotations

import asyncio
import io
import logging as stdlib_logging

import orjson
import pytest
import structlog
from aiohttp import web

from tracker import logging as tlog

PER_MINUTE = 3

LONG_URL = b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
BAD_HEADER_BYTES = b"GET / HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n"
CHUNKED_WITH_LENGTH = (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                       b"Content-Length: 5\r\n\r\n0\r\n\r\n")
GOOD = b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
HANDLER_BUG = b"GET /bug HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(tlog, "_malformed_requests", tlog.MalformedRequestFilter(PER_MINUTE, clock))
    yield clock
    structlog.reset_defaults()
    root = stdlib_logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, tlog._StdlibBridge)]:
        root.removeHandler(h)
    for name in tlog.AIOHTTP_SERVER_LOGGERS:
        logger = stdlib_logging.getLogger(name)
        for f in [f for f in logger.filters if isinstance(f, tlog.MalformedRequestFilter)]:
            logger.removeFilter(f)
        logger.setLevel(stdlib_logging.NOTSET)


@pytest.fixture
def log_lines(clock):
    out = io.StringIO()
    tlog.configure("info", "json", stream=out, cache=False)

    def lines() -> list[dict]:
        return [orjson.loads(line) for line in out.getvalue().splitlines() if line]
    return lines


@pytest.fixture
async def server():
    async def ok(_request):
        return web.Response(text="ok")

    async def bug(_request):
        raise RuntimeError("a real bug in a handler")

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/bug", bug)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield site._server.sockets[0].getsockname()[:2]
    await runner.cleanup()


def status(answer: bytes) -> int:
    """The status code of a raw HTTP/1.x answer (aiohttp answers parse errors as HTTP/1.0)."""
    assert answer.startswith(b"HTTP/1."), answer[:80]
    return int(answer.split(b" ", 2)[1])


async def send_raw(address, data: bytes) -> bytes:
    """Send raw bytes; the answer up to the server closing the connection."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


def aiohttp_lines(lines: list[dict]) -> list[dict]:
    return [r for r in lines if r.get("logger", "").startswith("aiohttp.")]


@pytest.mark.parametrize("request_bytes,error_type", [
    (LONG_URL, "LineTooLong"),
    (BAD_HEADER_BYTES, "BadHttpMessage"),
    (CHUNKED_WITH_LENGTH, "BadHttpMessage"),
], ids=["8 KB URL", "bad header bytes", "Transfer-Encoding with Content-Length"])
async def test_a_malformed_request_is_one_brief_warning(server, log_lines, request_bytes, error_type):
    assert status(await send_raw(server, request_bytes)) == 400
    [line] = aiohttp_lines(log_lines())
    assert line["level"] == "warning" and line["event"] == "malformed HTTP request refused"
    assert line["error"].startswith(f"{error_type}: ")
    assert len(line["error"]) <= tlog.MALFORMED_ERROR_MAX_CHARS + len(error_type) + 2
    assert line["peer"] == "127.0.0.1"
    assert "exception" not in line and "Traceback" not in orjson.dumps(line).decode()
    assert "suppressed" not in line


TLS_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)) + b"\r\n\r\n"
NOT_HTTP = b"SSH-2.0-OpenSSH_9.2\r\n\r\n"


@pytest.mark.parametrize("request_bytes,kind", [(TLS_HELLO, "tls"), (NOT_HTTP, "not_http"),
                                                (LONG_URL, "bad_request")])
async def test_bytes_that_are_not_http_are_one_brief_warning_and_counted_by_kind(server, log_lines, request_bytes, kind):
    """aiohttp logs a connection's first request that is not HTTP at debug level only: a vendor
    posting TLS to the plain port (an https:// URL) looked like that vendor gone quiet."""
    from tracker import metrics
    counted = metrics.http_malformed.labels(kind)
    before = counted._value.get()
    assert status(await send_raw(server, request_bytes)) == 400
    [line] = aiohttp_lines(log_lines())
    assert line["level"] == "warning" and line["event"] == "malformed HTTP request refused"
    assert counted._value.get() - before == 1


async def test_aiohttps_other_debug_lines_stay_out(log_lines):
    stdlib_logging.getLogger("aiohttp.server").debug("Ignored premature client disconnection")
    assert aiohttp_lines(log_lines()) == []


async def test_a_flood_is_rate_limited_and_counted(server, log_lines, clock):
    for _ in range(PER_MINUTE + 7):
        assert status(await send_raw(server, LONG_URL)) == 400
    assert len(aiohttp_lines(log_lines())) == PER_MINUTE
    clock.now += 61  # a minute later the next one is logged, with the count of those left out
    await send_raw(server, BAD_HEADER_BYTES)
    lines = aiohttp_lines(log_lines())
    assert len(lines) == PER_MINUTE + 1
    assert lines[-1]["suppressed"] == 7 and lines[-1]["level"] == "warning"
    clock.now += 61
    await send_raw(server, BAD_HEADER_BYTES)
    assert "suppressed" not in aiohttp_lines(log_lines())[-1]  # the count is given once


async def test_a_handlers_own_error_keeps_its_traceback(server, log_lines):
    assert status(await send_raw(server, GOOD)) == 200
    assert status(await send_raw(server, HANDLER_BUG)) == 500
    [line] = aiohttp_lines(log_lines())
    assert line["level"] == "error"
    assert "RuntimeError: a real bug in a handler" in line["exception"]


async def test_the_token_in_a_malformed_postback_url_is_masked(server, log_lines):
    request = b"GET /postbacks/skycore/tok-SECRET-123" + b"x" * 9000 + b" HTTP/1.1\r\n\r\n"
    await send_raw(server, request)
    text = "".join(orjson.dumps(r).decode() for r in aiohttp_lines(log_lines()))
    assert "tok-SECRET-123" not in text


async def test_a_flood_of_malformed_requests_is_counted_whole(server, log_lines, clock):
    # The log is throttled; the count is not (a flood is when it matters: reviewer B).
    from tracker import metrics

    counted = metrics.http_malformed.labels("bad_request")
    before = counted._value.get()
    for _ in range(PER_MINUTE + 7):
        assert status(await send_raw(server, LONG_URL)) == 400
    assert counted._value.get() - before == PER_MINUTE + 7
    assert len(log_lines()) <= PER_MINUTE + 1
