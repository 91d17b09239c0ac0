"""A light HTTP/1.1 client for the benches' paced postbacks (events, sinks): keep-alive
connections over asyncio streams, each request written as one piece of bytes, the answer's
status read and its body skipped.

Why not aiohttp's client: at 1,000 requests/s it took about a third of a core (~310 us of CPU
per request, measured on the session-8 machine), on a 2-core machine that the tracker,
PostgreSQL and the consumer share; the load generator then set the latencies it was measuring.
"""
from __future__ import annotations

import asyncio
from urllib.parse import urlsplit


class Poster:
    """POSTs to one URL, over as many connections as requests in flight (kept for reuse)."""

    def __init__(self, url: str) -> None:
        u = urlsplit(url)
        self.host, self.port = u.hostname, u.port or 80
        self.head = (f"POST {u.path or '/'}{'?' + u.query if u.query else ''} HTTP/1.1\r\n"
                     f"Host: {u.netloc}\r\n").encode()
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened: list[asyncio.StreamWriter] = []

    async def post(self, body: bytes, content_type: str = "application/json") -> int:
        """The answer's status; raises on a connection lost or an answer that is not HTTP/1.1."""
        reader, writer = self.idle.pop() if self.idle else await self._open()
        try:
            writer.write(self.head + b"Content-Type: " + content_type.encode()
                         + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            status_line = await reader.readline()
            status, length, close = int(status_line.split(b" ", 2)[1]), 0, False
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            if length:
                await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        if close:
            writer.close()
        else:
            self.idle.append((reader, writer))
        return status

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self.opened.append(writer)
        return reader, writer

    async def __aenter__(self) -> Poster:
        return self

    async def __aexit__(self, *exc) -> None:
        for writer in self.opened:
            writer.close()
