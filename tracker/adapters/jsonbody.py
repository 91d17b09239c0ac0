"""A vendor's JSON, read (tracker.adapters.base re-exports these): bytes or text to a value, or
a ParseError naming only what was read, never its contents."""
from __future__ import annotations

import json
import re
from typing import Any

import orjson

from tracker.adapters.datatypes import HttpResponse, ParseError


def load_json(body: Any, what: str) -> Any:
    """Decode a JSON body (bytes or str); ParseError, naming only `what`, if it is not JSON."""
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogatepass")
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise ParseError(f"{what}: body is not bytes")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        if _LONE_SURROGATE.search(body):
            # JSON with a lone surrogate escape ("\ud83c": a JavaScript vendor's text cut inside
            # an emoji) is JSON, which orjson refuses whole: the body is read by json, and the
            # surrogate replaced where it is stored (storable.cleaned). Every report in it was lost.
            try:
                return json.loads(bytes(body), parse_constant=_no_constant)
            except ValueError:
                pass
        raise ParseError(f"{what}: body is not valid JSON") from None


_LONE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity: orjson refuses them too


def json_value(value: Any, what: str) -> Any:
    """A send response or request as the intake holds it (decoded jsonb, raw bytes/str, or an
    HttpResponse) as a decoded JSON value."""
    if isinstance(value, HttpResponse):
        return load_json(value.body, what)
    if isinstance(value, (bytes, bytearray, memoryview, str)):
        return load_json(value, what)
    return value


def json_object(value: Any, what: str, noun: str = "body") -> dict:
    """`value` read as json_value reads it, which must be a JSON object; ParseError otherwise."""
    body = json_value(value, what)
    if not isinstance(body, dict):
        raise ParseError(f"{what}: {noun} is not a JSON object")
    return body
