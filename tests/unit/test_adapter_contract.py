"""What every adapter promises: the declared contract (tracker.adapters.contract) kept by every
registered vendor module, the registry, one reading of HTTP statuses, only ParseError escapes a
parser, no secret in anything it returns or raises (the HttpRequest it builds excepted), the
base helpers."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.fixtures import FUZZ, NOW, content_types, headers, json_values, methods, ok, queries, statuses
from tracker import adapters
from tracker.adapters import base, contract
from tracker.adapters.base import HttpResponse, MessageRef, ParseError
from tracker.config_types import VendorConfig

SECRETS = {"api_key": "SECRET-api-key-1", "api_token": "SECRET-api-token-2",
           "partner_token": "SECRET-partner-3", "postback_token": "SECRET-postback-4"}
# Settings that take one of a few values (Sparrow's report call): a valid one.
CHOICES = {("sparrow", "report_path"): "delivered", ("sparrow", "report_method"): "POST",
           ("sparrow", "report_prefix"): "campaign", ("sparrow", "naive_time_zone"): "+00:00"}
# Every vendor configured, its own settings too (a secret one holds a SECRET- value).
CFGS = {name: VendorConfig(name=name, base_url=f"http://127.0.0.1:1/{name}", user_id="u1", org_id="42", **SECRETS,
                           settings={k: f"SECRET-{name}-{k}" if s.secret else
                                     CHOICES.get((name, k), f"https://{k}.example")
                                     for k, s in m.SETTINGS.items()})
        for name, m in adapters.ADAPTERS.items()}
TOKEN = "SECRET-jwt-5"


def test_registry():
    assert adapters.VENDORS[:4] == ("sparksender", "engagespark", "skycore", "sparrow")
    assert adapters.VENDORS == adapters.REGISTERED == tuple(adapters.ADAPTERS)
    for name, module in adapters.ADAPTERS.items():
        assert adapters.get(name) is module and module.NAME == name
    with pytest.raises(KeyError, match="unknown vendor 'nosuch'; known vendors: engagespark, "):
        adapters.get("nosuch")
    # each vendor's facts come from its own module, gathered here
    from tracker.config_types import VENDORS
    from tracker.core.reduce import recipient_key
    assert VENDORS == adapters.VENDORS
    assert adapters.KEYED_BY_RECIPIENT == {n for n, m in adapters.ADAPTERS.items() if m.KEYED_BY_RECIPIENT}
    assert recipient_key("sparrow", "977") == "977" and recipient_key("sparksender", "977") == ""


@pytest.mark.parametrize("name", adapters.VENDORS)
def test_every_vendor_module_keeps_the_declared_contract(name):
    module = adapters.get(name)
    assert contract.drift(module) == []
    assert isinstance(module, contract.Adapter)
    assert module.PUSHES == bool(module.POSTBACK_CONTENT_TYPES)  # a pusher says what it sends


def test_the_abilities_of_the_four_first_vendors():
    have = {n: {a.__name__ for a in contract.abilities(adapters.get(n))} for n in adapters.VENDORS[:4]}
    assert have == {"sparksender": set(), "engagespark": {"ListsMessages"}, "skycore": set(),
                    "sparrow": {"LogsIn", "PollsInBatches", "Configured"}}
    flags = {n: (m.POLLS, m.PUSHES, m.KEYED_BY_RECIPIENT) for n, m in adapters.ADAPTERS.items()}
    assert [flags[n] for n in adapters.VENDORS[:4]] == [
        (True, False, False), (True, True, False), (False, True, False), (True, True, True)]


def test_drift_is_caught():
    """A module that departs from the contract in any way is named with what is wrong."""
    import types

    def drifted(base=adapters.sparrow, **changes):
        m = types.ModuleType("drifted")
        m.__dict__.update({k: getattr(base, k) for k in dir(base) if not k.startswith("__")})
        m.__dict__.update(changes)
        for k, v in list(changes.items()):
            if v is None:
                delattr(m, k)
        return m

    assert contract.drift(drifted()) == []
    assert contract.drift(drifted(parse_send=None)) == ["Adapter.parse_send: missing"]
    assert contract.drift(drifted(POLLS="yes")) == ["Adapter.POLLS: expected <class 'bool'>, got str"]
    assert contract.drift(drifted(parse_status=lambda responses, refs: None)) == [
        "Adapter.parse_status: parameters (responses, refs) differ from the contract's "
        "(responses, refs, now)"]
    assert contract.drift(drifted(parse_login=None)) == ["LogsIn.parse_login: missing"]  # half an ability
    es = adapters.engagespark
    assert contract.drift(drifted(es, list_request=lambda cfg, after=None, page=None, size=1: None)) == [
        "ListsMessages.list_request: parameters (cfg, after=…, page=…, size=…) differ from the "
        "contract's (cfg, *, after=…, page=…, size=…)"]
    assert contract.drift(drifted(es, LIST_MAX_SIZE=None)) == ["ListsMessages.LIST_MAX_SIZE: missing"]
    assert contract.drift(drifted(batch_of=None)) == []  # an ability left out whole: not claimed
    assert contract.drift(drifted(configured=lambda: None)) == [
        "Configured.configured: parameters () differ from the contract's (cfg)"]
    assert contract.drift(drifted(configured=None)) == []  # not Configured: parsed as the module


@pytest.mark.parametrize("name", adapters.VENDORS)
def test_a_configured_adapter_keeps_the_contract_and_the_registry_gives_it(name):
    """for_config: a Configured vendor bound to its settings (an object with the module's
    contract, its parsers reading them), any other vendor (or no configuration) the module."""
    module = adapters.get(name)
    assert adapters.for_config(name, None) is module
    if not isinstance(module, contract.Configured):
        assert adapters.for_config(name, CFGS[name]) is module
        return
    for cfg in (CFGS[name], VendorConfig(name)):
        adapter = adapters.for_config(name, cfg)
        assert adapter is not module and contract.drift(adapter) == []
        assert isinstance(adapter, contract.Adapter)
        # its abilities but Configured (bound once), the same constants and requests
        assert contract.abilities(adapter) == [a for a in contract.abilities(module) if a is not contract.Configured]
        assert (adapter.NAME, adapter.SETTINGS, adapter.status_requests) == (name, module.SETTINGS, module.status_requests)
    with pytest.raises(TypeError, match="not names of the contract: parse_thing"):
        contract.bound(module, parse_thing=lambda: None)


@FUZZ
@given(vendor=st.sampled_from([n for n, m in adapters.ADAPTERS.items() if isinstance(m, contract.Configured)]),
       status=statuses, hdrs=headers, body=st.binary(max_size=120) | json_values.map(lambda v: __import__("orjson").dumps(v)))
def test_only_parse_error_escapes_a_configured_adapters_parsers(vendor, status, hdrs, body):
    for call in _calls(adapters.for_config(vendor, CFGS[vendor])):
        try:
            call(HttpResponse(status, hdrs, body))
        except ParseError:
            pass


@pytest.mark.parametrize("name", [n for n in adapters.VENDORS if adapters.get(n).POLLS])
def test_every_polled_vendor_reads_http_statuses_alike(name):
    """2xx read; 408/425/429/5xx transient with Retry-After; 401/403 account errors."""
    m = adapters.get(name)
    refs = [MessageRef("5c32728e-340f-43b6-898d-d2b24e8e1426", "9771")]
    n = len(m.status_requests(CFGS[name], refs, token=TOKEN))

    def status(code, hdrs=None):
        return m.parse_status([ok(b"{}", code, hdrs or {})] * n, refs, NOW)

    for code in (408, 425, 429, 500, 502, 503, 504):
        r = status(code, {"Retry-After": "7"})
        assert (r.transient_error, r.retry_after_s, r.account_error) == (f"HTTP {code}", 7.0, None)
        assert r.observations == []
    for code in (401, 403):
        r = status(code)
        assert r.account_error.code == f"http_{code}" and r.transient_error is None
        assert r.observations == []


def test_classify_http():
    r = base.StatusResult()
    assert base.classify_http(ok(b"", 204), NOW, r) == base.READ and r == base.StatusResult()
    assert base.classify_http(ok(b"", 404), NOW, r, lookup=(404,)) == base.LOOKUP
    assert base.classify_http(ok(b"", 402), NOW, r, account={402: "no funds"}) == base.NOTED
    assert r.account_error == base.AccountError("http_402", "no funds")
    base.classify_http(ok(b"", 403), NOW, r)
    assert r.account_error.code == "http_402"  # the first stays
    r = base.StatusResult()
    base.classify_http(ok(b"", 503, {"Retry-After": "3"}), NOW, r)
    base.classify_http(ok(b"", 429, {"Retry-After": "9"}), NOW, r)
    base.classify_http(ok(b"", 418), NOW, r)
    assert (r.transient_error, r.retry_after_s) == ("HTTP 503", 9.0)  # the longest wait
    login = base.LoginResult()
    base.classify_http(ok(b"", 401), NOW, login, reason=lambda resp: "bad key")
    assert login.account_error == base.AccountError("http_401", "bad key")


def test_observation_is_built_with_keywords_only():
    with pytest.raises(TypeError):
        base.Observation("sparksender", "1", None, None, "2")


def _answers(m) -> int:
    """How many answers one message's status takes (Sparrow: a pair), at least one."""
    ref = MessageRef("5c32728e-340f-43b6-898d-d2b24e8e1426", "9771")
    return len(m.status_requests(CFGS[m.NAME], [ref], token=TOKEN)) or 1


