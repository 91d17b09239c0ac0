"""Loading and validating the configuration (docs/design.md#contract-7).

Layers, later wins: dataclass defaults < TOML file < environment (``TRACKER_<SECTION>__<KEY>``,
``TRACKER_VENDORS__<VENDOR>__<KEY>``). Secret keys may instead be given as ``<key>_file``. Every problem
is collected and raised together as one :class:`ConfigError`; secret values never appear in it.
"""
from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import re
import socket
import sys
import threading
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, TextIO
from urllib.parse import urlsplit

from tracker.adapters import ADAPTERS
from tracker.config_types import (
    VENDORS,
    Config,
    DatabaseConfig,
    HealthConfig,
    HttpConfig,
    IntakeConfig,
    LogConfig,
    RetentionConfig,
    VendorConfig,
)
from tracker.db.embedded import MAX_CONNECTIONS as EMBEDDED_MAX_CONNECTIONS
from tracker.sinks import settings as sink_settings

__all__ = ["ConfigError", "Problem", "check_config", "load", "redact_dsn", "secrets_of", "summary"]

ENV_PREFIX = "TRACKER_"
ENVIRONMENT = "environment"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("auto", "json", "console")

_SECTIONS: dict[str, type] = {
    "database": DatabaseConfig,
    "http": HttpConfig,
    "intake": IntakeConfig,
    "health": HealthConfig,
    "log": LogConfig,
    "retention": RetentionConfig,
}
_SECRETS: dict[str, frozenset[str]] = {
    "database": frozenset({"dsn"}),
    "http": frozenset({"status_token"}),
    "vendors": frozenset({"postback_token", "api_key", "api_token", "partner_token"}),
}
# Numeric fields that may be zero; every other number must be > 0.
_NON_NEGATIVE = frozenset({"deadline_margin_s", "group_commit_ms", "pool_min", "list_poll_min",
                           "pause_ms",  # and [retention] *_days: 0 keeps that kind for ever
                           *(f.name for f in dataclasses.fields(RetentionConfig) if f.name.endswith("_days"))})
_URL_SAFE = re.compile(r"[A-Za-z0-9._~-]+")
_LISTEN = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^\s:\[\]]+)):(?P<port>\d+)")
_IPV4_LOOKING = re.compile(r"[0-9.]+")
MIN_POSTBACK_TOKEN_CHARS = 16  # 16 random URL-safe characters are ~95 bits: not guessable
MIN_BODY_BYTES = 1024  # below this even a single vendor postback is refused
MAX_BODY_BYTES = 64 * 1024 * 1024  # above this one request could make the tracker hold 64 MiB
MIN_POOL = 2  # the intake listener holds one connection for as long as the tracker runs
EMBEDDED_POOL_HEADROOM = 10  # embedded connections left for `tracker migrate`, replay, psql
RESOLVE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Problem:
    file: str  # the config file, or "environment"
    key: str  # dotted key, env var name, or "line L, column C"; "" for the file as a whole
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.reason}" if self.key else f"{self.file}: {self.reason}"


class ConfigError(Exception):
    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


# --------------------------------------------------------------------------- field kinds


def _kind(tp: Any) -> str:
    if tp is bool:
        return "bool"
    if tp is int:
        return "int"
    if tp is float:
        return "float"
    if tp is str:
        return "str"
    if isinstance(tp, types.UnionType) and set(typing.get_args(tp)) == {str, type(None)}:
        return "optstr"
    if typing.get_origin(tp) is tuple and typing.get_args(tp) == (str, ...):
        return "strtuple"
    raise TypeError(f"unsupported config field type {tp!r}")  # pragma: no cover - programming error


def _fields(cls: type) -> dict[str, str]:
    hints = typing.get_type_hints(cls)
    return {f.name: _kind(hints[f.name]) for f in dataclasses.fields(cls)
            if f.name not in ("name", "settings")}


