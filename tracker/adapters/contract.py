"""The adapter contract, declared: what every vendor module has (Adapter) and the optional
abilities a vendor may have (LogsIn, ListsMessages, PollsInBatches, SignsPostbacks, Configured). A
vendor module is the implementation (a module satisfies a Protocol as an object does); the shell
asks `isinstance(adapter, LogsIn)` where it needs an ability, never `hasattr`.

The parsers are given no configuration. A vendor whose reading depends on a setting (Sparrow's
naive_time_zone) is Configured: `configured(cfg)` returns the adapter bound to `cfg` (made with
`bound`), which the shell takes through tracker.adapters.for_config.

`drift(module)` lists how a module departs from the contract: a missing name, a constant of the
wrong type, a function whose parameters differ, an ability half implemented. The conformance
test (tests/unit/test_adapter_contract.py) runs it on every registered vendor.
"""
from __future__ import annotations

import functools
import inspect
import types
import typing
from datetime import datetime
from typing import TYPE_CHECKING, Any, Mapping, Protocol, runtime_checkable

from tracker.adapters.base import (HttpRequest, HttpResponse, LoginResult, MessageRef, Observation,
                                   PostbackRequest, SendResult, Setting, StatusResult)

if TYPE_CHECKING:
    from tracker.config_types import VendorConfig


@runtime_checkable
class Adapter(Protocol):
    """Every vendor module. Pure: no I/O, no clock (`now` is given), no logging."""

    NAME: str  # the vendor's name in configuration, tables and URLs
    POLLS: bool  # has a status query
    # the largest answer its calls may need (bytes): one message's status is small, a list page
    # or a batch report is not; the client refuses more (an answer is parsed whole, in memory)
    MAX_ANSWER_BYTES: int
    PUSHES: bool  # sends postbacks
    KEYED_BY_RECIPIENT: bool  # its id names a batch: a message is (vendor_ref, recipient)
    POSTBACK_CONTENT_TYPES: frozenset[str]  # media types its postbacks come as (empty: none)
    SETTINGS: Mapping[str, Setting]  # configuration keys only this vendor has
    # the VendorConfig credential fields it reads (status_url, user_id, api_key, org_id,
    # api_token, partner_token: config.schema.whose): another vendor's are refused in its
    # table, not ignored in silence
    CREDENTIALS: frozenset[str]

    def normalize_ref(self, ref: Any) -> str:
        """The vendor id in canonical form, for matching only; ParseError for a bad id."""

    def status_requests(self, cfg: VendorConfig, refs: list[MessageRef],
                        token: str | None = None) -> list[HttpRequest]:
        """What to send to learn about `refs` (ids sent verbatim); NotConfigured when a
        setting it needs is missing."""

    def parse_status(self, responses: list[HttpResponse], refs: list[MessageRef],
                     now: datetime) -> StatusResult:
        """The answers to status_requests(refs), in the same order."""

    def parse_postback(self, method: str, content_type: str, query: Mapping[str, str],
                       body: bytes, now: datetime) -> list[Observation]:
        """One vendor callback."""

    def parse_send(self, response: Any, request: Any | None, now: datetime) -> SendResult:
        """The vendor's raw send response (and the request, where the response does not name
        the recipients)."""


@runtime_checkable
class LogsIn(Protocol):
    """Status calls carry a token from a login (Sparrow): the poller caches it."""

    def login_request(self, cfg: VendorConfig) -> HttpRequest: ...

    def parse_login(self, resp: HttpResponse, now: datetime) -> LoginResult: ...


@runtime_checkable
class ListsMessages(Protocol):
    """A list endpoint answers for many messages a page (engageSPARK)."""

    LIST_MAX_SIZE: int

    def list_request(self, cfg: VendorConfig, *, after: datetime | None = None,
                     page: int | None = None, size: int = 1000) -> HttpRequest: ...

    def parse_list(self, resp: HttpResponse, now: datetime,
                   request: HttpRequest | None = None) -> StatusResult: ...


@runtime_checkable
class PollsInBatches(Protocol):
    """One status call answers for every message of a batch (Sparrow): claims take whole
    batches, and one poll covers each."""

    def batch_of(self, ref: MessageRef) -> str:
        """The batch a message belongs to (what one status call covers)."""