def _calls(m):
    """Every parser of a module, called with one set of (possibly garbage) inputs."""
    def status(resp):
        n = _answers(m)
        return m.parse_status([resp] * n, [MessageRef("5c32728e-340f-43b6-898d-d2b24e8e1426", "9771")], NOW)
    calls = [status,
             lambda resp: m.parse_postback("POST", "application/json", {}, resp.body, NOW),
             lambda resp: m.parse_send(resp, None, NOW),
             lambda resp: m.parse_send(resp.body, {"session": {"recipients": ["1"]}, "messages": [{"to": "1"}]}, NOW)]
    if isinstance(m, contract.LogsIn):
        calls.append(lambda resp: m.parse_login(resp, NOW))
    if isinstance(m, contract.ListsMessages):
        calls.append(lambda resp: m.parse_list(resp, NOW))
    return calls


@FUZZ
@given(vendor=st.sampled_from(list(adapters.ADAPTERS)), status=statuses, hdrs=headers,
       body=st.binary(max_size=120) | json_values.map(lambda v: __import__("orjson").dumps(v)))
def test_only_parse_error_escapes_the_public_parsers(vendor, status, hdrs, body):
    for call in _calls(adapters.get(vendor)):
        try:
            call(HttpResponse(status, hdrs, body))
        except ParseError:
            pass


