"""The sandbox's knobs: what the fake vendors do, settable per vendor and at runtime.

Times come in two kinds:
- vendor time (`*_s` fields marked "scaled"): what the vendor's world takes (receipt latency,
  deliveryDeadline, token lifetime, postback timeout and retry delay). Real seconds are
  `value * time_scale`, so `time_scale=0.001` turns Skycore's 5-minute retry into 0.3 s.
- transport time (`answer_delay_s`, `slow_delay_s`, `retry_after_s`): real seconds, never
  scaled, because they are about the tracker's own timeouts, back-off and throughput.

Fate shares are weights (normalized over their sum). A vendor that cannot express a fate reports
the nearest one it can (e.g. Spark Sender has only "fail", Skycore v2 has no "expired"); the ground
truth records what the vendor can tell, see each vendor module's FATE_MAP.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, Mapping

ACCOUNT_VALUES = ("ok", "no_funds", "suspended", "inactive", "maintenance")
LATENCY_DISTS = ("lognormal", "exponential", "fixed", "uniform")
MALFORMED_KINDS = ("truncated", "html", "empty", "nul")

# Postback behaviour per vendor where the knob is left at None. Skycore's is documented (one at a
# time, about one per second, 5 retries 5 minutes apart); engageSPARK's push and Sparrow's callback
# retry policies are not public: the sandbox sends them once.
POSTBACK_DEFAULTS: dict[str, dict[str, float]] = {
    "skycore": {"postback_retries": 5, "postback_retry_s": 300.0, "postback_interval_s": 1.0,
                "postback_concurrency": 1},
    "engagespark": {"postback_retries": 0, "postback_retry_s": 300.0, "postback_interval_s": 0.0,
                    "postback_concurrency": 4},
    "sparrow": {"postback_retries": 0, "postback_retry_s": 300.0, "postback_interval_s": 0.0,
                "postback_concurrency": 4},
    "sparksender": {"postback_retries": 0, "postback_retry_s": 300.0, "postback_interval_s": 0.0,
                    "postback_concurrency": 1},
}  # a vendor not named here: sent once, four at a time (as Sparrow's)


@dataclass(frozen=True)
class Knobs:
    # -- fates of accepted messages (weights) --
    delivered: float = 0.80
    read: float = 0.05  # Sparrow "seen"; vendors without read receipts report it as delivered
    failed: float = 0.05
    expired: float = 0.02
    rejected: float = 0.03
    no_receipt: float = 0.05  # carrier never sends a receipt: stays "sent" at the vendor forever
    temp_failure: float = 0.05  # engageSPARK: a retried 'network error' (done false) first
    telco_retry: float = 0.03  # engageSPARK: a telco's temporary failure receipt (done false) first
    # -- vendor-world timing (scaled by time_scale) --
    time_scale: float = 1.0
    sent_after_s: float = 2.0  # accepted -> sent (uniform 0.5x..1.5x)
    latency: str = "lognormal"  # sent -> receipt: lognormal | exponential | fixed | uniform
    latency_s: float = 20.0  # median (lognormal), mean (exponential), value (fixed), max (uniform)
    latency_sigma: float = 0.8  # lognormal shape
    latency_max_s: float = 3600.0  # cap on any drawn latency
    deadline_s: float = 86400.0  # engageSPARK deliveryDeadline = now + this
    token_ttl_s: float = 86400.0  # Sparrow JWT lifetime
    postback_timeout_s: float = 10.0  # receiver must answer within (floor 0.25 s real)
    postback_retry_s: float | None = None  # None: vendor default (POSTBACK_DEFAULTS)
    postback_retries: int | None = None
    postback_interval_s: float | None = None  # pause between two postbacks of one sender
    postback_concurrency: int | None = None
    # -- postback quirks --
    duplicate_share: float = 0.0  # a postback is sent twice
    out_of_order_share: float = 0.0  # the final postback goes out before the 'sent' one
    postback_format: str = "v2"  # Skycore: v2 (JSON) | v1 (XML)
    # -- transport (real seconds) --
    answer_delay_s: float = 0.0  # every API answer waits this long (a vendor's network and servers)
    rate_limit_per_s: float = 0.0  # hard limit per vendor, 0 = none; beyond: 429 + Retry-After
    throttle_share: float = 0.0  # share of requests answered 429 + Retry-After
    retry_after_s: int = 1
    server_error_share: float = 0.0  # share answered 500/502/503
    slow_share: float = 0.0  # share answered only after slow_delay_s
    slow_delay_s: float = 15.0
    malformed_share: float = 0.0  # status/list/report answers and first postback attempts garbled
    # ... how a status/list/report answer is garbled, one picked at random each time:
    # truncated JSON, an HTML page, an empty body, or "nul": well-formed JSON holding a NUL
    # character (\u0000), which PostgreSQL cannot store in text or jsonb.
    malformed_kinds: tuple[str, ...] = ("truncated", "html", "empty")
    # -- account --
    bad_credentials: bool = False  # reject every credential
    account: str = "ok"  # ok | no_funds | suspended | inactive | maintenance
    # -- format variants --
    old_field_names: bool = False  # engageSPARK: deliveredToVendor/deliveredByVendor
    bare_records: bool = False  # Sparrow reports: records as bare number strings
    blocked_words: tuple[str, ...] = ()  # Spark Sender: 216 when the message contains one
    # -- determinism --
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("delivered", "read", "failed", "expired", "rejected", "no_receipt"):
            if getattr(self, name) < 0:
                raise ValueError(f"knob {name}: must be >= 0")
        for name in ("temp_failure", "telco_retry", "duplicate_share", "out_of_order_share", "throttle_share",
                     "server_error_share", "slow_share", "malformed_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"knob {name}: must be between 0 and 1")
        if self.time_scale <= 0:
            raise ValueError("knob time_scale: must be > 0")
        if self.latency not in LATENCY_DISTS:
            raise ValueError(f"knob latency: one of {', '.join(LATENCY_DISTS)}")
        if self.account not in ACCOUNT_VALUES:
            raise ValueError(f"knob account: one of {', '.join(ACCOUNT_VALUES)}")
        if not self.malformed_kinds or not set(self.malformed_kinds) <= set(MALFORMED_KINDS):
            raise ValueError(f"knob malformed_kinds: one or more of {', '.join(MALFORMED_KINDS)}")
        if self.postback_format not in ("v1", "v2"):
            raise ValueError("knob postback_format: v1 or v2")
        if self.postback_retries is not None and not 0 <= self.postback_retries <= 20:
            raise ValueError("knob postback_retries: 0..20")
        if self.postback_concurrency is not None and not 1 <= self.postback_concurrency <= 64:
            raise ValueError("knob postback_concurrency: 1..64")
        if min(self.retry_after_s, self.rate_limit_per_s, self.slow_delay_s,
               self.answer_delay_s) < 0:
            raise ValueError("knobs retry_after_s, rate_limit_per_s, slow_delay_s, answer_delay_s:"
                             " must be >= 0")
        if sum(self.fate_weights().values()) <= 0:
            raise ValueError("knobs: at least one fate share must be > 0")

    def fate_weights(self) -> dict[str, float]:
        return {"delivered": self.delivered, "read": self.read, "failed": self.failed,
                "expired": self.expired, "rejected": self.rejected, "no_receipt": self.no_receipt}

    def scaled(self, vendor_seconds: float) -> float:
        """Real seconds for a span of vendor time."""
        return vendor_seconds * self.time_scale

    def postback(self, vendor: str, name: str) -> float:
        """A postback knob, falling back to the vendor's documented default."""
        value = getattr(self, name)
        if value is not None:
            return value
        return POSTBACK_DEFAULTS.get(vendor, POSTBACK_DEFAULTS["sparrow"])[name]

    def with_changes(self, changes: Mapping[str, Any]) -> "Knobs":
        """A copy with `changes` applied; unknown names or wrong types raise ValueError."""
        known = {f.name: f for f in fields(self)}
        clean: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown knob {name!r}")
            clean[name] = _coerce(name, getattr(self, name), known[name].default, value)
        return dataclasses.replace(self, **clean)

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["blocked_words"] = list(self.blocked_words)
        d["malformed_kinds"] = list(self.malformed_kinds)
        return d


def _coerce(name: str, current: Any, default: Any, value: Any) -> Any:
    kind = type(default if default is not None else current)
    if value is None:
        if default is None:
            return None
        raise ValueError(f"knob {name}: may not be null")
    if default is None and current is None:
        kind = float if name.endswith("_s") else int
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"knob {name}: expected true/false")
        return value
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"knob {name}: expected a number")
        if kind is int and float(value) != int(value):
            raise ValueError(f"knob {name}: expected an integer")
        return kind(value)
    if kind is tuple:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ValueError(f"knob {name}: expected a list of strings")
        return tuple(str(v) for v in value)
    if not isinstance(value, str):
        raise ValueError(f"knob {name}: expected a string")
    return value