_FIELDS: dict[str, dict[str, str]] = {s: _fields(c) for s, c in _SECTIONS.items()}
_FIELDS["vendors"] = _fields(VendorConfig)
_COMMON_VENDOR_KEYS = frozenset(_FIELDS["vendors"])
# Keys only one vendor has, declared by its adapter (SETTINGS): strings, some secret, some URLs.
_VENDOR_SETTINGS = {name: dict(a.SETTINGS) for name, a in ADAPTERS.items()}
for _own in _VENDOR_SETTINGS.values():
    for _key, _setting in _own.items():
        _FIELDS["vendors"][_key] = "optstr"
        if _setting.secret:
            _SECRETS["vendors"] |= {_key}
_URL_KEYS = frozenset({"base_url", "status_url"} | {k for own in _VENDOR_SETTINGS.values()
                                                     for k, s in own.items() if s.url})


def _allowed_keys(section: str, vendor: str | None = None) -> list[str]:
    keys = list(_FIELDS[section])
    secrets = _SECRETS.get(section, frozenset())
    if section == "vendors":  # the common keys and this vendor's own
        own = _VENDOR_SETTINGS.get(vendor or "", {})
        keys = [k for k in keys if k in _COMMON_VENDOR_KEYS or k in own]
        secrets = {k for k in secrets if k in _COMMON_VENDOR_KEYS or k in own}
    keys += [f"{k}_file" for k in sorted(secrets)]
    return keys


