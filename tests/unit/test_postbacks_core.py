"""The pure part of postback ingestion: admission, parsing for storage, report keys."""
from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from tracker.adapters.base import Observation, ParseError
from tracker.config_types import VENDORS, Config, VendorConfig
from tracker.core.states import State
from tracker.postbacks import core

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def config(**changes) -> Config:
    vendors = {v: VendorConfig(**{"name": v, "postback_token": f"secret-{v}", **changes.get(v, {})})
               for v in VENDORS}
    return Config(vendors=vendors)


def skycore_raw(body: bytes, ctype="application/json", query="") -> core.RawPostback:
    return core.RawPostback("skycore", "POST", ctype, query, body, "127.0.0.1", NOW)


SKY = {"origin": "SMS_MT", "code": "N202", "status": "Delivered", "to": "10000000000",
       "tracking-id": "t-1", "timestamp": "2021-01-26T18:00:07.990498+00:00"}


def test_only_enabled_pushing_vendors_with_a_token_get_a_route():
    routes = core.routes_from(config(sparrow={"enabled": False}, engagespark={"postback_token": None}))
    assert set(routes) == {"skycore", "twilio"}  # sparksender never pushes


@pytest.mark.parametrize("vendor,token", [
    ("nosuch", "secret-nosuch"), ("sparksender", "secret-sparksender"), ("skycore", "wrong"),
    ("skycore", ""), ("skycore", "secret-skycore "), ("skycore", "secret-sparrow"),
])
def test_every_failure_to_authenticate_is_the_same_404(vendor, token):
    routes = core.routes_from(config())
    assert core.admit(routes, vendor, token, "127.0.0.1", "application/json") is core.NOT_FOUND


def test_right_token_and_content_types():
    routes = core.routes_from(config())
    assert core.admit(routes, "skycore", "secret-skycore", "127.0.0.1", "application/json") is None
    assert core.admit(routes, "skycore", "secret-skycore", "127.0.0.1", "text/xml; charset=utf-8") is None
    assert core.admit(routes, "skycore", "secret-skycore", "127.0.0.1", "") is None  # GET, no type
    assert core.admit(routes, "skycore", "secret-skycore", "127.0.0.1", "text/html") is core.UNSUPPORTED
    assert core.admit(routes, "sparrow", "secret-sparrow", "127.0.0.1", "text/xml") is core.UNSUPPORTED


def test_a_previous_token_is_accepted_beside_the_current_one_while_it_is_set():
    rotating = core.routes_from(config(skycore={"previous_postback_token": "old-skycore"}))
    for token in ("secret-skycore", "old-skycore"):
        assert core.admit(rotating, "skycore", token, "127.0.0.1", "application/json") is None
    assert core.admit(rotating, "skycore", "old-skycore-", "127.0.0.1", "") is core.NOT_FOUND
    assert core.admit(rotating, "twilio", "old-skycore", "127.0.0.1", "") is core.NOT_FOUND  # its own
    assert core.previous_token(rotating["skycore"], "old-skycore")
    assert not core.previous_token(rotating["skycore"], "secret-skycore")
    done = core.routes_from(config())  # the rotation over: the old token is a wrong one
    assert core.admit(done, "skycore", "old-skycore", "127.0.0.1", "") is core.NOT_FOUND
    assert not core.previous_token(done["skycore"], "old-skycore")


def test_a_previous_token_from_outside_the_allowed_networks_is_refused():
    routes = core.routes_from(config(skycore={"previous_postback_token": "old-skycore",
                                              "allow_networks": ("10.0.0.0/8",)}))
    assert core.admit(routes, "skycore", "old-skycore", "10.0.0.1", "") is None
    assert core.admit(routes, "skycore", "old-skycore", "127.0.0.1", "") is core.NOT_FOUND


def test_allow_networks():
    routes = core.routes_from(config(skycore={"allow_networks": ("10.0.0.0/8", "2001:db8::/32")}))
    ok = lambda remote: core.admit(routes, "skycore", "secret-skycore", remote, "")  # noqa: E731
    assert ok("10.1.2.3") is None
    assert ok("::ffff:10.1.2.3") is None  # IPv4-mapped on a dual-stack socket
    assert ok("2001:db8::5") is None
    # A refused source gets the same 404 as a wrong token: no hint what is configured.
    assert ok("127.0.0.1") is core.NOT_FOUND
    assert ok(None) is core.NOT_FOUND
    assert core.admit(routes, "skycore", "wrong", "127.0.0.1", "") is core.NOT_FOUND


def test_an_ipv4_mapped_network_allows_the_ipv4_sources_it_names():
    """As a dual-stack proxy writes addresses: passed by check-config, it matched nothing."""
    routes = core.routes_from(config(skycore={"allow_networks": ("::ffff:127.0.0.0/104",)}))
    for remote in ("127.0.0.5", "::ffff:127.0.0.5"):
        assert core.admit(routes, "skycore", "secret-skycore", remote, "") is None, remote
    assert core.admit(routes, "skycore", "secret-skycore", "128.0.0.1", "") is core.NOT_FOUND
    assert core.networks(["::ffff:0:0/95"])[0].version == 6  # wider than the mapped range: as given


