"""Keeping secrets out of output: DSNs with their passwords hidden, every secret of a
configuration (for tracker.logging to mask), values shown in problem texts."""
from __future__ import annotations

import re
from typing import Any
from base64 import b64encode
from urllib.parse import quote, quote_plus, unquote, unquote_plus, urlsplit

from tracker.config.schema import _VENDOR_SETTINGS
from tracker.config_types import Config
from tracker.masking import shortened
from tracker.sinks import described as sinks_described
from tracker.sinks.checks import public_url

MASK = "***"
# A URL at the start of the text (leading blanks allowed, as urlsplit allows them).
_URL_START = re.compile(r"\s*[A-Za-z][A-Za-z0-9+.-]*://")
_QUERY_SECRETS = ("password", "sslpassword")
# For URLs inside longer text (an error message): greedy up to the last "@" before any query, so
# that an unencoded "@" in a password is still hidden whole.
_URL_USERINFO = re.compile(r"(?P<pre>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*:)[^?#\s]*@")
_KV_PASSWORD = re.compile(
    r"(?P<pre>\b(?:password|sslpassword|passwd)\s*=\s*)(?:'(?:\\.|[^'\\])*'|[^\s&#]+)", re.IGNORECASE
)


def _secret_spans(text: str) -> list[tuple[int, int]]:
    """Where a URL's password is in ``text`` (a URL from its start): the userinfo's, and the
    ``password=``/``sslpassword=`` query parameters'. Found as urlsplit (and so asyncpg) finds
    them, whatever characters they hold: the netloc runs to the first / ? or #, its userinfo to
    the netloc's last @, the password from the userinfo's first colon. (urlsplit itself is not
    used for the spans: it drops tabs and newlines, so its parts are not always in the text.)"""
    m = _URL_START.match(text)
    if not m:
        return []
    spans = []
    start = m.end()
    ends = [i for i in (text.find(c, start) for c in "/?#") if i != -1]
    netloc_end = min(ends, default=len(text))
    at = text.rfind("@", start, netloc_end)
    colon = text.find(":", start, at) if at != -1 else -1
    if colon != -1 and colon + 1 < at:
        spans.append((colon + 1, at))
    q = text.find("?", netloc_end)
    if q != -1 and (text.find("#", netloc_end) == -1 or q < text.find("#", netloc_end)):
        q_end = len(text)  # a "#" in a password ends the URL's query: hidden with the password
        pos = q + 1
        for part in text[q + 1:q_end].split("&"):
            name, eq, _ = part.partition("=")
            if eq and unquote_plus(name).strip().lower() in _QUERY_SECRETS and len(part) > len(name) + 1:
                spans.append((pos + len(name) + 1, pos + len(part)))
            pos += len(part) + 1
    return spans


def redact_dsn(dsn: str | None) -> str:
    """The DSN (or a text holding one) with its passwords hidden: a URL's userinfo password and
    ``password=``/``sslpassword=`` parameters, whatever characters they hold, and the libpq
    ``password=`` key/value form."""
    if not dsn:
        return ""
    out = dsn
    for a, b in sorted(_secret_spans(dsn), reverse=True):
        out = out[:a] + MASK + out[b:]
    out = _URL_USERINFO.sub(lambda m: m.group("pre") + MASK + "@", out)
    return _KV_PASSWORD.sub(lambda m: m.group("pre") + MASK, out)


def dsn_passwords(dsn: str) -> list[str]:
    """Every form of the DSN's passwords, to mask wherever it appears (tracker.logging): as written
    in the text, as urlsplit gives it, and percent-decoded (as asyncpg sends it)."""
    found = [dsn[a:b] for a, b in _secret_spans(dsn)]
    try:
        found.append(urlsplit(dsn).password or "")
    except ValueError:  # e.g. an unbalanced "[": asyncpg refuses it too; the spans above stand
        pass
    found += [m.group(0)[len(m.group("pre")):-1] for m in _URL_USERINFO.finditer(dsn)]
    found += [m.group(0)[len(m.group("pre")):] for m in _KV_PASSWORD.finditer(dsn)]
    found += [f.strip("'") for f in found]
    found += [unquote(f) for f in found] + [unquote_plus(f) for f in found]
    return list(dict.fromkeys(f for f in found if f))


_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]*")


def _public(value: Any) -> Any:
    """``value`` with every URL in it (in a string, a list's, a table's) cut to scheme://host[:port]:
    a URL's user, password, path and query may hold a token (a webhook's path, an ?api_key=)."""
    if isinstance(value, str):
        return _URL_IN_TEXT.sub(lambda m: public_url(m.group(0)), value)
    if isinstance(value, (list, tuple)):
        return type(value)(_public(v) for v in value)
    if isinstance(value, dict):
        return {k: _public(v) for k, v in value.items()}
    return value


def _show(value: Any) -> str:
    """A non-secret value for a problem text: short, and any URL in it as scheme://host[:port] only
    (a URL-valued key's problem shows even less: tracker.config.problems)."""
    return redact_dsn(shortened(repr(_public(value)), 60))


def _basic(user: str, password: str) -> str:
    """Basic authorization's credentials, as the header carries them (and a vendor may echo)."""
    return b64encode(f"{user}:{password}".encode("utf-8", "surrogatepass")).decode()


def vendor_secrets_of(cfg: Config) -> list[str]:
    """The secrets a vendor is given, so may echo: its credentials, its postback token, and the
    password of any of its URLs (http://user:password@host: sent as basic auth), in every form
    dsn_passwords finds (as written, percent-decoded); each also as a URL's query carries it
    (percent-encoded: Spark Sender's api_key), and the Basic credentials sent (a URL's user and
    password; Twilio's account SID and auth token) as the header carries them."""
    out: list[str] = []
    for v in cfg.vendors.values():
        out += [s for s in (v.postback_token, v.previous_postback_token, v.api_key, v.api_token,
                            v.partner_token) if s]
        own = _VENDOR_SETTINGS.get(v.name, {})
        out += [s for k, s in v.settings.items() if s and k in own and own[k].secret]
        urls = [v.base_url, v.status_url] + [s for k, s in v.settings.items() if k in own and own[k].url]
        for url in filter(None, urls):
            out += dsn_passwords(url)
            try:
                u = urlsplit(url)
                if u.username is not None and u.password:  # as tracker.http.request sends it
                    out.append(_basic(unquote(u.username), unquote(u.password)))
            except ValueError:  # not a URL tracker.http.request would send either
                pass
        if v.settings.get("account_sid") and v.settings.get("auth_token"):  # Twilio's
            out.append(_basic(v.settings["account_sid"], v.settings["auth_token"]))
        if v.settings.get("api_key_sid") and v.settings.get("api_key_secret"):  # Twilio's API key
            out.append(_basic(v.settings["api_key_sid"], v.settings["api_key_secret"]))
    out += [encoded(s, safe="") for s in out for encoded in (quote, quote_plus)]
    return list(dict.fromkeys(out))


def secrets_of(cfg: Config) -> list[str]:
    """Every secret value in a configuration (the DSN's password, not the whole DSN)."""
    out = dsn_passwords(cfg.database.dsn) if cfg.database.dsn else []
    out += vendor_secrets_of(cfg)
    out += sinks_described.secrets_of(cfg.sinks)
    if cfg.http.status_token:
        out.append(cfg.http.status_token)
    return out