def _suggest(word: str, choices: typing.Iterable[str]) -> str:
    match = difflib.get_close_matches(word.lower(), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


# --------------------------------------------------------------------------- redaction helpers

# Greedy up to the last "@" before any query: an unencoded "@" in a password is still hidden whole.
_URL_USERINFO = re.compile(r"(?P<pre>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*:)[^?#\s]*@")
_KV_PASSWORD = re.compile(
    r"(?P<pre>\b(?:password|sslpassword|passwd)\s*=\s*)(?:'(?:\\.|[^'\\])*'|[^\s&]+)", re.IGNORECASE
)


def redact_dsn(dsn: str | None) -> str:
    """The DSN with its password hidden (URL userinfo, ``?password=`` and ``password=`` key/value forms)."""
    if not dsn:
        return ""
    out = _URL_USERINFO.sub(lambda m: m.group("pre") + "***@", dsn)
    return _KV_PASSWORD.sub(lambda m: m.group("pre") + "***", out)


def _dsn_password(dsn: str) -> str | None:
    m = re.match(r"[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*:(?P<pw>[^?#\s]*)@", dsn)
    if m and m.group("pw"):
        return m.group("pw")
    m = re.search(r"\b(?:password|sslpassword)\s*=\s*('(?:\\.|[^'\\])*'|[^\s&]+)", dsn, re.IGNORECASE)
    if m:
        return m.group(1).strip("'")
    return None


def _dsn_target(dsn: str) -> str:
    """host[:port][/dbname] of a DSN, for summaries (never the credentials)."""
    if "://" in dsn:
        rest = dsn.split("://", 1)[1]
        rest = rest.rsplit("@", 1)[-1] if "@" in rest.split("/", 1)[0] else rest
        return rest.split("?", 1)[0] or "(default host)"
    kv = dict(re.findall(r"(\w+)\s*=\s*('(?:\\.|[^'\\])*'|\S+)", dsn))
    host = kv.get("host", "(default host)").strip("'")
    port = f":{kv['port']}" if "port" in kv else ""
    db = f"/{kv['dbname'].strip(chr(39))}" if "dbname" in kv else ""
    return f"{host}{port}{db}"


def _show(value: Any) -> str:
    """A non-secret value for a problem text: short, and with URL credentials hidden anyway."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return redact_dsn(text)


# --------------------------------------------------------------------------- listen addresses

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Listener:
    """A checked ``host:port``: the addresses it binds (resolved once, at load)."""

    text: str
    port: int
    addresses: frozenset[IPAddress]

    def clashes_with(self, other: "Listener") -> bool:
        """Would binding both fail? Same port (0 picks a free one) and an address in common,
        or one of them the wildcard of the other's family (asyncio binds IPv6 sockets v6-only)."""
        if self.port == 0 or self.port != other.port:
            return False
        return any(a.version == b.version and (a == b or a.is_unspecified or b.is_unspecified)
                   for a in self.addresses for b in other.addresses)


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


# --------------------------------------------------------------------------- loading


def _toml_type(v: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array", dict: "table"}
    return names.get(type(v), "date/time")


@dataclass
class _Raw:
    value: Any
    file: str  # where it came from: config path or "environment"
    key: str  # dotted key or env var name
    from_env: bool


class _Loader:
    def __init__(self, path: str | None, env: Mapping[str, str]):
        self.env = env
        self.path = path
        self.problems: list[Problem] = []
        # (section, vendor or None) -> layer ("file"/"env") -> key -> _Raw
        self.layers: dict[tuple[str, str | None], dict[str, dict[str, _Raw]]] = {}
        self._merged: dict[tuple[str, str | None], dict[str, _Raw]] = {}
        self.listeners: dict[str, Listener] = {}  # "listen" / "ops_listen" -> checked address
        self._bad_keys: set[str] = set()  # keys already reported: cross-checks leave them alone
        self.sinks = sink_settings.SinkSettings(path, env)  # [sinks...]: tracker.sinks.settings

    def problem(self, file: str, key: str, reason: str) -> None:
        self.problems.append(Problem(file, key, reason))
        self._bad_keys.add(key)

    def _put(self, section: str, vendor: str | None, layer: str, key: str, raw: _Raw) -> None:
        self.layers.setdefault((section, vendor), {}).setdefault(layer, {})[key] = raw

    # ---- file layer

    def read_file(self) -> None:
        if self.path is None:
            return
        try:
            with open(self.path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as e:
            self.problem(self.path, "", f"cannot read config file: {e.strerror or e}")
            return
        except UnicodeDecodeError as e:
            self.problem(self.path, "", f"not UTF-8 text (byte offset {e.start})")
            return
        except tomllib.TOMLDecodeError as e:
            msg = str(e)
            m = re.search(r"\s*\(at line (\d+), column (\d+)\)\s*$", msg)
            if m:
                self.problem(self.path, f"line {m.group(1)}, column {m.group(2)}",
                             f"TOML syntax error: {msg[:m.start()]}")
            else:
                self.problem(self.path, "", f"TOML syntax error: {msg}")
            return
        for top, table in data.items():
            if top == "vendors":
                if not isinstance(table, dict):
                    self.problem(self.path, top, "expected a table of [vendors.<vendor>] tables")
                    continue
                for vendor, vtable in table.items():
                    key = f"vendors.{vendor}"
                    if vendor not in VENDORS:
                        self.problem(self.path, key, f"unknown vendor{_suggest(vendor, VENDORS)}; "
                                     f"known: {', '.join(VENDORS)}")
                    elif not isinstance(vtable, dict):
                        self.problem(self.path, key, "expected a table")
                    else:
                        self._file_table("vendors", vendor, vtable)
            elif top in _SECTIONS:
                if not isinstance(table, dict):
                    self.problem(self.path, top, "expected a table")
                else:
                    self._file_table(top, None, table)
            elif top == "sinks":
                self.sinks.read_file(table)
            else:
                self.problem(self.path, top,
                             f"unknown section{_suggest(top, [*_SECTIONS, 'vendors'])}")

    def _file_table(self, section: str, vendor: str | None, table: dict[str, Any]) -> None:
        assert self.path is not None
        prefix = f"{section}.{vendor}" if vendor else section
        allowed = _allowed_keys(section, vendor)
        for key, value in table.items():
            dotted = f"{prefix}.{key}"
            if key not in allowed:
                hint = " (it is taken from the section name)" if key == "name" and vendor else ""
                self.problem(self.path, dotted, f"unknown key{hint or _suggest(key, allowed)}")
                continue
            self._put(section, vendor, "file", key, _Raw(value, self.path, dotted, False))

    # ---- environment layer

    def read_env(self) -> None:
        for name, value in self.env.items():
            if not name.upper().startswith(ENV_PREFIX) or "__" not in name:
                continue
            parts = name[len(ENV_PREFIX):].lower().split("__")
            section = parts[0]
            if section == "sinks":
                self.sinks.read_env(name, parts[1:], value)
                continue
            if section == "vendors":
                if len(parts) != 3:
                    self.problem(ENVIRONMENT, name, "expected TRACKER_VENDORS__<VENDOR>__<KEY>")
                    continue
                vendor, key = parts[1], parts[2]
                if vendor not in VENDORS:
                    self.problem(ENVIRONMENT, name, f"unknown vendor '{vendor}'"
                                 f"{_suggest(vendor, VENDORS)}; known: {', '.join(VENDORS)}")
                    continue
            elif section in _SECTIONS:
                if len(parts) != 2:
                    self.problem(ENVIRONMENT, name, "expected TRACKER_<SECTION>__<KEY>")
                    continue
                vendor, key = None, parts[1]
            else:
                self.problem(ENVIRONMENT, name,
                             f"unknown section '{section}'{_suggest(section, [*_SECTIONS, 'vendors'])}")
                continue
            allowed = _allowed_keys(section, vendor)
            if key not in allowed:
                self.problem(ENVIRONMENT, name, f"unknown key '{key}'{_suggest(key, allowed)}")
                continue
            self._put(section, vendor, "env", key, _Raw(value, ENVIRONMENT, name, True))

    # ---- merging, conversion, validation

    def merged(self, section: str, vendor: str | None) -> dict[str, _Raw]:
        if (section, vendor) not in self._merged:
            self._merged[(section, vendor)] = self._merge(section, vendor)
        return self._merged[(section, vendor)]

    def _merge(self, section: str, vendor: str | None) -> dict[str, _Raw]:
        layers = self.layers.get((section, vendor), {})
        file_l, env_l = dict(layers.get("file", {})), layers.get("env", {})
        for secret in _SECRETS.get(section, ()):
            for layer in (file_l, env_l):
                if secret in layer and f"{secret}_file" in layer:
                    a, b = layer[secret], layer[f"{secret}_file"]
                    self.problem(b.file, b.key, f"give either {a.key} or {b.key}, not both")
            if secret in env_l or f"{secret}_file" in env_l:  # the environment replaces the file's pair
                file_l.pop(secret, None)
                file_l.pop(f"{secret}_file", None)
        file_l.update(env_l)
        return file_l

    def convert(self, section: str, key: str, raw: _Raw) -> tuple[bool, Any]:
        kind = _FIELDS[section][key]
        secret = key in _SECRETS.get(section, ())
        v = raw.value

        def bad(expected: str) -> tuple[bool, Any]:
            got = "" if raw.from_env else f" {_toml_type(v)}"
            shown = "" if secret else f" {_show(v)}"
            self.problem(raw.file, raw.key, f"expected {expected}, got{got}{shown}")
            return False, None

        if raw.from_env:
            s = v.strip()
            if kind == "bool":
                low = s.lower()
                if low in ("true", "1", "yes", "on"):
                    return True, True
                if low in ("false", "0", "no", "off"):
                    return True, False
                return bad("a boolean (true/false/1/0/yes/no)")
            if kind == "int":
                try:
                    return True, int(s)
                except ValueError:
                    return bad("an integer")
            if kind == "float":
                try:
                    f = float(s)
                except ValueError:
                    return bad("a number")
                return (True, f) if math.isfinite(f) else bad("a finite number")
            if kind == "strtuple":
                return True, tuple(p.strip() for p in s.split(",") if p.strip())
            if kind == "optstr":
                return True, (v if v != "" else None)
            return True, v
        if kind == "bool":
            return (True, v) if isinstance(v, bool) else bad("a boolean")
        if kind == "int":
            ok = isinstance(v, int) and not isinstance(v, bool)
            return (True, v) if ok else bad("an integer")
        if kind == "float":
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return bad("a number")
            return (True, float(v)) if math.isfinite(v) else bad("a finite number")
        if kind == "strtuple":
            if isinstance(v, list) and all(isinstance(x, str) for x in v):
                return True, tuple(v)
            return bad("a list of strings")
        if not isinstance(v, str):
            return bad("a string")
        if kind == "optstr" and v == "":
            return True, None
        return True, v

    def read_secret_file(self, raw: _Raw) -> tuple[bool, str | None]:
        if raw.from_env:
            name = raw.value.strip()
        elif isinstance(raw.value, str):
            name = raw.value
        else:
            self.problem(raw.file, raw.key, f"expected a file name (string), got {type(raw.value).__name__}")
            return False, None
        if not name:
            self.problem(raw.file, raw.key, "empty file name")
            return False, None
        p = Path(name).expanduser()
        if not p.is_absolute():
            creds = self.env.get("CREDENTIALS_DIRECTORY")
            if creds:
                p = Path(creds) / p
            elif self.path is not None:
                p = Path(self.path).resolve().parent / p
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
            self.problem(raw.file, raw.key, f"cannot read secret file {str(p)!r}: {reason}")
            return False, None
        value = text.rstrip("\r\n")
        if not value:
            self.problem(raw.file, raw.key, f"secret file {str(p)!r} is empty")
            return False, None
        return True, value

    def check(self, section: str, key: str, value: Any, raw: _Raw) -> Any:
        """Semantic checks on a converted value; returns the (possibly normalised) value."""
        kind = _FIELDS[section][key]

        def bad(reason: str) -> None:
            self.problem(raw.file, raw.key, reason)

        if value is None:
            return value
        if kind in ("int", "float") and key not in _NON_NEGATIVE and value <= 0:
            bad(f"must be positive, got {value}")
        elif kind in ("int", "float") and value < 0:
            bad(f"must not be negative, got {value}")
        elif key in ("listen", "ops_listen"):
            listener = parse_listen(value)
            if isinstance(listener, str):
                bad(listener)
            else:
                self.listeners[key] = listener
        elif key == "max_body_bytes" and not MIN_BODY_BYTES <= value <= MAX_BODY_BYTES:
            bad(f"must be between {MIN_BODY_BYTES} (1 KiB) and {MAX_BODY_BYTES} (64 MiB), got {value}: "
                "postbacks are a few KB, and every request may be held in memory whole")
        elif key in _URL_KEYS:
            if value:
                try:
                    u = urlsplit(value)
                    ok = u.scheme in ("http", "https") and bool(u.hostname)
                    _ = u.port  # raises on a malformed port
                except ValueError:
                    ok = False
                if not ok:
                    bad(f"expected an http:// or https:// URL, got {_show(value)}")
                elif key == "base_url":
                    value = value.rstrip("/")
        elif section == "log" and key == "level":
            if value.lower() not in LOG_LEVELS:
                bad(f"expected one of {', '.join(LOG_LEVELS)}{_suggest(value, LOG_LEVELS)}, got {_show(value)}")
            value = value.lower()
        elif section == "log" and key == "format":
            if value.lower() not in LOG_FORMATS:
                bad(f"expected one of {', '.join(LOG_FORMATS)}{_suggest(value, LOG_FORMATS)}, got {_show(value)}")
            value = value.lower()
        elif key in ("allow_networks", "trusted_proxies"):
            for net in value:
                try:
                    ipaddress.ip_network(net, strict=False)
                except ValueError:
                    bad(f"not an IP network (CIDR): {_show(net)}")
        elif key == "postback_token" and not _URL_SAFE.fullmatch(value):
            bad("must contain only URL-safe characters (A-Z a-z 0-9 . _ ~ -)")
        elif key == "postback_token" and len(value) < MIN_POSTBACK_TOKEN_CHARS:
            bad(f"is shorter than {MIN_POSTBACK_TOKEN_CHARS} characters, too easy to guess: anyone who "
                "guesses it can post delivery reports; make one with `openssl rand -hex 16`")
        elif key == "status_token" and (len(value) < MIN_POSTBACK_TOKEN_CHARS or not _URL_SAFE.fullmatch(value)):
            bad(f"must be at least {MIN_POSTBACK_TOKEN_CHARS} URL-safe characters (A-Z a-z 0-9 . _ ~ -), "
                "not guessable: make one with `openssl rand -hex 16`")
        elif key == "dsn" and "://" in value:
            if not re.match(r"postgres(ql)?://", value):
                bad("expected a postgresql:// URL or a libpq key=value string")
            elif not _url_port_ok(value):
                bad("the URL's port is not a number in 1..65535")
        return value

    def build(self, section: str, vendor: str | None) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for key, raw in self.merged(section, vendor).items():
            if key.endswith("_file") and key not in _FIELDS[section]:
                field_name = key[: -len("_file")]
                ok, value = self.read_secret_file(raw)
            else:
                field_name = key
                ok, value = self.convert(section, key, raw)
            if ok:
                values[field_name] = self.check(section, field_name, value, raw)
        return values

    def load(self) -> Config:
        self.read_file()
        self.read_env()
        sections = {s: self.build(s, None) for s in _SECTIONS}
        vendors = {v: self.build("vendors", v) for v in VENDORS}
        self.check_database(sections["database"])
        self.check_listeners()
        for v in VENDORS:
            self.check_poll_schedule(v, vendors[v])
        sinks = self.sinks.build()
        for file, key, reason in self.sinks.problems:
            self.problem(file, key, reason)
        if self.problems:  # the file's problems first, then the environment's
            raise ConfigError(sorted(self.problems, key=lambda p: p.file == ENVIRONMENT))
        return Config(
            database=DatabaseConfig(**sections["database"]),
            http=HttpConfig(**sections["http"]),
            intake=IntakeConfig(**sections["intake"]),
            health=HealthConfig(**sections["health"]),
            log=LogConfig(**sections["log"]),
            retention=RetentionConfig(**sections["retention"]),
            vendors={v: VendorConfig.from_keys(v, **vendors[v]) for v in VENDORS},
            sinks=sinks,
            source=self.path,
        )

    # ---- checks across keys: each reported once, at the key most likely to be the mistake

    def source(self, section: str, vendor: str | None, key: str) -> tuple[str, str]:
        """(file, key) to name in a problem about ``key``: where it was set, else its dotted name."""
        raw = self.merged(section, vendor).get(key)
        if raw is not None:
            return raw.file, raw.key
        return self.path or ENVIRONMENT, f"{section}.{vendor}.{key}" if vendor else f"{section}.{key}"

    def usable(self, section: str, vendor: str | None, *keys: str) -> bool:
        """None of ``keys`` has been reported already (a cross-check on them would only echo)."""
        return not any(self.source(section, vendor, k)[1] in self._bad_keys for k in keys)

    def cross_problem(self, section: str, vendor: str | None, key: str, reason: str) -> None:
        self.problem(*self.source(section, vendor, key), reason)

    def check_database(self, db: dict[str, Any]) -> None:
        if not self.usable("database", None, "pool_min", "pool_max"):
            return
        pool_min = db.get("pool_min", DatabaseConfig.pool_min)
        pool_max = db.get("pool_max", DatabaseConfig.pool_max)
        if pool_max < MIN_POOL:
            self.cross_problem("database", None, "pool_max",
                               f"must be at least {MIN_POOL}: the intake listener holds one "
                               "connection for as long as the tracker runs")
        elif pool_min > pool_max:
            key = "pool_min" if "pool_min" in db else "pool_max"
            self.cross_problem("database", None, key,
                               f"database.pool_min ({pool_min}) must not exceed database.pool_max ({pool_max})")
        limit = EMBEDDED_MAX_CONNECTIONS - EMBEDDED_POOL_HEADROOM
        if not db.get("dsn") and pool_max > limit:
            self.cross_problem("database", None, "pool_max",
                               f"must be at most {limit} with the embedded cluster (no database.dsn), "
                               f"which accepts {EMBEDDED_MAX_CONNECTIONS} connections in all")

    def check_listeners(self) -> None:
        ops = self.listeners.get("ops_listen")
        if ops is None or not self.usable("http", None, "listen"):
            return
        main = self.listeners.get("listen") or parse_listen(HttpConfig.listen)
        if isinstance(main, Listener) and ops.clashes_with(main):
            self.cross_problem("http", None, "ops_listen",
                               f"{ops.text} takes the same address and port as http.listen "
                               f"({main.text}); give it another port, or leave it out to serve "
                               "/healthz, /readyz and /metrics on the postback listener")

    def check_poll_schedule(self, vendor: str, given: dict[str, Any]) -> None:
        keys = ("first_poll_s", "max_poll_interval_s", "tracking_window_s")
        if not self.usable("vendors", vendor, *keys):
            return
        first, cap, window = (given.get(k, getattr(VendorConfig, k)) for k in keys)
        prefix = f"vendors.{vendor}"
        # Name the key the operator set: that is the one to change.
        if first > cap:
            key = "first_poll_s" if "first_poll_s" in given else "max_poll_interval_s"
            self.cross_problem("vendors", vendor, key,
                               f"{prefix}.first_poll_s ({first:g} s) exceeds {prefix}.max_poll_interval_s "
                               f"({cap:g} s): the first poll would wait longer than any later one")
        if first >= window:
            key = "first_poll_s" if "first_poll_s" in given else "tracking_window_s"
            self.cross_problem("vendors", vendor, key,
                               f"{prefix}.first_poll_s ({first:g} s) is not less than "
                               f"{prefix}.tracking_window_s ({window:g} s): messages would be given "
                               "up on before their first poll")


def _url_port_ok(url: str) -> bool:
    try:
        port = urlsplit(url).port
    except ValueError:
        return False
    return port is None or port > 0


def _config_path(path: str | None, env: Mapping[str, str]) -> str | None:
    return path or env.get("TRACKER_CONFIG") or None


def secrets_of(cfg: Config) -> list[str]:
    """Every secret value in a configuration (the DSN's password, not the whole DSN)."""
    out: list[str] = []
    if cfg.database.dsn:
        pw = _dsn_password(cfg.database.dsn)
        if pw:
            out.append(pw)
    for v in cfg.vendors.values():
        out += [s for s in (v.postback_token, v.api_key, v.api_token, v.partner_token) if s]
        own = _VENDOR_SETTINGS.get(v.name, {})
        out += [s for k, s in v.settings.items() if s and k in own and own[k].secret]
    out += sink_settings.secrets_of(cfg.sinks)
    if cfg.http.status_token:
        out.append(cfg.http.status_token)
    return out


def load(path: str | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load the configuration: ``path``, else ``$TRACKER_CONFIG``, else defaults; then the environment.

    Raises :class:`ConfigError` listing every problem. Registers every secret with tracker.logging so
    that it is masked in log output.
    """
    env = os.environ if env is None else env
    cfg = _Loader(_config_path(path, env), env).load()
    from tracker.logging import register_secret  # late: tracker.logging imports redact_dsn from here

    for s in secrets_of(cfg):
        register_secret(s)
    return cfg


def summary(cfg: Config) -> list[str]:
    """A short, redacted description of a configuration."""
    db = (f"dsn {_dsn_target(cfg.database.dsn)}" if cfg.database.dsn
          else f"embedded cluster in {cfg.database.state_dir}")
    lines = [
        f"database: {db}",
        f"http.listen: {cfg.http.listen}",
        f"http.ops_listen: {cfg.http.ops_listen or '(same listener)'}",
        f"log: level={cfg.log.level} format={cfg.log.format}",
    ]
    for v in cfg.vendors.values():
        if not v.enabled:
            lines.append(f"vendor {v.name}: disabled")
            continue
        notes = [f"base_url={redact_dsn(v.base_url) or '(unset)'}"]
        if not v.postback_token:
            notes.append("no postback_token (postbacks refused)")
        lines.append(f"vendor {v.name}: enabled, {', '.join(notes)}")
    lines += sink_settings.summary(cfg.sinks)
    return lines


def check_config(path: str | None, env: Mapping[str, str] | None = None, out: TextIO | None = None) -> int:
    """``tracker check-config``: 0 and a summary when the configuration is valid, else 2 and every problem."""
    out = sys.stdout if out is None else out
    env = os.environ if env is None else env
    try:
        cfg = load(path, env)
    except ConfigError as e:
        n = len(e.problems)
        print(f"config has {n} problem{'s' if n != 1 else ''}:", file=out)
        for p in e.problems:
            print(str(p), file=out)
        return 2
    print(f"config OK: {cfg.source or 'defaults'}", file=out)
    for line in summary(cfg):
        print(f"  {line}", file=out)
    return 0