TRUSTED = core.networks(["10.0.0.0/8", "fd00::/8"])


@pytest.mark.parametrize("peer, header, client", [
    ("10.0.0.5", "203.0.113.7", "203.0.113.7"),  # a trusted proxy says whom it forwards for
    ("10.0.0.5", "198.51.100.1, 203.0.113.7, 10.0.0.9", "203.0.113.7"),  # the nearest untrusted
    ("203.0.113.9", "10.1.1.1", "203.0.113.9"),  # anyone else's header is ignored
    ("10.0.0.5", None, "10.0.0.5"),
    ("10.0.0.5", "not an address", "10.0.0.5"),  # malformed: the peer
    ("10.0.0.5", "10.2.2.2, 10.3.3.3", "10.2.2.2"),  # only proxies: the first
    ("fd00::1", "2001:db8::1", "2001:db8::1"),
    ("::ffff:10.0.0.5", "203.0.113.7", "203.0.113.7"),  # IPv4-mapped peer
    # the client wrote 32 hops itself, the proxy appended the real address: the nearest counts
    ("10.0.0.5", ", ".join(["203.0.113.7"] * 32) + ", 198.51.100.66", "198.51.100.66"),
    ("10.0.0.5", ", ".join(["10.9.9.9"] * 33), "10.0.0.5"),  # more proxies than are read: the peer
    # a proxy that appends the port (Azure's): the address without it, never the proxy's own
    ("10.0.0.5", "203.0.113.9:5678", "203.0.113.9"),
    ("10.0.0.5", "[2001:db8::7]:443, 10.0.0.9:80", "2001:db8::7"),
    ("10.0.0.5", "[2001:db8::7]", "2001:db8::7"),
])
def test_the_client_address_comes_from_x_forwarded_for_only_behind_a_trusted_proxy(peer, header, client):
    assert core.client_address(peer, header, TRUSTED) == client
    assert core.client_address(peer, header, ()) == peer  # no trusted proxies: never the header


def test_a_report_whose_vendor_id_no_index_could_hold_is_refused_before_it_is_stored():
    long_ref = dict(SKY, **{"tracking-id": "中" * 3000})
    with pytest.raises(ParseError, match="vendor id is 3000 characters long"):
        core.parse(skycore_raw(orjson.dumps(long_ref)))


def test_parse_reads_through_the_adapter():
    [o] = core.parse(skycore_raw(orjson.dumps(SKY)))
    assert (o.vendor_ref, o.state) == ("t-1", State.delivered)
    with pytest.raises(ParseError):
        core.parse(skycore_raw(b"{not json"))


def test_nul_characters_in_a_reports_key_are_refused_before_answering():
    with pytest.raises(ParseError):
        core.parse(skycore_raw(orjson.dumps({**SKY, "tracking-id": "a\x00b"})))


@pytest.mark.parametrize("body,ctype", [
    (orjson.dumps({**SKY, "status-details": "Deliv\x00ered"}), "application/json"),
    (b"tracking-id=t-1&code=N202&status=Delivered&status-details=ok%00", "application/x-www-form-urlencoded"),
    (b'{"origin":"SMS_MT","code":"N202","status":"Delivered","to":"10000000001","tracking-id":"t-1",'
     b'"status-details":"Happy birthday \\ud83c"}', "application/json")])
def test_a_stray_nul_or_lone_surrogate_in_a_vendors_words_is_repaired_not_refused(body, ctype):
    # As the poller repairs them: a final state was answered 400 for a cosmetic character, and
    # a lone surrogate escape (a JavaScript text cut inside an emoji) made orjson refuse the
    # whole body, every report in it lost.
    [o] = core.parse(skycore_raw(body, ctype))
    assert (o.vendor_ref, o.state) == ("t-1", State.delivered)
    assert core.unstorable(o, "skycore") is None
    assert "\x00" not in orjson.dumps(o.raw).decode()


def test_a_code_too_long_to_index_is_cut_not_set_aside_after_a_200():
    # Sparrow's all-digit status was kept whole: 9,000 digits, answered 200, then refused by the
    # index of unmapped codes and set aside.
    body = orjson.dumps({"dlr_type": "instant", "dlr_data": [{"id": "b-1", "to": "9779800000001",
                                                          "status": "7" * 9000}]})
    [o] = core.parse(core.RawPostback("sparrow", "POST", "application/json", "", body, None,
                                      datetime.now(timezone.utc)))
    assert len(o.code) <= 100 and core.unstorable(o, "sparrow") is None


