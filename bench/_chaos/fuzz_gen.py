"""Hostile input, generated fast from a seed: postbacks across the pushing vendors' formats
(Skycore v2 JSON, v1 XML, form; engageSPARK JSON and form; Sparrow JSON; Twilio's signed form)
and routes. Every one is meant to be refused with a 4xx. A Twilio callback is refused either for
its signature (missing, wrong, over another URL or body: 403) or, correctly signed, for what
its form says (400). Submission rows: fuzz_rows.py.

A generated postback that the tracker's own parser would read (tracker.postbacks.core.parse) is
dropped and another generated: the suite checks that the running daemon refuses what must be
refused, whatever gets past its parser into its routes and storage."""
from __future__ import annotations

import random
import string
from datetime import datetime, timezone
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlencode

import orjson

from tracker.adapters.base import ParseError
from tracker.adapters.twilio_signature import SIGNATURE_HEADER, signature
from tracker.postbacks import core

PUSHERS = ("skycore", "engagespark", "sparrow", "twilio")
FORM = "application/x-www-form-urlencoded"
CJK = "漢字送達確認"


class Postback(NamedTuple):
    kind: str
    method: str
    vendor: str  # in the path
    token: str  # in the path
    content_type: str | None
    body: bytes
    query: str = ""
    headers: tuple[tuple[str, str], ...] = ()  # besides Content-Type (Twilio's signature)
    signed: bool = False  # the signature verifies (a signing vendor's request is read only then)


class Refs(NamedTuple):
    """Seeded messages (state `submitted`) the generated reports name, so that one wrongly
    taken would change a state."""
    skycore: list[str]
    engagespark: list[str]
    sparrow: list[tuple[str, str]]  # (batch, recipient)
    twilio: list[str]  # message SIDs


class Signer(NamedTuple):
    """What a Twilio callback is signed over: the daemon's base URL and the auth token."""
    base: str
    auth_token: str

    def url(self, vendor: str, token: str, query: str = "") -> str:
        return f"{self.base}/postbacks/{vendor}/{token}" + (f"?{query}" if query else "")


def valid(rng: random.Random, vendor: str, refs: Refs) -> tuple[dict | bytes, str]:
    """A real postback (as the vendor sends it) about a seeded message: (body, content type)."""
    if vendor == "skycore":
        ref = rng.choice(refs.skycore)
        if rng.random() < 0.3:
            return (f"<?xml version='1.0'?><POSTBACK><ORIGIN>SMS_MT</ORIGIN><CODE>N202</CODE>"
                    f"<STATUS>Message Sent/Delivered</STATUS><FROM>00000</FROM>"
                    f"<TO>14155550100</TO><TRACKINGID>{ref}</TRACKINGID><SPID>0001470</SPID>"
                    f"<TIMESTAMP>2026-12-01T10:00:00</TIMESTAMP></POSTBACK>").encode(), "application/xml"
        return {"origin": "SMS_MT", "code": "N202", "sent-as": "SMS", "status": "Delivered",
                "to": "14155550100", "from": "00000", "tracking-id": ref,
                "timestamp": "2026-12-01T10:00:00.000000+00:00"}, "application/json"
    if vendor == "engagespark":
        return {"id": rng.choice(refs.engagespark), "deliveredToTelco": True,
                "deliveredToPhone": "confirmed", "done": True, "error": "",
                "deliveryError": ""}, "application/json"
    if vendor == "twilio":
        sid = rng.choice(refs.twilio)
        return urlencode({"MessageSid": sid, "SmsSid": sid, "MessageStatus": "delivered",
                          "SmsStatus": "delivered", "To": "+14155550123", "From": "+14155550100",
                          "AccountSid": "AC" + "0" * 32, "ApiVersion": "2010-04-01"}).encode(), FORM
    batch, to = rng.choice(refs.sparrow)
    return {"dlr_type": "instant", "dlr_data": [{"ts": "2026-12-01 10:00:00", "to": to,
                                                 "id": batch, "status": "00"}]}, "application/json"


REQUIRED = {"skycore": ("tracking-id", "code"), "engagespark": ("id",), "sparrow": ("dlr_data",)}
WRONG_TYPES = (None, True, False, 0, -1, 1.5, 2**63 - 1, 1e300, {}, [], [[]], {"a": {}}, "")