@FUZZ
@given(vendor=st.sampled_from(list(adapters.ADAPTERS)), method=methods, ctype=content_types, query=queries,
       body=st.binary(max_size=120))
def test_only_parse_error_escapes_postbacks(vendor, method, ctype, query, body):
    try:
        adapters.get(vendor).parse_postback(method, ctype, query, body, NOW)
    except ParseError:
        pass


def test_guard_turns_anything_into_a_parse_error_without_values():
    @base.guarded("demo")
    def boom(x):
        raise KeyError(x)
    with pytest.raises(ParseError) as e:
        boom("SECRET-in-payload")
    assert "SECRET" not in str(e.value) and "demo" in str(e.value) and e.value.__cause__ is None
    assert boom.__wrapped__ is not None


# --- secrets --------------------------------------------------------------------------------------


def _requests():
    reqs = []
    for name, m in adapters.ADAPTERS.items():
        reqs += m.status_requests(CFGS[name], [MessageRef("5c32728e-340f-43b6-898d-d2b24e8e1426", "9771")], token=TOKEN)
    for name, m in adapters.ADAPTERS.items():
        if isinstance(m, contract.LogsIn):
            reqs.append(m.login_request(CFGS[name]))
        if isinstance(m, contract.ListsMessages):
            reqs.append(m.list_request(CFGS[name], after=NOW, page=1, size=10))
    return reqs


def test_requests_carry_the_credentials_they_need():
    text = repr(_requests())
    for secret in ("SECRET-api-key-1", "SECRET-api-token-2", "SECRET-partner-3", TOKEN):
        assert secret in text  # the HttpRequest itself carries them (and must never be logged whole)
    assert "SECRET-postback-4" not in text


