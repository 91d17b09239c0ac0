"""The keys a configuration may have: the sections, each field's kind, which keys are secret or
URLs, and the limits the checks hold values to."""
from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from typing import Any

from tracker.adapters import ADAPTERS
from tracker.config_types import (
    DatabaseConfig,
    HealthConfig,
    HttpConfig,
    IntakeConfig,
    LogConfig,
    RetentionConfig,
    VendorConfig,
)

ENV_PREFIX = "TRACKER_"
ENVIRONMENT = "environment"
# TRACKER_* environment variables that are not settings (no "__"), read or documented by the
# project itself: the configuration leaves them alone. Any other TRACKER_* name without "__" is a
# problem (TRACKER_DATABASE_DSN, one underscore, was silently ignored). Add a new one here
# (tests/unit/test_check_config_gaps.py finds those the repository reads).
OTHER_ENV_NAMES = frozenset({
    "TRACKER_CONFIG",  # the configuration file (tracker.config.loader, `--config`)
    "TRACKER_LOOP",  # tracker.loop: asyncio instead of uvloop
    "TRACKER_TEST_DSN",  # scripts/test, tests/conftest.py: the test suite's server
    "TRACKER_BENCH_DSN",  # bench/*.py --dsn
    "TRACKER_STATUS_SCREENSHOT", "TRACKER_STATUS_SCREENSHOT_PHONE",  # tests/acceptance/test_status_browser.py
    # deploy/grafana: the dashboards' data sources, maybe set in the same environment
    "TRACKER_PROMETHEUS_URL", "TRACKER_GRAFANA_PG_HOST", "TRACKER_GRAFANA_PG_USER",
    "TRACKER_GRAFANA_PG_DATABASE", "TRACKER_GRAFANA_PG_PASSWORD",
})
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("auto", "json", "console")

_SECTIONS: dict[str, type] = {
    "database": DatabaseConfig,
    "http": HttpConfig,
    "intake": IntakeConfig,
    "health": HealthConfig,
    "log": LogConfig,
    "retention": RetentionConfig,
}
_SECRETS: dict[str, frozenset[str]] = {
    "database": frozenset({"dsn"}),
    "http": frozenset({"status_token"}),
    "vendors": frozenset({"postback_token", "previous_postback_token", "api_key", "api_token",
                          "partner_token"}),
}
# Numeric fields that may be zero; every other number must be > 0.
_NON_NEGATIVE = frozenset({"deadline_margin_s", "drain_s", "group_commit_ms", "pool_min", "list_poll_min",
                           "pause_ms",  # and [retention] *_days: 0 keeps that kind for ever
                           *(f.name for f in dataclasses.fields(RetentionConfig) if f.name.endswith("_days"))})
# Upper bounds of every duration and day count: beyond them a value is a typo (1e14 for 1e4),
# and Python's timedelta or PostgreSQL's timestamps overflow (`tracker run` would fail at start,
# or every retention sweep would). Keyed by field name, as _NON_NEGATIVE is.
MAX_SECONDS = 10 * 365 * 86400  # 10 years
MAX_DAYS = 100 * 365  # 100 years
_DURATION_UNITS = {"_s": (MAX_SECONDS, "s", "10 years"),
                   "_ms": (MAX_SECONDS * 1000, "ms", "10 years"),
                   "_days": (MAX_DAYS, "days", "100 years")}


def _is_duration(name: str) -> bool:
    """A key that is a length of time (``rate_limit_per_s`` is a rate, not one)."""
    return not name.endswith("_per_s") and any(name.endswith(u) for u in _DURATION_UNITS)


def _upper_bound(name: str) -> tuple[float, str, str]:
    """(limit, unit, the limit in words) of a duration key."""
    return next(b for u, b in _DURATION_UNITS.items() if name.endswith(u))


_URL_SAFE = re.compile(r"[A-Za-z0-9._~-]+")
MIN_POSTBACK_TOKEN_CHARS = 16  # 16 random URL-safe characters are ~95 bits: not guessable
POSTBACK_TOKENS = ("postback_token", "previous_postback_token")  # both in a postback's URL
MIN_BODY_BYTES = 1024  # below this even a single vendor postback is refused
MAX_BODY_BYTES = 64 * 1024 * 1024  # above this one request could make the tracker hold 64 MiB
# The intake listener, the publisher and the sinks' listener each hold a pool connection for as
# long as the tracker runs; everything else takes one in turn and needs at least one more.
MIN_POOL = 4
EMBEDDED_POOL_HEADROOM = 10  # embedded connections left for `tracker migrate`, replay, psql


