"""A small HTTP/1.1 client for the vendors' calls, the poller's real transport.

Why not aiohttp's client: a status poll is mostly its one call, and aiohttp's client costs
55-70 us of CPU per call on the benchmark machines where this one costs 13-15
(docs/performance.md, session 13). It does only what the vendors' APIs need:

- keep-alive connections per scheme, host and port, at most `connections` requests at once;
  an idle connection is dropped after KEEPALIVE_S or when the server closes it;
- request bodies with a Content-Length (form or JSON, built by the caller); answers with a
  Content-Length, chunked, or until the server closes (httptools, llhttp, parses them);
- one total timeout per request, connecting included; a body limit;
- TLS with the system's trust store and the host name checked (or a given context);
- a request that finds its reused connection closed by the server before any answer came is
  sent once more on a new connection (status calls and logins only read).

Not done: redirects (the answer is returned as it is), proxies, cookies, compression (no
Accept-Encoding is sent), HTTP/2, 100-continue. Every failure raises TransportError naming
its kind only: requests carry credentials, so neither the URL nor the body is ever in an error.
"""
from __future__ import annotations

import asyncio
import functools
import ssl
import time
from collections import deque
from typing import Callable
from urllib.parse import urlencode, urlsplit

import httptools
import orjson
from multidict import CIMultiDict

from tracker.adapters.base import HttpRequest, HttpResponse
from tracker.config_types import VendorConfig
from tracker.poller.transport import TransportError

KEEPALIVE_S = 15.0  # an idle connection older than this is closed, not reused (aiohttp's default)
MAX_BODY = 32 * 1024 * 1024
USER_AGENT = "sms-delivery-tracker/0.1"


class _Connection(asyncio.Protocol):
    """One connection, one exchange at a time. The parser's callbacks fill the answer."""

    def __init__(self, max_body: int) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.max_body = max_body
        self.transport: asyncio.Transport | None = None
        self.answer: asyncio.Future | None = None
        self.closed = False
        self.idle_since = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self._reset()

    def _reset(self) -> None:
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.size = 0
        self.started = False  # a byte of this exchange's answer came
        self.head_done = False
        self.problem: str | None = None  # why the answer is refused (set inside a callback)

    def exchange(self, raw: bytes, deadline: float) -> asyncio.Future:
        """Send a request; the future is its answer, or TransportError("timeout") at `deadline`
        (the loop's time), when the connection is closed: its answer may still come."""
        self._reset()
        loop = asyncio.get_running_loop()
        self.answer = loop.create_future()
        self.timer = loop.call_at(deadline, self._fail, "timeout")
        self.transport.write(raw)
        return self.answer

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.answer is None or self.answer.done():  # nothing asked: the server broke the exchange
            self.close()
            return
        self.started = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail(self.problem or "malformed answer")

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        if self.answer is not None and not self.answer.done():
            if self.head_done and self.parser.get_status_code() and not self._delimited():
                self._complete()  # the body ran until the server closed: it is whole
            else:
                self.answer.set_exception(_Lost(self.started))

    # httptools' callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_body:
            self.problem = "answer too large"
            raise _Refused
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        self._complete()

    # ---
    def _header(self, lname: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == lname), None)

    def _delimited(self) -> bool:
        return self._header("content-length") is not None or (
            "chunked" in (self._header("transfer-encoding") or "").lower())

    def _complete(self) -> None:
        if self.answer is None or self.answer.done():
            return
        self.timer.cancel()
        if not self.parser.should_keep_alive():
            self.close()
        self.answer.set_result(HttpResponse(self.parser.get_status_code(),
                                            CIMultiDict(self.headers), b"".join(self.body)))

    def _fail(self, kind: str) -> None:
        self.close()
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(TransportError(kind))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Refused(Exception):
    """Raised inside a parser callback to stop the parse (the reason is in `problem`)."""


class _Lost(Exception):
    """The server closed the connection before the answer was whole."""

    def __init__(self, started: bool) -> None:
        self.started = started


@functools.lru_cache(maxsize=1024)
def _split(url: str) -> tuple[tuple[str, str, int], str, str]:
    """The connection key (scheme, host, port), the request target, the Host header."""
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise TransportError("unsupported URL")
    port = u.port or (443 if u.scheme == "https" else 80)
    target = (u.path or "/") + (f"?{u.query}" if u.query else "")
    return (u.scheme, u.hostname, port), target, u.netloc.rpartition("@")[2]