def _mutate(rng: random.Random, vendor: str, doc: Any) -> tuple[str, bytes]:
    """A real JSON postback made unreadable on purpose: (kind, body)."""
    raw = orjson.dumps(doc)
    k = rng.randrange(11)
    if k == 0:
        return "truncated", raw[:rng.randrange(1, len(raw))]
    if k == 1:
        field = rng.choice(REQUIRED[vendor])
        return "field dropped", orjson.dumps({a: b for a, b in doc.items() if a != field})
    if k == 2:
        field = rng.choice(REQUIRED[vendor])
        return "field retyped", orjson.dumps({**doc, field: rng.choice(WRONG_TYPES)})
    if k == 3:
        return "NUL", orjson.dumps(_with_id(vendor, doc, lambda ref: ref[:3] + "\x00" + ref[3:]))
    if k == 4:
        return "lone surrogate", raw.replace(b'":"', b'":"\\ud800', 1)
    if k == 5:
        cut = rng.randrange(len(raw))
        return "invalid UTF-8", raw[:cut] + bytes([0xff, 0xfe, 0xc3]) + raw[cut:]
    if k == 6:
        other = rng.choice([v for v in PUSHERS if v != vendor])
        return "another vendor's shape", _bytes(valid(rng, other, FAKE)[0])
    if k == 7:
        return "JSON scalar or list", orjson.dumps(rng.choice([1, "x", None, True, [], [1, 2],
                                                               [[]], 1e300]))
    if k == 8:
        depth = rng.choice((100, 2000, 20000))
        return "deep nesting", b"[" * depth + b"]" * depth
    if k == 9:
        return "random bytes", rng.randbytes(rng.randrange(1, 400))
    huge = CJK * rng.choice((40, 500, 1000))
    return "id longer than an index entry", orjson.dumps(_with_id(vendor, doc, lambda _: huge))


def _with_id(vendor: str, doc: dict, change: Any) -> dict:
    """The postback with its message id changed by `change`."""
    if vendor == "sparrow":
        entry = doc["dlr_data"][0]
        return {**doc, "dlr_data": [{**entry, "id": change(entry["id"])}]}
    field = "tracking-id" if vendor == "skycore" else "id"
    return {**doc, field: change(doc[field])}


FAKE = Refs(["fake0000ref"], ["SMS20261201T000000-1234-0001"],
            [("5d7c1f6e-0000-4000-8000-00000000ffff", "9779800000001")], ["SM" + "f" * 32])


def _xml_bad(rng: random.Random, body: bytes) -> tuple[str, bytes]:
    k = rng.randrange(3)
    if k == 0:
        return "XML truncated", body[:rng.randrange(1, len(body))]
    if k == 1:
        return "XML entity", (b"<?xml version='1.0'?><!DOCTYPE p [<!ENTITY x 'y'>]>"
                              + body.split(b"?>", 1)[1].replace(b"N202", b"&x;"))
    return "XML without tracking id", body.replace(b"TRACKINGID", b"TRACKINGXX")


