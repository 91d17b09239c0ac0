"""The pure part of postback ingestion: which requests are admitted, what a stored raw postback
says (through the vendor's adapter), and what makes two reports the same, so that a replay
never appends the same observation twice. No I/O here."""
from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import parse_qsl

from tracker import adapters
from tracker.adapters.base import (MAX_RECIPIENT_LEN, MAX_REF_LEN, NotConfigured, Observation,
                                   ParseError, PostbackRequest)
from tracker.adapters.base import unstorable as base_unstorable
from tracker.adapters.contract import SignsPostbacks
from tracker.adapters.storable import bad_text, repaired
from tracker.config_types import Config, VendorConfig
from tracker.masking import mask_secrets, mask_secrets_in_bytes
from tracker.core.reduce import recipient_key

# The content types each pushing vendor sends are its adapter's POSTBACK_CONTENT_TYPES (lower-
# case media types, parameters dropped). A request without a Content-Type (a GET with a query
# string, or a vendor that omits it) is let through to the adapter, which reads it by its shape.


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    error: str


# Unknown vendor, not a pushing vendor, wrong token, a source outside the vendor's
# allow_networks: all alike, so that a caller learns nothing of what is configured.
NOT_FOUND = Refusal(404, "not found")
# A body the vendor never sends is one that cannot be parsed for that vendor: 400, as the
# contract answers those (DESIGN.md 4), with the reason.
UNSUPPORTED = Refusal(400, "unsupported content type")
TOO_LARGE = Refusal(413, "body too large")
BROKEN_BODY = Refusal(400, "incomplete body")
UNAVAILABLE = Refusal(503, "temporarily unavailable, retry later")
BAD_SIGNATURE = Refusal(403, "signature does not verify")  # a vendor that signs (SignsPostbacks)
# aiohttp would inflate a compressed body, which then no longer matches its Content-Length (read
# short and stored cut); no vendor documents compressing its postbacks.
ENCODED = Refusal(400, "unsupported Content-Encoding: send the body uncompressed")


def encoding_refused(content_encodings: Iterable[str]) -> Refusal | None:
    """ENCODED unless every coding of every Content-Encoding line is `identity`: a server that
    inflates by any of them (aiohttp by the last) would read the body short, by the length sent."""
    codings = (c.strip().lower() for line in content_encodings for c in line.split(","))
    return None if all(c in ("identity", "") for c in codings) else ENCODED


@dataclass(frozen=True, slots=True)
class Route:
    """A vendor that may post to us: its token (as a digest) and where it may post from."""

    vendor: str
    token_digest: bytes
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    content_types: frozenset[str]
    # A vendor that signs its postbacks (SignsPostbacks): the setting whose secret verified a
    # request's signature, else None.
    verify: Callable[[PostbackRequest], str | None] | None = None
    # The token being rotated out (previous_postback_token), accepted too while it is set.
    previous_digest: bytes | None = None


def _digest(token: str) -> bytes:
    # Comparing digests keeps the length of the configured token out of the timing too.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


_DUMMY = _digest(secrets.token_urlsafe(24))


def routes_from(config: Config) -> dict[str, Route]:
    """Enabled vendors that push and have a postback token configured."""
    out = {}
    for name, vc in config.vendors.items():
        adapter = adapters.get(name)
        if not (vc.enabled and vc.postback_token and adapter.PUSHES):
            continue
        verify = (functools.partial(adapter.verify_postback, vc)
                  if isinstance(adapter, SignsPostbacks) else None)
        previous = _digest(vc.previous_postback_token) if vc.previous_postback_token else None
        out[name] = Route(name, _digest(vc.postback_token), networks(vc.allow_networks),
                          frozenset(adapter.POSTBACK_CONTENT_TYPES), verify, previous)
    return out


def authenticate(route: Route, request: PostbackRequest) -> tuple[Refusal | None, bool]:
    """For a vendor that signs its postbacks, once the body is read: (None, whether a secret
    being rotated out verified it) when the signature verifies (or the vendor signs nothing),
    else (the refusal, False). A verifier that trips is a refusal too: a request that cannot be
    verified is never stored."""
    if route.verify is None:
        return None, False
    try:
        by = route.verify(request)
    except Exception:  # noqa: BLE001 - whatever the verifier trips on, the request is not trusted
        return BAD_SIGNATURE, False
    return (None, by.startswith("previous_")) if by else (BAD_SIGNATURE, False)


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