@runtime_checkable
class SignsPostbacks(Protocol):
    """The vendor signs its postbacks (Twilio): a postback whose signature does not verify is
    refused before it is read. Returns the name of the setting whose secret verified it (one
    named `previous_...`: a secret being rotated out, counted), else None."""

    def verify_postback(self, cfg: VendorConfig, request: PostbackRequest) -> str | None: ...


@runtime_checkable
class Configured(Protocol):
    """What the vendor's parsers read depends on its settings (Sparrow: the zone of times written
    without an offset). The shell parses with for_config(name, cfg), never the module itself."""

    def configured(self, cfg: VendorConfig) -> Adapter:
        """This adapter bound to `cfg`: every name of the contract the module has (Configured's
        aside), its parsers reading `cfg`'s settings. NotConfigured for a setting it cannot
        honour."""


ABILITIES: tuple[type, ...] = (LogsIn, ListsMessages, PollsInBatches, SignsPostbacks, Configured)


def _members(protocol: type) -> dict[str, Any]:
    """A protocol's names: a function, or the type of a constant."""
    hints = typing.get_type_hints(protocol, globalns={**globals(), "VendorConfig": Any})
    out: dict[str, Any] = {k: v for k, v in hints.items()}
    for name, value in vars(protocol).items():
        if inspect.isfunction(value) and not name.startswith("_"):
            out[name] = value
    return out


def _shape(fn: Any, drop_self: bool) -> list[tuple[str, Any, bool]]:
    params = list(inspect.signature(fn).parameters.values())  # follows __wrapped__ (guarded)
    if drop_self:
        params = params[1:]
    return [(p.name, p.kind, p.default is not inspect.Parameter.empty) for p in params]


def _show(shape: list[tuple[str, Any, bool]]) -> str:
    """Parameters as a signature shows them: `a, b=…, *, c=…`."""
    out, star = [], False
    for name, kind, has_default in shape:
        if kind is inspect.Parameter.KEYWORD_ONLY and not star:
            out.append("*")
            star = True
        out.append(name + ("=…" if has_default else ""))
    return ", ".join(out)


def _type_ok(value: Any, expected: Any) -> bool:
    origin = typing.get_origin(expected) or expected
    if origin is typing.Union or origin is Any:
        return True
    if origin is Mapping:
        return isinstance(value, Mapping)
    return isinstance(value, origin)


def _drift_from(module: Any, protocol: type) -> list[str]:
    problems = []
    for name, spec in _members(protocol).items():
        if not hasattr(module, name):
            problems.append(f"{protocol.__name__}.{name}: missing")
        elif inspect.isfunction(spec):
            fn = getattr(module, name)
            if not callable(fn):
                problems.append(f"{protocol.__name__}.{name}: not a function")
            elif _shape(fn, False) != _shape(spec, True):
                problems.append(f"{protocol.__name__}.{name}: parameters ({_show(_shape(fn, False))}) "
                                f"differ from the contract's ({_show(_shape(spec, True))})")
        elif not _type_ok(getattr(module, name), spec):
            problems.append(f"{protocol.__name__}.{name}: expected {spec}, got "
                            f"{type(getattr(module, name)).__name__}")
    return problems


def abilities(adapter: Any) -> list[type]:
    """The optional abilities a vendor module has."""
    return [a for a in ABILITIES if isinstance(adapter, a)]


def drift(module: Any) -> list[str]:
    """How `module` departs from the contract (empty: it keeps it). An ability counts as
    claimed as soon as one of its names is there: then all of them must be, and right."""
    problems = _drift_from(module, Adapter)
    for ability in ABILITIES:
        names = _members(ability)
        if any(hasattr(module, n) for n in names):
            problems += _drift_from(module, ability)
    return problems


@functools.lru_cache(maxsize=None)
def _contract_names(module: Any) -> tuple[str, ...]:
    """The names of the contract `module` keeps: Adapter's and its abilities' (Configured's aside)."""
    kept = [Adapter, *(a for a in abilities(module) if a is not Configured)]
    return tuple(name for protocol in kept for name in _members(protocol))


def bound(module: Any, **functions: Any) -> Any:
    """What a Configured vendor's `configured` returns: an object with the contract's names of
    `module`, `functions` (its parsers bound to settings) in place of the module's own."""
    unknown = set(functions) - set(_contract_names(module))
    if unknown:
        raise TypeError(f"not names of the contract: {', '.join(sorted(unknown))}")
    return types.SimpleNamespace(**{n: getattr(module, n) for n in _contract_names(module)} | functions)