def _twilio_bad(rng: random.Random, body: bytes, token: str, signer: Signer) -> Postback:
    """A Twilio status callback refused for its signature (403), or signed as Twilio signs and
    refused for what its form says (400)."""
    doc = dict(parse_qsl(body.decode()))
    url = signer.url("twilio", token)

    def sent(kind: str, form: dict[str, str] | bytes, sig: str | None, signed: bool) -> Postback:
        raw = form if isinstance(form, bytes) else urlencode(form).encode()
        return Postback(kind, "POST", "twilio", token, FORM, raw,
                        headers=() if sig is None else ((SIGNATURE_HEADER, sig),), signed=signed)

    k = rng.randrange(9)
    if k == 0:
        return sent("signature missing", doc, None, False)
    if k == 1:  # the same callback saying something else
        return sent("signature of another body", doc,
                    signature(signer.auth_token, url, {**doc, "MessageStatus": "failed"}), False)
    if k == 2:  # another route's URL (another token)
        return sent("signature over another URL", doc,
                    signature(signer.auth_token, signer.url("twilio", token + "0"), doc), False)
    if k == 3:
        return sent("signature with another key", doc,
                    signature(signer.auth_token + "0", url, doc), False)
    if k == 4:
        good = signature(signer.auth_token, url, doc)
        return sent("signature garbled", doc, rng.choice(
            ["", "x", good[:-2], good.lower(), "=" * 28, good[::-1], "sha1=" + good]), False)
    if k == 5:  # a byte that is not UTF-8: the form cannot be read, so neither can the signature
        cut = rng.randrange(len(body))
        return sent("invalid UTF-8", body[:cut] + b"%ff" + bytes([0xff]) + body[cut:],
                    signature(signer.auth_token, url, doc), False)
    # signed as Twilio signs: refused for what it says
    if k == 6:
        form, kind = {a: b for a, b in doc.items() if a not in ("MessageSid", "SmsSid")}, "no sid"
    elif k == 7:
        form, kind = {**doc, "MessageSid": rng.choice(["", " ", "\t"]), "SmsSid": ""}, "blank sid"
    else:
        form, kind = {a: b for a, b in doc.items() if "Status" not in a}, "no status"
    return sent(kind, form, signature(signer.auth_token, url, form), True)


def postback(rng: random.Random, refs: Refs, tokens: dict[str, str], max_body: int,
             signer: Signer) -> Postback:
    """One hostile request at the postback route."""
    vendor = rng.choice(PUSHERS)
    token = tokens[vendor]
    doc, ctype = valid(rng, vendor, refs)
    k = rng.random()
    if k < 0.06:  # wrong token, unknown or non-pushing vendor: 404 alike
        which = rng.randrange(4)
        if which == 0:
            token = "".join(rng.choices(string.ascii_letters + string.digits, k=rng.randrange(1, 40)))
        elif which == 1:
            vendor = rng.choice(["sparksender", "nosuch", "SKYCORE", "skycore%20", "..", "twilio0"])
        elif which == 2:
            token = token[:-1]
        else:
            token = ""
        return Postback("route or token", "POST", vendor, token, ctype, _bytes(doc))
    if k < 0.08:
        return Postback("method", rng.choice(["PUT", "DELETE", "PATCH"]), vendor, token, ctype,
                        _bytes(doc))
    if k < 0.11:
        return Postback("oversized", "POST", vendor, token, ctype,
                        _bytes(doc) + b" " * (max_body + rng.randrange(1, 5000)))
    if k < 0.15:
        return Postback("content type", "POST", vendor, token,
                        rng.choice(["text/html", "image/png", "application/octet-stream",
                                    "multipart/form-data; boundary=x", "text/csv"]), _bytes(doc))
    if k < 0.19:
        return Postback("query only", "GET", vendor, token, None, b"",
                        rng.choice(["x=1", "tracking-id=", "id=", "dlr_data=%00", "a=%ff%fe",
                                    "code=N202", "status=00&to=1"]))
    if vendor == "twilio":
        return _twilio_bad(rng, doc, token, signer)
    if isinstance(doc, bytes):
        kind, body = _xml_bad(rng, doc)
    elif vendor == "engagespark" and rng.random() < 0.15:
        kind, body = "form without id", b"deliveredToPhone=confirmed&done=true&x=%ff"
        ctype = "application/x-www-form-urlencoded"
    else:
        kind, body = _mutate(rng, vendor, doc)
    return Postback(kind, "POST", vendor, token, ctype, body)


def _bytes(doc: dict | bytes) -> bytes:
    return doc if isinstance(doc, bytes) else orjson.dumps(doc)


BEFORE_PARSING = ("route or token", "method", "oversized", "content type")  # refused unread


def parses(p: Postback) -> bool:
    """Would the vendor's adapter read it (then it is not surely refused: dropped)?"""
    if p.kind in BEFORE_PARSING or p.vendor not in PUSHERS:
        return False
    if p.vendor == "twilio" and not p.signed:  # refused before it is read
        return False
    raw = core.RawPostback(p.vendor, p.method, p.content_type or "", p.query, p.body, None,
                           datetime.now(timezone.utc))
    try:
        core.parse(raw)
        return True
    except (ParseError, KeyError, ValueError):
        return False
