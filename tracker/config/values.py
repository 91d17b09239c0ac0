"""One key at a time: a raw value converted to its field's kind, a secret read from its file,
then checked on its own (checks across keys: loader.py)."""
from __future__ import annotations

import ipaddress
import math
from typing import Any

from tracker.config.dsn import dsn_problem
from tracker.config.layers import _Layers, _Raw
from tracker.config.listen import parse_listen
from tracker.config.redaction import _show
from tracker.config.schema import (
    _FIELDS,
    _MAX,
    _NON_NEGATIVE,
    _SECRETS,
    _CHOICES,
    _URL_KEYS,
    _URL_SAFE,
    LOG_FORMATS,
    LOG_LEVELS,
    MAX_BODY_BYTES,
    MIN_BODY_BYTES,
    MIN_POSTBACK_TOKEN_CHARS,
    POSTBACK_TOKENS,
    _suggest,
)
from tracker.config.secret_files import read_secret, secret_path
from tracker.sinks.checks import scheme_and_host, url_problem


def _toml_type(v: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array", dict: "table"}
    return names.get(type(v), "date/time")


class _Values(_Layers):
    """Converts and checks the merged values one key at a time (build() in loader.py calls it)."""

    def convert(self, section: str, key: str, raw: _Raw) -> tuple[bool, Any]:
        kind = _FIELDS[section][key]
        secret = key in _SECRETS.get(section, ())
        v = raw.value

        def bad(expected: str) -> tuple[bool, Any]:
            got = "" if raw.from_env else f" {_toml_type(v)}"
            shown = "" if secret else f" {_show(v)}"
            if key in _URL_KEYS:  # a URL's user, password, path and query may hold a token
                shown = f" ({scheme_and_host(v)})" if isinstance(v, str) else ""
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
        if "\0" in name:
            self.problem(raw.file, raw.key, "the file name contains a NUL character, which no file name may")
            return False, None
        p = secret_path(name, self.env, self.path)
        text, reason = read_secret(p)
        if text is None:
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
        elif kind in ("int", "float") and key in _MAX and value > _MAX[key][0]:
            limit, unit, words = _MAX[key]
            bad(f"must be at most {limit:.0f} {unit} ({words}), got {value:g}")
        elif section == "database" and key == "state_dir":
            if not value.strip():
                bad("must name a directory for the embedded cluster (it is empty); leave the key "
                    "out for the default ./var/tracker")
            elif "\0" in value:
                bad("contains a NUL character, which no file name may")
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
                if (problem := url_problem(value, ("http", "https"))) is not None:
                    bad(problem)
                elif key == "base_url":
                    value = value.rstrip("/")
        elif key in _CHOICES:
            choices = _CHOICES[key]
            if value.strip().strip("/").lower() not in {c.lower() for c in choices}:
                bad(f"expected one of {', '.join(choices)}, got {_show(value)}")
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
        elif key in POSTBACK_TOKENS and not _URL_SAFE.fullmatch(value):
            bad("must contain only URL-safe characters (A-Z a-z 0-9 . _ ~ -)")
        elif key in POSTBACK_TOKENS and len(value) < MIN_POSTBACK_TOKEN_CHARS:
            bad(f"is shorter than {MIN_POSTBACK_TOKEN_CHARS} characters, too easy to guess: anyone who "
                "guesses it can post delivery reports; make one with `openssl rand -hex 16`")
        elif key == "status_token" and (len(value) < MIN_POSTBACK_TOKEN_CHARS or not _URL_SAFE.fullmatch(value)):
            bad(f"must be at least {MIN_POSTBACK_TOKEN_CHARS} URL-safe characters (A-Z a-z 0-9 . _ ~ -), "
                "not guessable: make one with `openssl rand -hex 16`")
        elif key == "dsn":
            reason = dsn_problem(value)
            if reason:
                bad(reason)
        return value
