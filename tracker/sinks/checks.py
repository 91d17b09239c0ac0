"""Rules for single [sinks...] values (tracker.sinks.settings applies them): conversion from
TOML or environment text, URLs, names. Pure."""
from __future__ import annotations

import math
import re
from typing import Any, Sequence
from urllib.parse import unquote, urlsplit, urlunsplit

from tracker.core.states import State

NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
STREAM = re.compile(r"[A-Za-z0-9_-]{1,255}")
SUBJECT_TOKEN = re.compile(r"[^\s.*>]+")
NATS_SCHEMES = ("nats", "tls", "ws", "wss")
SCHEME = re.compile(r"[a-z][a-z0-9+.-]{0,9}")  # shown of a refused URL; a longer one may be a token
EVENT_STATES = tuple(s.name for s in State if s is not State.submitted)  # never a to_state
MAX_TIMEOUT_S = 300.0
MAX_RETRY_DELAY_S = 7 * 86400.0
MAX_RETRIES = 50
MAX_CONCURRENCY = 1000
MAX_BATCH = 10_000

KIND_TEXT = {"bool": "a boolean", "int": "an integer", "float": "a finite number", "str": "a string",
             "strlist": "a list of strings", "floatlist": "a list of numbers (seconds)"}
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _finite(x: float) -> float:
    if not math.isfinite(x):
        raise ValueError(x)
    return x


def convert(kind: str, value: Any, from_env: bool) -> Any:
    """`value` as `kind` (environment values are text: lists comma-separated), or ValueError."""
    if from_env:
        s = value.strip()
        if kind == "bool":
            if s.lower() in _TRUE + _FALSE:
                return s.lower() in _TRUE
            raise ValueError(s)
        if kind == "int":
            return int(s)
        if kind == "float":
            return _finite(float(s))
        if kind == "strlist":
            return tuple(p.strip() for p in s.split(",") if p.strip())
        if kind == "floatlist":
            return tuple(_finite(float(p)) for p in s.split(",") if p.strip())
        return value
    number = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)  # noqa: E731
    ok = {"bool": lambda: isinstance(value, bool),
          "int": lambda: isinstance(value, int) and not isinstance(value, bool),
          "float": lambda: number(value),
          "str": lambda: isinstance(value, str),
          "strlist": lambda: isinstance(value, list) and all(isinstance(x, str) for x in value),
          "floatlist": lambda: isinstance(value, list) and all(number(x) for x in value)}[kind]()
    if not ok:
        raise ValueError(kind)
    if kind == "float":
        return float(value)
    if kind == "strlist":
        return tuple(value)
    if kind == "floatlist":
        return tuple(float(x) for x in value)
    return value


def url_problem(url: str, schemes: tuple[str, ...]) -> str | None:
    """Why `url` cannot be used (None: it can). Says at most its scheme and host: a webhook URL's
    path and query, and any URL's user and password, may hold a token (described.secrets_of)."""
    try:
        u = urlsplit(url.strip())
        _ = u.port  # raises on a malformed port
        ok = u.scheme in schemes and bool(u.hostname)
    except ValueError:
        ok = False
    if not ok:
        colonless = next((f" ({s}// without its ':'?)" for s in schemes
                          if url.strip().lower().startswith(s + "//")), "")
        return (f"expected a URL with a host, starting {' or '.join(s + '://' for s in schemes)}, "
                f"got {scheme_and_host(url)}{colonless} (the rest is not shown: it may hold a token)")
    return host_problem(u.hostname)


def nats_credentials(servers: Sequence[str]) -> tuple[list[str], dict[str, str]] | None:
    """The servers' URLs without their user and password, and those as nats-py's options
    (`user` and `password`, or `token` for a user alone), percent-decoding done: nats-py sends a
    URL's userinfo as written, so a password holding `@`, `:` or `/` (percent-encoded, as a URL
    must) never authenticated. None where the servers do not all name the same ones (options
    apply to every server: one server's password would go to another given none): the URLs
    are then used as given."""
    found, bare = set(), []
    for server in servers:
        u = urlsplit(server.strip())
        has = u.username is not None or u.password is not None
        found.add((unquote(u.username or ""), None if u.password is None else unquote(u.password))
                  if has else None)
        bare.append(urlunsplit(u._replace(netloc=u.netloc.rpartition("@")[2])))
    if len(found) > 1:
        return None
    given = next(iter(found), None)
    if given is None:
        return bare, {}
    user, password = given
    return bare, ({"token": user} if password is None else {"user": user, "password": password})


def host_problem(host: str) -> str | None:
    """Why a URL's host name could never be resolved (None: it may be): an empty label
    (`hooks..example.com`) or one over 63 characters, which the resolver refuses before asking,
    so that every request would fail."""
    try:
        host.encode("idna")
    except UnicodeError:
        return f"host {host[:80]!r} is no valid DNS name (an empty label, or one over 63 characters)"
    return None


def scheme_and_host(url: str) -> str:
    """What a refused URL may show of itself: a short scheme, the host and whether its port reads."""
    try:
        u = urlsplit(url.strip())
        host = u.hostname
    except ValueError:
        return "an unreadable URL"
    shown = [f"scheme {u.scheme!r}" if SCHEME.fullmatch(u.scheme) else "no scheme",
             f"host {host[:80]!r}" if host else "no host"]
    try:
        _ = u.port
    except ValueError:
        shown.append("an unreadable port")
    return ", ".join(shown)


def public_url(url: str) -> str:
    """scheme://host[:port] of a URL: what summaries and logs may show of it."""
    try:
        u = urlsplit(url)
        port = f":{u.port}" if u.port else ""
        host = f"[{u.hostname}]" if u.hostname and ":" in u.hostname else (u.hostname or "")
        return f"{u.scheme}://{host}{port}"
    except ValueError:
        return "(unreadable URL)"