# --------------------------------------------------------------------------- field kinds


def _kind(tp: Any) -> str:
    if tp is bool:
        return "bool"
    if tp is int:
        return "int"
    if tp is float:
        return "float"
    if tp is str:
        return "str"
    if isinstance(tp, types.UnionType) and set(typing.get_args(tp)) == {str, type(None)}:
        return "optstr"
    if typing.get_origin(tp) is tuple and typing.get_args(tp) == (str, ...):
        return "strtuple"
    raise TypeError(f"unsupported config field type {tp!r}")  # pragma: no cover - programming error


def _fields(cls: type) -> dict[str, str]:
    hints = typing.get_type_hints(cls)
    return {f.name: _kind(hints[f.name]) for f in dataclasses.fields(cls)
            if f.name not in ("name", "settings")}


_FIELDS: dict[str, dict[str, str]] = {s: _fields(c) for s, c in _SECTIONS.items()}
_FIELDS["vendors"] = _fields(VendorConfig)
_COMMON_VENDOR_KEYS = frozenset(_FIELDS["vendors"])
# Every numeric duration key of every section -> (limit, unit, the limit in words).
_MAX: dict[str, tuple[float, str, str]] = {
    name: _upper_bound(name) for fields in _FIELDS.values() for name, kind in fields.items()
    if kind in ("int", "float") and _is_duration(name)}
# Rows per batch (every section's batch_size): a batch holds the rows it takes locked for as long
# as it runs, and the SQL functions take the size as an int (retention's max_rows): 3e9 passed
# check-config, then every retention batch failed out of int range, every sweep.
MAX_BATCH_ROWS = 50_000
_MAX["batch_size"] = (MAX_BATCH_ROWS, "rows", "a batch holds its locks for as long as it runs")
# The drain comes before the stop proper, which may wait 45 s for the database: both within the
# unit's TimeoutStopSec=90, after which systemd kills the daemon (deploy/tracker.service).
_MAX["drain_s"] = (30, "s", "the unit gives a stop 90 s in all")
# Keys only one vendor has, declared by its adapter (SETTINGS): strings, some secret, some URLs.
_VENDOR_SETTINGS = {name: dict(a.SETTINGS) for name, a in ADAPTERS.items()}
# VendorConfig's credential fields, each read by some vendors only (their adapters' CREDENTIALS):
# in another vendor's table, one is refused naming whose it is (an engageSPARK org_id put under
# Twilio was taken and ignored in silence).
_CREDENTIALS = {name: a.CREDENTIALS for name, a in ADAPTERS.items()}


def whose(key: str, vendor: str | None) -> str | None:
    """The vendors whose key (or `<key>_file`) this is, when it is not `vendor`'s: a reason to
    refuse it, else None."""
    key = key.removesuffix("_file")
    if vendor not in _CREDENTIALS or key in _CREDENTIALS[vendor] or key in _VENDOR_SETTINGS[vendor]:
        return None
    owners = [f"{n}'s" for n in _CREDENTIALS if key in _CREDENTIALS[n] or key in _VENDOR_SETTINGS[n]]
    return (", ".join(owners[:-1]) + " and " + owners[-1] if len(owners) > 1 else owners[0]) if owners else None
for _own in _VENDOR_SETTINGS.values():
    for _key, _setting in _own.items():
        _FIELDS["vendors"][_key] = "optstr"
        if _setting.secret:
            _SECRETS["vendors"] |= {_key}
_URL_KEYS = frozenset({"base_url", "status_url"} | {k for own in _VENDOR_SETTINGS.values()
                                                     for k, s in own.items() if s.url})
# A vendor's own key that takes one of a few values: checked here, not first at its first poll.
_CHOICES = {k: s.choices for own in _VENDOR_SETTINGS.values() for k, s in own.items() if s.choices}


def _allowed_keys(section: str, vendor: str | None = None) -> list[str]:
    keys = list(_FIELDS[section])
    secrets = _SECRETS.get(section, frozenset())
    if section == "vendors":  # the common keys and this vendor's own
        own = _VENDOR_SETTINGS.get(vendor or "", {})
        keys = [k for k in keys if (k in _COMMON_VENDOR_KEYS and not whose(k, vendor)) or k in own]
        secrets = {k for k in secrets if (k in _COMMON_VENDOR_KEYS and not whose(k, vendor)) or k in own}
    keys += [f"{k}_file" for k in sorted(secrets)]
    return keys


def _suggest(word: str, choices: typing.Iterable[str]) -> str:
    match = difflib.get_close_matches(word.lower(), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""