def encode(req: HttpRequest, user_agent: str) -> tuple[tuple[str, str, int], bytes]:
    """The connection key (scheme, host, port) and the request's bytes."""
    key, target, host = _split(req.url)
    if req.params:
        target += ("&" if "?" in target else "?") + urlencode(req.params)
    headers = {"host": ("Host", host), "user-agent": ("User-Agent", user_agent),
               "accept": ("Accept", "*/*")}
    body = b""
    if req.json is not None:
        body, headers["content-type"] = orjson.dumps(req.json), ("Content-Type", "application/json")
    elif req.data is not None:
        body = urlencode(req.data).encode()
        headers["content-type"] = ("Content-Type", "application/x-www-form-urlencoded")
    for k, v in (req.headers or {}).items():
        headers[k.lower()] = (k, v)  # the caller's own headers win (Accept, Content-Type)
    if body or req.method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
        headers["content-length"] = ("Content-Length", str(len(body)))
    head = (f"{req.method} {target} HTTP/1.1\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.values()) + "\r\n")
    lines = len(headers) + 2
    if head.count("\n") != lines or head.count("\r") != lines or "\0" in head or " " in target:
        raise TransportError("invalid request")  # a header or URL that would split the request
    return key, head.encode("latin-1") + body


class Http1Transport:
    """The poller's transport (tracker.poller.transport): `await transport(request)`."""

    def __init__(self, connections: int, timeout_s: float, user_agent: str = USER_AGENT,
                 max_body: int = MAX_BODY, tls: ssl.SSLContext | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout_s = timeout_s
        self.user_agent = user_agent
        self.max_body = max_body
        self.tls = tls
        self.clock = clock
        self.slots = asyncio.Semaphore(connections)
        self.idle: dict[tuple[str, str, int], deque[_Connection]] = {}
        self.opened = 0  # connections made (tests and the reuse check read it)

    async def __call__(self, req: HttpRequest) -> HttpResponse:
        key, raw = encode(req, self.user_agent)
        async with self.slots:
            conn = None
            # One deadline for the whole request; a timer per exchange (asyncio.timeout()
            # cost a fifth of this client's CPU per call).
            deadline = asyncio.get_running_loop().time() + self.timeout_s
            try:
                conn, reused = await self._connection(key, deadline)
                try:
                    answer = await conn.exchange(raw, deadline)
                except _Lost as lost:
                    if not reused or lost.started:
                        raise
                    conn, _ = await self._connection(key, deadline, fresh=True)  # stale: once more
                    answer = await conn.exchange(raw, deadline)
            except TimeoutError:  # while connecting
                raise TransportError("timeout") from None
            except _Lost:
                raise TransportError("ServerDisconnectedError") from None
            except OSError as e:  # refused, unreachable, name not found, TLS refused
                if conn is not None:
                    conn.close()
                raise TransportError(type(e).__name__) from None
            except BaseException:
                if conn is not None:
                    conn.close()
                raise
            if not conn.closed:
                conn.idle_since = self.clock()
                self.idle.setdefault(key, deque()).append(conn)
            return answer

    async def _connection(self, key, deadline: float, fresh: bool = False) -> tuple[_Connection, bool]:
        pool = self.idle.get(key)
        now = self.clock()
        while pool and not fresh:
            conn = pool.pop()  # the most recently used: the least likely to be stale
            if not conn.closed and now - conn.idle_since < KEEPALIVE_S:
                return conn, True
            conn.close()
        scheme, host, port = key
        tls = None
        if scheme == "https":
            tls = self.tls or ssl.create_default_context()
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(
            loop.create_connection(lambda: _Connection(self.max_body), host, port, ssl=tls,
                                   server_hostname=host if tls else None),
            deadline - loop.time())
        self.opened += 1
        return conn, False

    async def close(self) -> None:
        for pool in self.idle.values():
            while pool:
                pool.pop().close()


def vendor_transport(cfg: VendorConfig) -> Http1Transport:
    """The daemon's transport for one vendor."""
    return Http1Transport(cfg.concurrency, cfg.request_timeout_s)
