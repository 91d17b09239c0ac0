"""Standard Webhooks signatures (https://www.standardwebhooks.com/). Pure.

A secret is `whsec_` followed by base64 of 24 to 64 random bytes (the specification's bounds).
The signature of one delivery is HMAC-SHA256 over `<webhook-id>.<webhook-timestamp>.<body>`,
sent as `v1,<base64>`; with several secrets (rotation) one entry per secret, space-separated,
so that a receiver holding either the old or the new secret accepts the delivery.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Iterable

PREFIX = "whsec_"
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64


class BadSecret(ValueError):
    """Why a configured secret cannot be used. Never quotes the secret."""


def parse_secret(text: str) -> bytes:
    """The key bytes of a `whsec_<base64>` secret, or BadSecret saying why not."""
    if not isinstance(text, str) or not text.startswith(PREFIX):
        raise BadSecret(f"must start with {PREFIX!r} followed by base64 (Standard Webhooks)")
    encoded = text[len(PREFIX):].strip()
    try:
        # Padding is optional in the wild (the reference libraries add it back too).
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise BadSecret(f"the part after {PREFIX!r} is not valid base64") from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise BadSecret(f"decodes to {len(key)} bytes; use {MIN_KEY_BYTES} to {MAX_KEY_BYTES} random "
                        f"bytes, e.g. {PREFIX}$(openssl rand -base64 32)")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature entry."""
    signed = b"%s.%d.%s" % (msg_id.encode(), timestamp, body)
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signature_header(keys: Iterable[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    return " ".join(sign(k, msg_id, timestamp, body) for k in keys)


def headers(keys: Iterable[bytes], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of one delivery attempt (the timestamp is the attempt's, in whole seconds)."""
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(keys, msg_id, timestamp, body),
    }
