"""Twilio's signature on its status callbacks (`X-Twilio-Signature`), for tracker.adapters.twilio,
which re-exports `signature`, `signed_url` and `verify_postback` (its SignsPostbacks ability). Kept
apart because it is its own concern: it reads no payload, only proves who sent it.

Base64 of HMAC-SHA1, keyed with the auth token, over the URL Twilio requested (the public one:
`vendors.twilio.public_base_url` behind a proxy) followed by every POST parameter, sorted by name,
as name + value. As Twilio's own validators do, the URL is tried with and without its default
port. A JSON body is signed through `bodySHA256` in the URL instead.

Signed with a SharedKey (a Webhook Rule of Twilio's Webhooks configuration API matched the URL),
the callback also carries `X-Twilio-Webhooks-Signature-Settings: key=<key id>,algorithm=<alg>`:
the same string is signed with the shared key's secret (`vendors.twilio.shared_key_secret`) and
that algorithm, HMAC_SHA1 or HMAC_SHA256 (as Twilio's helper libraries: no `algorithm=` part
means HMAC_SHA1; the name in any case). With the header, only the shared key's secret is tried,
never the auth token; an algorithm we do not know, or no shared key secret configured: refused.

While a secret is rotated, the previous one verifies too (`previous_auth_token`,
`previous_shared_key_secret`): a callback signed just before Twilio switched is not refused.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import parse_qs, parse_qsl, urlsplit, urlunsplit

from tracker.adapters.base import PostbackRequest, header

if TYPE_CHECKING:
    from tracker.config_types import VendorConfig

SIGNATURE_HEADER = "X-Twilio-Signature"
SIGNATURE_SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"  # present: signed with a SharedKey
HMAC_SHA1 = "HMAC_SHA1"
HMAC_SHA256 = "HMAC_SHA256"
ALGORITHMS = {HMAC_SHA1: hashlib.sha1, HMAC_SHA256: hashlib.sha256}


def signature(auth_token: str, url: str, params: Mapping[str, Any], algorithm: str = HMAC_SHA1) -> str:
    """X-Twilio-Signature of a request: HMAC (SHA-1, or the shared key's `algorithm`), keyed with
    the auth token or the shared key's secret, over the URL then each parameter's name and value,
    names sorted (a repeated name: its distinct values sorted), base64."""
    signed = url
    for name in sorted(params):
        values = params[name]
        for value in sorted(set(values if isinstance(values, list) else [values])):
            signed += name + value
    digest = ALGORITHMS.get(algorithm.upper())
    if digest is None:
        raise ValueError(f"twilio: unknown signature algorithm {algorithm[:40]!r}")
    mac = hmac.new(auth_token.encode("utf-8"), signed.encode("utf-8"), digest)
    return base64.b64encode(mac.digest()).decode("ascii")


def signature_algorithm(settings: str) -> str:
    """The algorithm an X-Twilio-Webhooks-Signature-Settings value names (`algorithm=`, the first
    one; none: HMAC_SHA1, as Twilio's libraries read it), upper-cased; it may be one we do not
    know (not in ALGORITHMS)."""
    for part in settings.split(","):
        name, separator, value = part.partition("=")
        if separator and name.strip() == "algorithm" and value.strip():
            return value.strip().upper()
    return HMAC_SHA1


def _keys(cfg: VendorConfig, request: PostbackRequest) -> tuple[list[tuple[str, str]], str]:
    """The secrets the callback may be signed with (setting name, secret), and the algorithm; no
    secrets where it cannot
    verify. Without X-Twilio-Webhooks-Signature-Settings: the auth token (and the previous one,
    while a rotation lasts) with HMAC-SHA1; with it: the shared key's secret (and the previous
    one) with the header's algorithm, never the auth token, as Twilio's libraries."""
    settings = (header(request.headers, SIGNATURE_SETTINGS_HEADER) or "").strip()
    if not settings:
        names, algorithm = ("auth_token", "previous_auth_token"), HMAC_SHA1
    else:
        names, algorithm = ("shared_key_secret", "previous_shared_key_secret"), signature_algorithm(settings)
    current = cfg.settings.get(names[0])  # the previous one only beside the current
    secrets = [(n, cfg.settings[n]) for n in names if cfg.settings.get(n)] if current else []
    return (secrets, algorithm) if algorithm in ALGORITHMS else ([], algorithm)


def _ports(url: str) -> list[str]:
    """The URL as given, without its port and with its default port (Twilio signs either)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    if parts.port is not None:
        host = host.rsplit(":", 1)[0]
    default = 443 if parts.scheme == "https" else 80
    bare = urlunsplit(parts._replace(netloc=host))
    ported = urlunsplit(parts._replace(netloc=f"{host}:{parts.port or default}"))
    return list(dict.fromkeys([url, bare, ported]))


def signed_url(cfg: VendorConfig, received_url: str) -> str:
    """The URL Twilio signed: the public base URL (behind a proxy) with the path and query as
    received, else the URL as received."""
    public = cfg.settings.get("public_base_url")
    if not public:
        return received_url
    parts = urlsplit(received_url)
    path_qs = parts.path + (f"?{parts.query}" if parts.query else "")
    return public.rstrip("/") + path_qs


def verify_postback(cfg: VendorConfig, request: PostbackRequest) -> str | None:
    """Does the callback's X-Twilio-Signature verify: with the account's auth token (HMAC-SHA1),
    or, where X-Twilio-Webhooks-Signature-Settings says a SharedKey signed it, with the shared
    key's secret and the algorithm the header names? The name of the setting whose secret
    verified it (a `previous_` one is counted: when none is used any more, it can go), else
    None."""
    secrets, algorithm = _keys(cfg, request)
    given = header(request.headers, SIGNATURE_HEADER)
    if not secrets or not given:
        return None
    url = signed_url(cfg, request.url)
    query = parse_qs(urlsplit(url).query)
    if "bodySHA256" in query:  # a JSON body: its hash is in the signed URL
        if not hmac.compare_digest(hashlib.sha256(request.body).hexdigest(), query["bodySHA256"][0]):
            return None
        params: dict[str, list[str]] = {}
    elif request.method.upper() == "POST":
        try:
            form = request.body.decode("utf-8")
        except UnicodeDecodeError:
            return None
        params = {}
        for name, value in parse_qsl(form, keep_blank_values=True):
            params.setdefault(name, []).append(value)
    else:
        params = {}
    expected = given.strip().encode("utf-8", "replace")
    return next((name for name, secret in secrets for u in _ports(url)
                 if hmac.compare_digest(signature(secret, u, params, algorithm).encode("ascii"), expected)),
                None)