def test_time_out_of_range_is_refused():
    late = datetime(9999, 12, 31, 23, 59, tzinfo=timezone(-timedelta(hours=5)))  # past year 9999 in UTC
    o = Observation(vendor="skycore", vendor_ref="t", recipient=None, state=State.sent, code="N201", event_at=late)
    assert core.unstorable(o, "skycore") == "time out of range"


def test_report_key_tells_reports_apart_but_not_their_raw_fragment_or_time_zone():
    [o] = core.parse(skycore_raw(orjson.dumps(SKY)))
    key = core.report_key
    assert key(o) == key(dataclasses.replace(o, raw={"other": 1}))
    assert key(o) == key(dataclasses.replace(o, event_at=o.event_at.astimezone(timezone(timedelta(hours=5)))))
    assert key(o) != key(dataclasses.replace(o, state=State.sent))
    assert key(o) != key(dataclasses.replace(o, state=None))
    stored = {"vendor": "skycore", "vendor_ref": "t-1", "recipient_key": "", "state": "delivered",
              "code": "N202", "text": "Delivered", "event_at": o.event_at, "failure_code": None,
              "failure_reason": None, "failure_permanent": None}
    assert core.stored_report_key(stored) == key(o)


def test_query_string_is_read_the_same_way_at_ingestion_and_replay():
    assert core.query_dict("a=1&b=&c=x%20y") == {"a": "1", "b": "", "c": "x y"}


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+00:00", "9999-12-31T23:59:59-14:00",
                                  "0001-01-01T00:00:00+05:00", "infinity"])
def test_a_vendor_time_out_of_range_keeps_the_report_at_the_receive_time(when):
    [o] = core.parse(skycore_raw(orjson.dumps(dict(SKY, timestamp=when))))
    assert o.state is State.delivered
    assert o.event_at is None or o.event_at.year == 1  # stored as given, or left to the receive time


def test_content_types_are_each_vendors_own():
    from tracker import adapters
    routes = core.routes_from(config())
    for name, route in routes.items():
        assert route.content_types == adapters.get(name).POSTBACK_CONTENT_TYPES


def test_a_vendor_that_signs_is_authenticated_once_the_body_is_read():
    from tracker.adapters.base import PostbackRequest
    req = PostbackRequest("POST", "https://x.example/postbacks/v/t", {"X-Signature": "s"}, b"a=1")
    plain = core.Route("v", b"", (), frozenset())
    assert core.authenticate(plain, req) == (None, False)  # signs nothing: nothing to check
    by = {"s": "auth_token", "old": "previous_auth_token"}
    signed = dataclasses.replace(plain, verify=lambda r: by.get(r.headers.get("X-Signature")))
    assert core.authenticate(signed, req) == (None, False)
    # verified by the secret being rotated out: admitted, and said so (counted by the route)
    assert core.authenticate(signed, dataclasses.replace(req, headers={"X-Signature": "old"})) == (None, True)
    assert core.authenticate(signed, dataclasses.replace(req, headers={})) == (core.BAD_SIGNATURE, False)

    def trips(r):
        raise KeyError("a verifier that trips")

    assert core.authenticate(dataclasses.replace(plain, verify=trips), req) == (core.BAD_SIGNATURE, False)


@pytest.mark.parametrize("lines, refused", [
    ((), False), (("",), False), (("identity",), False), ((" Identity ",), False),
    (("identity", "identity"), False),
    (("gzip",), True), (("deflate",), True), (("br",), True), (("gzip, identity",), True),
    (("identity", "gzip"), True), (("gzip", "identity"), True),  # a second line: aiohttp inflates by it
])
def test_a_compressed_body_is_refused(lines, refused):
    # aiohttp inflates it, and then the body no longer has its Content-Length: read short
    assert (core.encoding_refused(lines) is core.ENCODED) is refused


def test_a_failures_reason_is_cut_so_that_no_event_carries_a_vendors_60_kb():
    # The reason goes into every event of the message: 60 KB of status details made 60 KB
    # webhook bodies and NATS messages, past a receiver's body limit (dead-lettered there).
    body = orjson.dumps({**SKY, "code": "E201", "status": "Failed", "status-details": "why " * 15000})
    [o] = core.parse(skycore_raw(body))
    assert o.state is not None and o.state.is_failure
    assert len(o.failure.reason) == 1000 and o.failure.reason.startswith("Failed (why why")
    assert core.unstorable(o, "skycore") is None
    assert len(o.raw["status-details"]) == 60000  # the vendor's words kept whole in the report


def test_a_failures_code_too_long_to_index_is_cut_too():
    # the observation's code was tested; its failure's (the same code, stored in the message's
    # and the event's failure_code) was not: kept whole, it was refused by the index after a 200
    from tracker.adapters.base import Failure
    from tracker.adapters.storable import repaired
    o = Observation(vendor="sparrow", vendor_ref="b-1", recipient="9779800000001", state=State.failed,
                    code="7" * 100, failure=Failure("9" * 9000, "why", None))
    fixed, problem = repaired(o)
    assert problem is None and fixed.failure.code == "9" * 100
