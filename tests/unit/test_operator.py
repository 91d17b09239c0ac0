"""The operator a vendor reports travels on the Observation (issue #14). Of the four vendors'
documented formats only Skycore names one (postbacks: operator-name / operator-id; v1 XML: SPID);
the others' observations carry none."""
from __future__ import annotations

import orjson

from tests.unit.fixtures import NOW, raw
from tracker.adapters import skycore as sc
from tracker.adapters.base import Observation, cleaned, unstorable
from tracker.core.states import State


def test_v2_postback_names_the_operator():
    [o] = sc.parse_postback("POST", "application/json", {}, raw("skycore", "postback_v2.json"), NOW)
    assert o.operator == "AT&T"


def test_v1_xml_postback_gives_the_operator_id():
    [o] = sc.parse_postback("POST", "text/xml", {}, raw("skycore", "postback_v1.xml"), NOW)
    assert o.operator == "0001470"


def _postback(**fields) -> Observation:
    body = {"code": "N202", "status": "Delivered", "tracking-id": "t-1", "to": "15550100", **fields}
    [o] = sc.parse_postback("POST", "application/json", {}, orjson.dumps(body), NOW)
    return o


def test_name_before_id_spaces_folded_and_length_bounded():
    assert _postback(**{"operator-id": "0001470", "operator-name": "  Verizon\n Wireless "}).operator == \
        "Verizon Wireless"
    assert _postback(**{"operator-id": 1470}).operator == "1470"
    assert len(_postback(**{"operator-name": "x" * 10_000}).operator) == sc.MAX_OPERATOR_LEN


def test_no_operator_or_an_unusable_one_is_none():
    assert _postback().operator is None
    assert _postback(**{"operator-name": "", "operator-id": "  "}).operator is None
    assert _postback(**{"operator-name": {"nested": 1}, "operator-id": [1]}).operator is None
    assert _postback(**{"operator-name": True}).operator is None


def test_an_operator_postgresql_cannot_store_is_caught_and_cleaned():
    o = Observation(vendor="skycore", vendor_ref="t-1", recipient=None, state=State.sent, code="N201", operator="AT\x00T")
    assert unstorable(o) is not None
    assert cleaned(o).operator == "AT\ufffdT" and unstorable(cleaned(o)) is None


def test_operator_is_the_last_field_and_optional():
    o = Observation(vendor="skycore", vendor_ref="t-1", recipient=None, state=State.sent, code="N201")
    assert o.operator is None
    assert Observation.__dataclass_fields__["operator"].default is None
    assert list(Observation.__dataclass_fields__)[-4:] == ["operator", "settled", "scheduled_for", "unknown_id"]
