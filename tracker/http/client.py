"""A small HTTP/1.1 client: the vendors' status calls (the poller's transport) and the
webhook sink's deliveries.

Why not aiohttp's client: a status poll is mostly its one call, and so is a webhook delivery;
aiohttp's client costs 55-70 us of CPU per call on the benchmark machines where this one costs
15-35 (docs/performance.md, session 13). It does only what those calls need:

- keep-alive connections per scheme, host and port, at most `connections` requests at once;
  an idle connection is dropped after KEEPALIVE_S or when the server closes it;
- requests made into bytes by tracker.http.request (pure; bodies with a Content-Length);
  answers with a Content-Length, chunked, or until the server closes (httptools, llhttp,
  parses them); interim answers (100 Continue, 103 Early Hints, any 1xx but 101) are skipped
  and the final one read; a 101 (an upgrade nobody asked for) is a malformed answer;
- one total timeout per request, connecting included; a limit on the answer's headers (past it
  the connection is dropped: TransportError) and on its body (past it the connection is dropped
  and TooLarge, a TransportError, still carries the status); what is neither head nor body
  (chunk framing, trailers: these are not kept) counts with the head against MAX_HEAD plus the
  body's size, past which it is TooLarge too (endless trailers or 2-byte chunks stop early);
- a connection that sends more than the one answer asked for is dropped, never reused;
- TLS with the system's trust store and the host name checked (or a given context);
- a request that finds its reused connection closed by the server before any byte of an answer
  came is sent once more on a new connection (a kept-alive connection the server closed as
  the request went out, racing its idle timeout). The server may have read it, even acted on
  it, before closing: this is safe only because every request made is idempotent or deduped.
  The vendors' calls are GETs, and Sparrow's login POST (a second login only issues another
  token); a webhook POST may reach its receiver twice, with the same webhook-id, by which
  receivers dedupe every repeat anyway (docs/events.md). A caller whose request must not be
  repeated cannot use this client as it is.

Not done: redirects (the answer is returned as it is), proxies, cookies, compression (no
Accept-Encoding is sent), HTTP/2, 100-continue, HEAD (the parser, not knowing the method, would
wait for the body its Content-Length announces; no caller sends one). Every failure raises
TransportError (tracker.http.errors) naming its kind in words: requests carry credentials, so
neither the URL nor the body is ever in it.
"""
from __future__ import annotations

import asyncio
import os
import socket
import ssl
import time
from collections import deque
from typing import Callable

import httptools
from multidict import CIMultiDict

from tracker.adapters.base import HttpRequest, HttpResponse
from tracker.http.errors import CLOSED, TIMEOUT, TooLarge, TransportError
from tracker.http.request import USER_AGENT, encode

KEEPALIVE_S = 15.0  # an idle connection older than this is closed, not reused (aiohttp's default)
MAX_BODY = 32 * 1024 * 1024
MAX_HEAD = 64 * 1024  # an answer's status line and headers, at most (aiohttp's server: 8190 a line)


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
        self.body: bytes | bytearray | None = None  # the first chunk as it came, then a bytearray
        self.size = 0  # bytes of body
        self.other = 0  # bytes that were not body: heads (1xx ones too), chunk framing, trailers
        self.started = False  # a byte of this exchange's answer came
        self.head_done = False  # the final answer's head (not a 1xx one's)
        self.too_large = False  # the body ran past max_body (set inside a callback)

    def exchange(self, raw: bytes, deadline: float) -> asyncio.Future:
        """Send a request; the future is its answer, or TransportError("timeout") at `deadline`
        (the loop's time), when the connection is closed: its answer may still come."""
        self._reset()
        loop = asyncio.get_running_loop()
        self.answer = loop.create_future()
        self.timer = loop.call_at(deadline, self._expire)
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
        size = self.size
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.too_large:
                self._fail(TooLarge(self.parser.get_status_code(), CIMultiDict(self.headers)))
            else:
                self._fail(TransportError("malformed answer"))
            return
        except httptools.HttpParserUpgrade:  # a 101 is refused in on_headers_complete: not seen
            self._fail(TransportError("malformed answer"))
            return
        # What was not body: the parser keeps a head (and a trailer) until whole, and framing
        # costs a callback a chunk. Bounded: MAX_HEAD for the head, then as much as the body.
        self.other += len(data) - (self.size - size)
        if self.other > MAX_HEAD + self.size:
            if self.head_done:
                self._fail(TooLarge(self.parser.get_status_code(), CIMultiDict(self.headers)))
            else:
                self._fail(TransportError(f"answer's headers over {MAX_HEAD} bytes"))

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
    def on_message_begin(self) -> None:
        if self.head_done:  # a second answer to one request: what follows it cannot be trusted
            raise _Refused

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.head_done:  # trailers (after a chunked body) are not kept
            self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status >= 200:
            self.head_done = True
        elif status >= 100 and status != 101:  # an interim answer: the final one follows
            self.headers = []
        else:  # 101 Switching Protocols (nothing asked for one), or no status at all
            raise _Refused

    def on_body(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_body:
            self.too_large = True
            raise _Refused
        body = self.body
        if body is None:  # most answers: one chunk, kept as it came
            self.body = chunk
        elif body.__class__ is bytes:
            body = self.body = bytearray(body)
            body += chunk
        else:
            body += chunk

    def on_message_complete(self) -> None:
        if self.head_done:  # not a 1xx answer's end
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
        body, self.body = self.body, None  # an idle connection holds no answer
        if body is None:
            body = b""
        elif body.__class__ is bytearray:
            body = bytes(body)
        self.answer.set_result(HttpResponse(self.parser.get_status_code(),
                                            CIMultiDict(self.headers), body))

    def _fail(self, error: TransportError) -> None:
        self.close()
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(error)

    def _expire(self) -> None:
        self._fail(TransportError(TIMEOUT))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Refused(Exception):
    """Raised inside a parser callback to stop the parse: the body ran past its limit when
    `too_large` is set, else the answer is malformed (a 101, a second answer)."""


class _Lost(Exception):
    """The server closed the connection before the answer was whole."""

    def __init__(self, started: bool) -> None:
        self.started = started


def _why(e: OSError) -> str:
    if isinstance(e, ssl.SSLError):  # e.g. "TLS CERTIFICATE_VERIFY_FAILED"
        return f"TLS {e.reason or type(e).__name__}"
    if isinstance(e, socket.gaierror) or not e.errno:  # "Name or service not known"
        return e.strerror or type(e).__name__
    return os.strerror(e.errno)  # "Connection refused" (asyncio's own text names the address)


class HttpClient:
    """`await client(request)`: the answer, or TransportError. The poller's transport
    (tracker.poller.transport) and the webhook sink's client (tracker.sinks.delivery)."""

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
            # One deadline for the whole request, connecting included.
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
                raise TransportError(TIMEOUT) from None
            except _Lost:
                raise TransportError(CLOSED) from None
            except OSError as e:  # only while connecting: refused, unreachable, no such name, TLS
                raise TransportError(f"cannot connect: {_why(e)}") from None
            except UnicodeError:  # the resolver's: a host name with an empty or overlong label
                raise TransportError("cannot connect: the host name is no valid DNS name") from None
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
            if self.tls is None:  # made once: it reads the system's trust store
                self.tls = ssl.create_default_context()
            tls = self.tls
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(
            loop.create_connection(lambda: _Connection(self.max_body), host, port, ssl=tls,
                                   server_hostname=host if tls else None),
            deadline - loop.time())
        self.opened += 1
        return conn, False

    async def __aenter__(self) -> "HttpClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        for pool in self.idle.values():
            while pool:
                pool.pop().close()
