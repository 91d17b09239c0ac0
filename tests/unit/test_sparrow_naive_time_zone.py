"""Sparrow writes DLR and report times without an offset ("ts": "2023-01-23 14:31:30") and does
not say in which zone: the setting `naive_time_zone` (a UTC offset, or UTC; default +05:45, Nepal
time) says. The parsers are given no configuration: `configured(cfg)` (the contract's Configured,
taken through adapters.for_config) binds them to it; check-config refuses a value not in use."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pytest

from tests.unit.fixtures import NOW, check_sparrow, ok
from tracker import adapters
from tracker.adapters import sparrow as sp
from tracker.adapters import sparrow_payloads as payloads
from tracker.adapters.base import MessageRef, NotConfigured, ParseError
from tracker.config_types import VendorConfig
from tracker.core.states import State
from tracker.postbacks import core
from tracker.sandbox import sparrow_settings as fake

BATCH = "5c32728e-340f-43b6-898d-d2b24e8e1426"
TS = "2023-01-23 14:31:30"
NAIVE = datetime(2023, 1, 23, 14, 31, 30)
NPT = timezone(timedelta(hours=5, minutes=45))
DLR = orjson.dumps({"dlr_type": "instant", "dlr_data": [{"ts": TS, "to": "9779801234567", "id": BATCH,
                                                          "status": "00"}]})


def cfg(**settings: str) -> VendorConfig:
    return VendorConfig.from_keys("sparrow", api_token="a", partner_token="p", **settings)


def zone(text: str) -> timezone:
    sign = -1 if text.startswith("-") else 1
    return timezone(sign * timedelta(hours=int(text[1:3]), minutes=int(text[4:6])))


def postback_time(adapter) -> datetime:
    [o] = adapter.parse_postback("POST", "application/json", {}, DLR, NOW)
    return o.event_at


def report(**records) -> bytes:
    return orjson.dumps({"data": {"uuid": BATCH, "records": records}, "meta": {}, "result": "00", "status": "OK"})


@pytest.mark.parametrize(("value", "tz"), [
    (None, NPT), ("+05:45", NPT), ("+00:00", timezone.utc), ("UTC", timezone.utc), (" utc ", timezone.utc),
    ("-03:30", zone("-03:30")), ("+14:00", zone("+14:00")), ("-12:00", zone("-12:00")), ("+08:45", zone("+08:45"))])
def test_every_parser_reads_naive_times_in_the_configured_zone(value, tz):
    adapter = adapters.for_config("sparrow", cfg(**({"naive_time_zone": value} if value else {})))
    want = NAIVE.replace(tzinfo=tz)
    assert postback_time(adapter) == want
    done = orjson.dumps({"dlr_type": "batch_complete", "dlr_data": {"uuid": BATCH, "rejected_numbers": [
        {"to": "9779801234567", "ts": TS}]}})
    assert [o.event_at for o in adapter.parse_postback("POST", "application/json", {}, done, NOW)] == [want]
    refs = [MessageRef(BATCH, "9779801234567"), MessageRef(BATCH, "9779801234568")]
    result = adapter.parse_status([ok(report(delivered=[{"to": "9779801234567", "ts": TS}])),
                                   ok(report(expired=[{"to": "9779801234568", "ts": TS}]))], refs, NOW)
    assert [(o.state, o.event_at) for o in result.observations] == [(State.delivered, want), (State.expired, want)]
    login = adapter.parse_login(ok({"data": {"token": "t", "expires_on": "2030-01-01 05:45:00"}, "result": "00"}), NOW)
    assert login.expires_on == datetime(2030, 1, 1, 5, 45, tzinfo=tz)


def test_the_setting_moves_the_instant_and_a_written_offset_is_kept():
    utc = postback_time(sp.configured(cfg(naive_time_zone="+00:00")))
    assert postback_time(sp) - utc == -timedelta(hours=5, minutes=45)  # the module: Nepal time
    assert postback_time(sp.configured(cfg())) == postback_time(sp)  # the default: the same
    with_offset = DLR.replace(TS.encode(), b"2023-01-23T14:31:30+01:00")
    for adapter in (sp, sp.configured(cfg(naive_time_zone="-12:00"))):
        [o] = adapter.parse_postback("POST", "application/json", {}, with_offset, NOW)
        assert o.event_at == NAIVE.replace(tzinfo=zone("+01:00"))


@pytest.mark.parametrize("value", ["+05:46", "Asia/Kathmandu", "+15:00", "5:45", "+0545", "Z", "GMT", 545])
def test_a_zone_that_cannot_be_honoured_is_not_configured(value):
    with pytest.raises(NotConfigured, match="naive_time_zone"):
        sp.configured(cfg(naive_time_zone=value))
    with pytest.raises(NotConfigured, match="naive_time_zone"):
        adapters.for_config("sparrow", cfg(naive_time_zone=value))


def test_the_setting_is_declared_and_every_choice_is_its_offset():
    s = sp.SETTINGS["naive_time_zone"]
    assert not (s.secret or s.url) and "+05:45" in s.about and "confirm with the vendor" in s.about
    assert s.choices == payloads.NAIVE_TIME_ZONES and s.choices[-1] == "UTC"
    for text in s.choices[:-1]:
        assert payloads.naive_zone(cfg(naive_time_zone=text)).utcoffset(None) == zone(text).utcoffset(None)
        assert fake.naive_zone({"naive_time_zone": text}).utcoffset(None) == zone(text).utcoffset(None)
    assert fake.naive_zone({}) == NPT and fake.naive_zone({"naive_time_zone": "UTC"}) == timezone.utc
    with pytest.raises(ValueError):
        fake.naive_zone({"naive_time_zone": "Asia/Kathmandu"})


def test_check_config_refuses_a_zone_not_in_use(tmp_path):
    code, lines = check_sparrow(tmp_path, 'naive_time_zone = "Asia/Kathmandu"')
    assert code == 2 and "vendors.sparrow.naive_time_zone: expected one of -12:00, " in lines[1]
    assert lines[1].endswith(", +14:00, UTC, got 'Asia/Kathmandu'")
    for good in ("+00:00", "UTC", "utc", "-03:30", "+05:45"):
        assert check_sparrow(tmp_path, f'naive_time_zone = "{good}"')[0] == 0, good


def test_a_postback_is_parsed_with_its_vendors_configuration():
    raw = core.RawPostback("sparrow", "POST", "application/json", "", DLR, None, NOW)
    [o] = core.parse(raw, cfg(naive_time_zone="+00:00"))
    assert o.event_at == NAIVE.replace(tzinfo=timezone.utc)
    assert [o.event_at for o in core.parse(raw)] == [NAIVE.replace(tzinfo=NPT)]  # no configuration
    assert [o.event_at for o in core.parse(raw, cfg())] == [NAIVE.replace(tzinfo=NPT)]
    with pytest.raises(ParseError, match="sparrow postback: not configured: .*naive_time_zone"):
        core.parse(raw, cfg(naive_time_zone="+05:46"))
