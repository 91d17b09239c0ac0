"""Listen addresses: ``host:port`` parsed and its host resolved once, at load, so that a
mistake is reported by check-config rather than at bind time."""
from __future__ import annotations

import ipaddress
import re
import socket
import threading
from dataclasses import dataclass
from typing import Any

from tracker.config.redaction import _show

_LISTEN = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^\s:\[\]]+)):(?P<port>\d+)")
_IPV4_LOOKING = re.compile(r"[0-9.]+")
RESOLVE_TIMEOUT_S = 2.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Listener:
    """A checked ``host:port``: the addresses it binds (resolved once, at load)."""

    text: str
    port: int
    addresses: frozenset[IPAddress]

    def clashes_with(self, other: "Listener") -> bool:
        """Would binding both fail? Same port (0 picks a free one) and an address in common,
        or one of them the wildcard of the other's family, `::` of both (tracker.http.connections
        binds it dual-stack)."""
        if self.port == 0 or self.port != other.port:
            return False
        return any((a.version == b.version and (a == b or a.is_unspecified or b.is_unspecified))
                   or dual_stack(a) or dual_stack(b)
                   for a in self.addresses for b in other.addresses)


def dual_stack(ip: IPAddress) -> bool:
    """`::` (`[::]`, `[0::]`): every address of both families, as on Linux; bound so by
    tracker.http.connections (asyncio alone binds an IPv6 socket v6-only)."""
    return ip.version == 6 and ip.is_unspecified


def parse_listen(text: str) -> Listener | str:
    """The Listener for ``host:port``, or the reason it cannot be listened on."""
    m = _LISTEN.fullmatch(text)
    if not m:
        return f"expected host:port (e.g. 127.0.0.1:8080 or [::1]:8080), got {_show(text)}"
    port = int(m.group("port"))
    if port > 65535:
        return f"port {port} is out of range 0..65535"
    host = m.group("v6") or m.group("host")
    if m.group("v6") or _IPV4_LOOKING.fullmatch(host):
        try:
            return Listener(text, port, frozenset({ipaddress.ip_address(host)}))
        except ValueError:
            family = "IPv6" if m.group("v6") else "IPv4"
            return f"{host!r} is not a valid {family} address"
    addresses = resolve(host)
    return addresses if isinstance(addresses, str) else Listener(text, port, addresses)


def resolve(host: str, timeout: float | None = None) -> frozenset[IPAddress] | str:
    """The addresses ``host`` resolves to (getaddrinfo, as the server will), or why not.

    Bounded in time: a stalled DNS server costs check-config ``RESOLVE_TIMEOUT_S``, not minutes.
    Names under ``.invalid`` never resolve (RFC 6761) and are refused without a lookup.
    """
    if host.lower().rstrip(".") == "invalid" or host.lower().rstrip(".").endswith(".invalid"):
        return f"host {host!r} does not resolve (the .invalid domain never does)"
    timeout = RESOLVE_TIMEOUT_S if timeout is None else timeout
    result: list[Any] = []

    def lookup() -> None:
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
            result.append(frozenset(ipaddress.ip_address(i[4][0].split("%")[0]) for i in infos))
        except (OSError, UnicodeError, ValueError) as e:
            result.append(e)

    # A daemon thread: a lookup that never returns cannot hold up the process's exit either.
    worker = threading.Thread(target=lookup, name="resolve-listen-host", daemon=True)
    worker.start()
    worker.join(timeout)
    if not result:
        return f"host {host!r} did not resolve within {timeout:g} s; give an IP address"
    found = result[0]
    if isinstance(found, Exception):
        why = found.strerror if isinstance(found, OSError) and found.strerror else type(found).__name__
        return f"host {host!r} does not resolve: {why}"
    return found or f"host {host!r} resolves to no address"