@functools.lru_cache(maxsize=4096)  # vendors post from a few addresses
def source_ip(remote: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(remote or "")
    except ValueError:
        return None
    return (ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else ip


def admit(routes: Mapping[str, Route], vendor: str, token: str, remote: str | None,
          content_type: str | None) -> Refusal | None:
    """None when the request may go on to be read; else the answer. The token is compared in
    constant time, also for an unknown vendor, and every failure to authenticate looks alike."""
    route = routes.get(vendor)
    given = _digest(token)
    if route is None:
        hmac.compare_digest(given, _DUMMY)
        return NOT_FOUND
    known = _known(route, given)  # before the source is checked: the same work as a wrong token
    if route.networks:
        ip = source_ip(remote)
        if ip is None or not any(ip in net for net in route.networks if ip.version == net.version):
            return NOT_FOUND
    if not known:
        return NOT_FOUND
    mt = media_type(content_type)
    if mt and mt not in route.content_types:
        return UNSUPPORTED
    return None


def _known(route: Route, given: bytes) -> bool:
    """The current token, or the previous one while a rotation lasts: both compared always."""
    current = hmac.compare_digest(given, route.token_digest)
    previous = route.previous_digest is not None and hmac.compare_digest(given, route.previous_digest)
    return current or previous


def previous_token(route: Route, token: str) -> bool:
    """Was an admitted request's token the one being rotated out? (counted: when it is no
    longer used, it can be removed)"""
    return route.previous_digest is not None and hmac.compare_digest(_digest(token),
                                                                     route.previous_digest)


Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


_MAPPED = ipaddress.ip_network("::ffff:0:0/96")


def networks(cidrs) -> Networks:
    """The CIDRs, an IPv4-mapped one (`::ffff:203.0.113.0/120`, as a dual-stack proxy writes
    addresses) as the IPv4 network it names: a source is compared as IPv4 (source_ip), so such
    an entry, passed by check-config, matched nothing and refused every postback."""
    nets = (ipaddress.ip_network(n, strict=False) for n in cidrs)
    return tuple(ipaddress.ip_network((int(n.network_address) & 0xFFFFFFFF, n.prefixlen - 96))
                 if n.version == 6 and n.prefixlen >= 96 and n.subnet_of(_MAPPED) else n
                 for n in nets)


def _within(ip, nets: Networks) -> bool:
    return ip is not None and any(ip in net for net in nets if ip.version == net.version)


MAX_HOPS = 32  # of X-Forwarded-For read, from the right


def request_client(peer: str | None, headers: Any, trusted: Networks) -> str | None:
    """client_address() of a request (`headers`: aiohttp's, with getall): every X-Forwarded-For
    line, one list, in order."""
    return client_address(peer, ", ".join(headers.getall("X-Forwarded-For", ())), trusted)


def client_address(peer: str | None, forwarded_for: str | None, trusted: Networks) -> str | None:
    """The client's address: the TCP peer, unless the peer is a trusted proxy (http.trusted_proxies)
    that says whom it forwards for. Then the nearest address in X-Forwarded-For that is not
    itself a trusted proxy (the ones further left could be made up by the client). A header
    from anyone else is ignored; a malformed one leaves the peer."""
    if not trusted or not forwarded_for or not _within(source_ip(peer), trusted):
        return peer
    hops = [_address(h.strip()) for h in forwarded_for.split(",")]
    for hop in reversed(hops[-MAX_HOPS:]):  # the nearest: the proxies appended them
        ip = source_ip(hop)
        if ip is None:
            return peer
        if not _within(ip, trusted):
            return hop
    if len(hops) > MAX_HOPS:  # that many trusted proxies in a row: none of it is believed
        return peer
    return source_ip(hops[0]) and hops[0] or peer


def _address(hop: str) -> str:
    """An X-Forwarded-For entry without the port some proxies append (Azure's `203.0.113.9:5678`,
    `[2001:db8::7]:443`): read as unreadable, it left the proxy's own address as the source, and
    `allow_networks` refused every postback."""
    if hop.startswith("[") and "]" in hop:
        return hop[1:hop.index("]")]
    return hop.split(":", 1)[0] if hop.count(":") == 1 else hop


@dataclass(frozen=True, slots=True)
class RawPostback:
    """A request as stored: never the token (it is in the path) and no header but Content-Type."""

    vendor: str
    method: str
    content_type: str
    query: str  # the query string as received (escapes kept: parse decodes it once)
    body: bytes
    source: str | None
    received_at: datetime

    def as_stored(self) -> "RawPostback":
        """The request as stored: secrets the vendor was sent (our key, a callback URL's
        token) masked in its query and body, as in every row stored (tracker.masking); a
        vendor may repeat them. Parsed before (its reports are masked as they are stored)."""
        query, body = mask_secrets(self.query, stored=True, cut=False), mask_secrets_in_bytes(self.body)
        if query is self.query and body is self.body:
            return self
        return replace(self, query=query, body=body)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "RawPostback":
        return cls(row["vendor"], row["method"], row["content_type"], row["query"],
                   bytes(row["body"]), None, row["received_at"])


def query_dict(query: str) -> dict[str, str]:
    return dict(parse_qsl(query, keep_blank_values=True))


def parse(raw: RawPostback, cfg: VendorConfig | None = None) -> list[Observation]:
    """What a raw postback says, read with the vendor's adapter bound to `cfg`, its settings
    (adapters.for_config; callers give config.vendors.get(raw.vendor)). ParseError (a message
    without secrets) when it cannot be read for its vendor, or says something the database could
    not store; also when a setting cannot be honoured (check-config refuses it)."""
    try:
        adapter = adapters.for_config(raw.vendor, cfg)
    except NotConfigured as e:
        raise ParseError(f"{raw.vendor} postback: not configured: {e}") from None
    for name, text in (("content type", raw.content_type), ("query", raw.query)):
        if bad_text(text):  # stored as text beside the body: one such request sank its batch
            raise ParseError(f"{raw.vendor} postback: {name} with NUL or invalid characters")
    try:
        found = adapter.parse_postback(raw.method, raw.content_type, query_dict(raw.query),
                                       raw.body, raw.received_at)
    except ParseError:
        raise
    except Exception as e:  # the adapters' contract is ParseError only; hold them to it
        raise ParseError(f"{raw.vendor} postback: unreadable ({type(e).__name__})") from None
    out = []
    for o in found:
        # a stray NUL or lone surrogate in a vendor's words, a code too long to index: the
        # reading is kept, repaired as the poller repairs it (a final state was answered 400 for
        # a cosmetic character); a key or time that cannot be stored is still refused
        o, problem = repaired(o, lambda o: unstorable(o, raw.vendor))
        if problem:
            raise ParseError(f"{raw.vendor} postback: {problem}")
        out.append(o)
    return out


def unstorable(o: Observation, vendor: str) -> str | None:
    """Why this report cannot be applied (see adapters.base.unstorable), or None. Checked
    before answering, so that a 200 is never given for a report that could not be applied."""
    if o.vendor != vendor:
        return "report names another vendor"
    if len(o.vendor_ref) > MAX_REF_LEN:  # an index entry could not hold it: refused, not set aside
        return f"vendor id is {len(o.vendor_ref)} characters long; at most {MAX_REF_LEN} are taken"
    if o.recipient is not None and len(o.recipient) > MAX_RECIPIENT_LEN:
        return f"recipient has {len(o.recipient)} digits; a phone number has at most {MAX_RECIPIENT_LEN}"
    return base_unstorable(o)


def report_key(o: Observation) -> tuple:
    """What makes two reports from one raw postback the same (their raw fragment aside): a
    replay appends only reports whose key the postback has not produced yet."""
    f = o.failure
    return (o.vendor, o.vendor_ref, recipient_key(o.vendor, o.recipient),
            o.state.name if o.state is not None else None, o.code, o.text, o.event_at,
            f.code if f else None, f.reason if f else None, f.permanent if f else None)


def stored_report_key(row: Mapping[str, Any]) -> tuple:
    """report_key() of an observation as stored (times compare by instant, whatever the zone)."""
    return (row["vendor"], row["vendor_ref"], row["recipient_key"], row["state"], row["code"],
            row["text"], row["event_at"], row["failure_code"], row["failure_reason"],
            row["failure_permanent"])
