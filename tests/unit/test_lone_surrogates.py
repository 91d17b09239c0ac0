"""A lone surrogate escape in a vendor's JSON ("\\ud83c": a JavaScript text cut inside an emoji) is
JSON that orjson refuses whole: the body is read all the same, and what it says stored with the
surrogate replaced. A poll answer holding one was malformed at every poll (its message never got
its state); a postback holding one was answered 400, every report in it lost."""
from __future__ import annotations

import orjson
import pytest

from tracker.adapters.base import ParseError, load_json
from tracker.adapters.datatypes import Observation
from tracker.core.states import State
from tracker.poller.outcomes import storable


def test_a_body_with_a_lone_surrogate_escape_is_read():
    assert load_json(b'{"message": "Happy birthday \\ud83c", "ok": [1, 2.5]}', "t") == {
        "message": "Happy birthday \ud83c", "ok": [1, 2.5]}
    assert load_json(b'{"pair": "\\ud83c\\udf89"}', "t") == {"pair": "\U0001f389"}  # orjson's own


@pytest.mark.parametrize("body", [b'{"a": NaN, "m": "\\ud83c"}', b'{"m": "\\ud83c"', b'{"m": "\\udc00" x}'])
def test_what_is_no_json_otherwise_is_still_refused(body):
    with pytest.raises(ParseError, match="body is not valid JSON"):
        load_json(body, "t")


def test_what_it_says_is_stored_with_the_surrogate_replaced():
    data = load_json(b'{"id": "m-1", "message": "Happy birthday \\ud83c", "\\udc00": "key"}', "t")
    o = Observation(vendor="engagespark", vendor_ref="m-1", recipient=None, state=State.delivered,
                    code="confirmed", text=data["message"], raw=data)
    [kept] = storable([o])
    assert kept.state == State.delivered and kept.text.startswith("Happy birthday ")
    orjson.dumps(kept.raw)  # storable as JSON: no surrogate left, keys included
    assert isinstance(kept.raw, dict) and kept.raw["id"] == "m-1"  # kept as data, not its text
    assert "\ud83c" not in kept.text


@pytest.mark.parametrize("escape,char", [("\\udc80", "\udc80"), ("\\uDFFF", "\udfff"), ("\\uDBFF", "\udbff")])
def test_a_lone_low_or_upper_case_surrogate_is_read_too(escape, char):
    # only a high one (\\ud8xx-\\udbxx) was tested: a body with a lone low one is as common
    # (a text cut after the first half of a pair, or a pair reversed)
    assert load_json(b'{"m": "x' + escape.encode() + b'y"}', "t") == {"m": f"x{char}y"}