def _everything_else():
    """Results and errors from every parser, fed bodies and requests that contain every secret."""
    leaky = {k: v for k, v in SECRETS.items()} | {"token": TOKEN}
    spark_request = {"user_id": "u1", "api_key": SECRETS["api_key"], "recipient_contact_no": "94711111111"}
    out = []
    cases = [
        (adapters.sparksender, {"status_code": 204, "msg_id": "1"}, spark_request),
        (adapters.sparksender, {"status_code": 202}, spark_request),
        (adapters.sparksender, b"not json " + SECRETS["api_key"].encode(), spark_request),
        (adapters.sparksender, {"status_code": 204, "msg_id": "1"},
         f"https://cp/api/send/?api_key={SECRETS['api_key']}&recipient_contact_no=947"),
        (adapters.engagespark, {"error": "Invalid Token"}, {"to": "1", "apiKey": SECRETS["api_key"]}),
        (adapters.engagespark, {"messageId": "SMS1", "to": "1"}, None),
        (adapters.skycore, {"status": "Failure", "error-code": "E103", "error-info": "bad key"},
         {"to": "1", "x-api-key": SECRETS["api_key"]}),
        (adapters.sparrow, {"result": "00", "data": {"batch_id": "b"}}, {"session": {"recipients": ["1"]}, **leaky}),
        (adapters.sparrow, {"result": "00", "data": {}}, {"session": {"recipients": ["1"]}, **leaky}),
    ]
    for m, response, request in cases:
        try:
            out.append(m.parse_send(response, request, NOW))
        except ParseError as e:
            out.append(str(e))
    for name, m in adapters.ADAPTERS.items():
        for status in (200, 401, 402, 404, 429, 500):
            n = _answers(m)
            try:
                out.append(m.parse_status([ok(b"{}", status)] * n, [MessageRef("b", "1")], NOW))
            except ParseError as e:
                out.append(str(e))
    for body in ({"data": {"token": 5}, "result": "00"}, {"data": {"errors": "Invalid API Token"}, "result": "11"}):
        try:
            out.append(adapters.sparrow.parse_login(ok(body, 200), NOW))
        except ParseError as e:
            out.append(str(e))
    try:
        adapters.sparrow.parse_login(ok(b'{"data": {"token": "' + TOKEN.encode() + b'", "expires_on": 7}, "result": "11"', 200), NOW)
    except ParseError as e:
        out.append(str(e))
    return out


def test_no_secret_in_results_or_errors():
    text = repr(_everything_else())
    for secret in (*SECRETS.values(), TOKEN):
        assert secret not in text


def test_parse_errors_for_config_problems_name_no_secret():
    with pytest.raises(base.NotConfigured) as e:
        adapters.sparksender.status_requests(VendorConfig("sparksender", api_key=SECRETS["api_key"]), [MessageRef("1")])
    assert SECRETS["api_key"] not in str(e.value)


# --- base helpers -------------------------------------------------------------------------------


def test_parse_time():
    npt = timezone(timedelta(hours=5, minutes=45))
    assert base.parse_time("2019-07-02T05:21:54.837208837Z") == datetime(2019, 7, 2, 5, 21, 54, 837208,
                                                                         tzinfo=timezone.utc)
    assert base.parse_time("2023-01-23 14:31:30", npt) == datetime(2023, 1, 23, 14, 31, 30, tzinfo=npt)
    assert base.parse_time("2023-01-23 14:31:30").tzinfo == timezone.utc
    for bad in (None, 5, "", "yesterday", "2023-13-45 99:00:00", "x" * 100):
        assert base.parse_time(bad) is None


def test_parse_time_out_of_range():
    # Edge times that UTC can hold are returned (the caller clamps them); those it cannot hold
    # would overflow in whoever compares or stores them: unreadable, None.
    assert base.parse_time("9999-12-31T23:59:59Z") == datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc)
    assert base.parse_time("0001-01-01T00:00:00Z") == datetime(1, 1, 1, tzinfo=timezone.utc)
    for bad in ("9999-12-31T10:00:00-14:00", "0001-01-01T00:00:00+05:00", "infinity", "-infinity",
                "0000-01-01T00:00:00Z", "10000-01-01T00:00:00Z"):
        assert base.parse_time(bad) is None
    assert base.parse_time("0001-01-01 00:00:00", timezone(timedelta(hours=5, minutes=45))) is None


def test_digits_id_text_and_limits():
    assert base.digits("+1 (555) 010-2030") == "15550102030" and base.digits(9771) == "9771"
    assert base.digits("\x00") == "" and base.digits("9" * 100_000) == "9" * 100_000
    with pytest.raises(ParseError):
        base.digits(10 ** 5000)  # Python would refuse its text; a phone number it is not
    # '²' and '①' are digits to str.isdigit() but not to int(): intake once stopped on them
    assert base.digits("+4² 7700 900123 ①") == "47700900123"
    assert base.digits("+٩٧٧ ９８０") == "977980"  # decimal digits of any script, as ASCII


