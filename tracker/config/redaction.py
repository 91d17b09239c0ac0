"""Keeping secrets out of output: DSNs with their passwords hidden, every secret of a
configuration (for tracker.logging to mask), values shown in problem texts."""
from __future__ import annotations

import re
from typing import Any

from tracker.config.schema import _VENDOR_SETTINGS
from tracker.config_types import Config
from tracker.sinks import settings as sink_settings

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
