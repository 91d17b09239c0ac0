"""The listeners' own bounds on what a client may hold, so that no flood of connections (idle,
or sending headers that never end) can take the daemon's file descriptors or memory: anyone who
can reach the postback port may open them, token or not.

- At most `http.max_connections` open connections per listener. Without it, about 1,000 idle
  connections used up the process's descriptors (systemd's default soft limit is 1,024): every
  postback was reset, and the embedded cluster's keeper, unable to open its pid file, took
  PostgreSQL for stopped. At the limit, the oldest connection that holds no request (idle
  between requests, or its request's head not complete) is closed to make room, counted
  (tracker_http_connections_shed_total) and logged a line a minute: refusing the new one
  instead let one client holding 512 slow connections (1.5 KB/s) shut every vendor out,
  `allow_networks` or not (it is checked once a request is read). Only when every connection
  holds a request is the new one closed at once, counted (tracker_http_connections_refused_total)
  and logged.
- At most HEADERS_MAX header lines of at most FIELD_MAX bytes each: aiohttp's defaults (128 of
  8,190 bytes) let each unfinished request hold about 2 MB, 1.8 GB in a reviewer's run of 900
  connections. A vendor's postback has a dozen headers; proxies add a few more.
- The process's soft limit of open files raised to its hard limit at start (raise_open_files).

Together they bound what clients can make the daemon hold to about 250 MB (600 connections each
holding 47 header lines of 4,000 bytes: 254 MB; a burst accepted in one turn of the loop may pass
the limit by a few before they count), and a proxy in front can limit them per client.
"""
from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import resource
import socket

from aiohttp import web

from tracker import metrics
from tracker.config.listen import dual_stack
from tracker.logging import get_logger
from tracker.throttle import Throttle

log = get_logger("tracker.http")

HEADERS_MAX = 48
FIELD_MAX = 4096  # a header line's bytes: a vendor's signature or a proxy's forwarding chain fits
# After an answer that leaves a body unread (413, a body cut off), the rest is read and dropped
# for at most LINGER_S so that the client sees the answer rather than a reset; aiohttp's 10 s let
# one client push 3.8 GB through a connection at 6 s of the daemon's CPU.
LINGER_S = 1.0
RUNNER_LIMITS = {"max_headers": HEADERS_MAX, "max_field_size": FIELD_MAX, "lingering_time": LINGER_S}
OPEN_FILES_RESERVE = 256  # descriptors beside the connections: the pool, the client's, files
_lines = Throttle()
_shed_lines = Throttle()


class _Closed(asyncio.Protocol):
    """A connection over the limit: closed as soon as it is accepted."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.abort()


class Capped:
    """A protocol factory for loop.create_server: the runner's server's, until `limit`
    connections are open on this listener."""

    def __init__(self, server: web.Server, limit: int, listener: str) -> None:
        self.server, self.limit, self.listener = server, limit, listener

    def __call__(self) -> asyncio.Protocol:
        if len(self.server.connections) < self.limit or self._shed_one():
            return self.server()
        metrics.http_connections_refused.labels(self.listener).inc()
        if (left_out := _lines.allow(self.listener)) is not None:
            log.warning("connection refused: the listener holds its most connections (idle "
                        "clients or a flood; a proxy in front can limit them per client)",
                        listener=self.listener, max_connections=self.limit, left_out=left_out)
        return _Closed()

    def _shed_one(self) -> bool:
        """Close the oldest connection that holds no request (above); False when every one
        does. aiohttp's internals (its server's connections in the order they came, a
        handler's wait for its next request): test_http_listeners fails if they change."""
        for handler in getattr(self.server, "_connections", ()):
            waiter = getattr(handler, "_waiter", None)
            if waiter is not None and not waiter.done() and not getattr(handler, "_force_close", True):
                handler.force_close()
                metrics.http_connections_shed.labels(self.listener).inc()
                if (left_out := _shed_lines.allow(self.listener)) is not None:
                    log.warning("connection shed: the listener held its most connections; the "
                                "oldest one holding no request was closed (idle or slow clients, "
                                "or a flood)", listener=self.listener,
                                max_connections=self.limit, left_out=left_out)
                return True
        return False


async def serve(runner: web.AppRunner, host: str, port: int, limit: int,
                listener: str) -> asyncio.AbstractServer:
    """Listen on host:port for the runner's application, at most `limit` connections open."""
    soft, _ = raise_open_files()
    if soft < limit + OPEN_FILES_RESERVE:  # else a flood took every descriptor before the cap
        lowered = max(16, soft - OPEN_FILES_RESERVE)  # (the pid file, the database, the keeper's)
        log.warning("the process may open fewer files than http.max_connections needs: the "
                    "listener holds fewer connections (raise LimitNOFILE in the unit, or lower "
                    "http.max_connections)", open_files_limit=soft, max_connections=limit,
                    holds=lowered, listener=listener)
        limit = lowered
    loop = asyncio.get_running_loop()
    factory = Capped(runner.server, limit, listener)
    if _every_address(host):  # both families on one socket (asyncio alone binds it IPv6 only)
        return await loop.create_server(factory, sock=_dual_stack(host, port))
    return await loop.create_server(factory, host, port, reuse_address=True)


def _every_address(host: str) -> bool:
    """A host written for every address of both families (config.listen.dual_stack): bound
    v6-only, as asyncio does, every vendor posting over IPv4 was refused the connection."""
    try:
        return dual_stack(ipaddress.ip_address(host.strip("[]")))
    except ValueError:  # a name, or IPv4: bound as given
        return False


def _dual_stack(host: str, port: int) -> socket.socket:
    """A listening socket on `host` taking IPv4 (as mapped addresses) and IPv6 (SO_REUSEADDR set);
    OSError, as any bind's, where the host has IPv6 turned off (Python says ValueError)."""
    try:
        return socket.create_server((host.strip("[]"), port), family=socket.AF_INET6,
                                    dualstack_ipv6=True)
    except ValueError:
        raise OSError(errno.EAFNOSUPPORT, "the host has IPv6 turned off: listen on 0.0.0.0 for "
                      "every IPv4 address") from None


def host_port(address: str) -> tuple[str, int]:
    """(host, port) of a listen address as the configuration checked it (`[::1]:8080` too)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def taken(address: str) -> str | None:
    """Why `address` (host:port, as http.listen) cannot be listened on now, or None: looked at
    before anything else starts, so that a port in use stops the start before the embedded
    cluster is made (a new state_dir was initialised, 46 MB, only to exit 2 on the port). The
    listener's own bind still decides; this is the early word."""
    host, port = host_port(address)
    if port == 0:  # any free port: none is taken
        return None
    try:
        if _every_address(host):
            _dual_stack(host, port).close()
            return None
        family = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                    flags=socket.AI_PASSIVE)[0][0]
        socket.create_server((host, port), family=family).close()
    except OSError as e:  # as the listener's bind says it: "address already in use"
        if e.errno == errno.EAFNOSUPPORT and e.strerror:  # _dual_stack's own words
            return e.strerror
        return os.strerror(e.errno).lower() if e.errno else str(e)
    return None


def raise_open_files() -> tuple[int, int]:
    """The soft limit of open files raised to the hard one; returns (soft, hard) after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass  # kept as it was: the start says whether it is enough (app.py)
    return soft, hard
