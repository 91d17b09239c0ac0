"""A request as the bytes the HTTP client (tracker.http.client) sends: pure, no I/O.

The connection key (scheme, host, port) and a HTTP/1.1 request: Host, User-Agent, Accept, a
body with its Content-Type and Content-Length (form, JSON or bytes as given), the caller's own
headers last (they win), Basic authorization from a user and password in the URL. A header or
URL that would split the request (CR, LF, NUL, a space in the target) or that cannot be sent (a
character outside Latin-1 in the head, a URL Python cannot parse) is refused: TransportError
naming only the kind, never the request's content (its head may hold a token).
"""
from __future__ import annotations

import functools
from base64 import b64encode
from urllib.parse import unquote, urlencode, urlsplit

import orjson

from tracker.adapters.base import HttpRequest
from tracker.http.errors import TransportError

USER_AGENT = "sms-delivery-tracker/0.1"


@functools.lru_cache(maxsize=1024)
def _split(url: str) -> tuple[tuple[str, str, int], str, dict]:
    """The connection key (scheme, host, port), the request target, the headers the URL makes:
    Host, and Authorization (Basic) from a user and password in it."""
    try:
        u = urlsplit(url)
        port = u.port  # ValueError: out of range, not a number
        hostname = u.hostname
    except ValueError:  # "Invalid IPv6 URL", a port out of range: raised outside it (no context)
        u = None
    if u is None or u.scheme not in ("http", "https") or not hostname:
        raise TransportError("unsupported URL")
    port = port or (443 if u.scheme == "https" else 80)
    target = (u.path or "/") + (f"?{u.query}" if u.query else "")
    headers = {"host": ("Host", u.netloc.rpartition("@")[2])}
    if u.username is not None:
        user = f"{unquote(u.username)}:{unquote(u.password or '')}"
        headers["authorization"] = ("Authorization", "Basic " + b64encode(user.encode()).decode())
    return (u.scheme, hostname, port), target, headers


def encode(req: HttpRequest, user_agent: str) -> tuple[tuple[str, str, int], bytes]:
    """The connection key (scheme, host, port) and the request's bytes."""
    key, target, from_url = _split(req.url)
    if req.params:
        target += ("&" if "?" in target else "?") + urlencode(req.params)
    headers = {**from_url, "user-agent": ("User-Agent", user_agent), "accept": ("Accept", "*/*")}
    body = b""
    if req.json is not None:
        body, headers["content-type"] = orjson.dumps(req.json), ("Content-Type", "application/json")
    elif req.data is not None:
        body = urlencode(req.data).encode()
        headers["content-type"] = ("Content-Type", "application/x-www-form-urlencoded")
    elif req.content is not None:  # bytes as given: their Content-Type is the caller's
        body = req.content
    for k, v in (req.headers or {}).items():
        headers[k.lower()] = (k, v)  # the caller's own headers win (Accept, Content-Type)
    if body or req.method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
        headers["content-length"] = ("Content-Length", str(len(body)))
    head = (f"{req.method} {target} HTTP/1.1\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.values()) + "\r\n")
    lines = len(headers) + 2
    if head.count("\n") != lines or head.count("\r") != lines or "\0" in head or " " in target:
        raise TransportError("invalid request")  # a header or URL that would split the request
    try:
        raw = head.encode("latin-1")
    except UnicodeEncodeError:  # its args hold the whole head, a token with it: not chained
        raw = None
    if raw is None:
        raise TransportError("invalid request")
    return key, raw + body