@given(st.text(max_size=40) | st.integers(min_value=-10**30, max_value=10**30))
def test_digits_are_ascii_digits_that_int_reads(value):
    text = base.digits(value)
    assert text == "" or (text.isascii() and text.isdigit() and int(text) >= 0)
    assert len(text) <= len(str(value))
    assert [base.id_text(v) for v in ("007", 14364, True, 1.5, None, [], 10 ** 400)] == \
        ["007", "14364", None, None, None, None, None]
    assert base.as_code(10 ** 5000) is None
    assert (base.MAX_REF_LEN, base.MAX_RECIPIENT_LEN, base.MAX_CLIENT_REF_LEN) == (200, 32, 500)


def test_retry_after():
    assert base.retry_after({"retry-after": " 30 "}, NOW) == 30.0
    assert base.retry_after({"Retry-After": "-5"}, NOW) == 0.0
    assert base.retry_after({"Retry-After": "1e309"}, NOW) == 86400.0
    assert base.retry_after({"Retry-After": "nan"}, NOW) is None
    assert base.retry_after({"Retry-After": "Wed, 01 May 2024 12:01:00 GMT"}, NOW) == 60.0
    assert base.retry_after({}, NOW) is None and base.retry_after({"Retry-After": "soon"}, NOW) is None


def test_as_code_and_load_json():
    assert [base.as_code(v) for v in (204, "204 ", 204.0, True, None, 2.5, "", [1])] == \
        ["204", "204", "204", None, None, None, None, None]
    with pytest.raises(ParseError, match="not valid JSON"):
        base.load_json(b"\xff", "x")
    with pytest.raises(ParseError):
        base.load_json(None, "x")
    assert base.load_json('{"a": 1}', "x") == {"a": 1}


def test_unstorable_names_what_postgresql_would_refuse_and_passes_the_rest():
    from tracker.core.states import Failure, State
    ok = base.Observation(vendor="sparksender", vendor_ref="14364", recipient="639171234567", state=State.delivered, code="2", text="Delivered",
                          raw={"sms_status": 2})
    assert base.unstorable(ok) is None
    nul = "bad\x00text"
    for o in (base.Observation(vendor="sparksender", vendor_ref="14364", recipient=None, state=State.sent, code=nul),
              base.Observation(vendor="sparksender", vendor_ref="14364", recipient=None, state=State.failed, code="3",
                               failure=Failure("3", nul, True)),
              base.Observation(vendor="sparksender", vendor_ref="", recipient=None, state=State.sent, code="1"),
              base.Observation(vendor="sparksender", vendor_ref="14364", recipient=None, state=State.sent, code="1", issued_ref=nul)):
        assert base.unstorable(o) == "text with NUL or invalid characters"
    assert base.unstorable(base.Observation(vendor="sparksender", vendor_ref="14364", recipient=None, state=State.sent, code="1",
                                            raw={"note": nul})) == "payload holds NUL characters"
    assert base.unstorable(base.Observation(vendor="sparksender", vendor_ref="14364", recipient=None, state=State.sent, code="1",
                                            text="\ud800")) == "text with NUL or invalid characters"


def test_cleaned_replaces_what_postgresql_refuses_and_keeps_the_reading():
    from tracker.core.states import Failure, State
    from tracker.poller.outcomes import storable
    o = base.Observation(vendor="sparksender", vendor_ref="14364", recipient=None, state=State.failed, code="3\x00", text="bad\x00text",
                         failure=Failure("3", "re\ud800ason", True), raw={"note": "\x00", "n": [1, "\x00"]})
    c = base.cleaned(o)
    assert base.unstorable(o) is not None and base.unstorable(c) is None
    assert (c.state, c.code, c.text, c.failure.reason) == (State.failed, "3\ufffd", "bad\ufffdtext", "re?ason")
    assert c.raw == {"note": "\ufffd", "n": [1, "\ufffd"]}
    # what cleaning cannot mend (a key or a time) is left out of a poll's result
    late = datetime(9999, 12, 31, 23, 59, tzinfo=timezone(-timedelta(hours=5)))
    keyless = base.Observation(vendor="sparksender", vendor_ref="", recipient=None, state=State.sent, code="1")
    timeless = base.Observation(vendor="sparksender", vendor_ref="14364", recipient=None, state=State.sent, code="1", event_at=late)
    assert storable([o, keyless, timeless]) == [c]
