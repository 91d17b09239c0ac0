"""What a chaos run is made of: its size (short or full), the scenarios' shape, the settings
every scenario shares (sandbox knobs, the tracker's limits), and a scenario's result."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable

if TYPE_CHECKING:
    from _chaos.run import Run

POLLED = ("sparksender", "engagespark", "sparrow", "twilio")


@dataclass(frozen=True)
class Size:
    name: str
    load_s: float  # how long the application sends
    rate: float  # messages per second it sends, on average, besides campaigns
    campaigns: tuple[tuple[float, str, int], ...]  # (at second, vendor, numbers in one bulk call)
    kills: int  # kill -9 scenario: how many times
    fault_s: float  # a timed fault's length (outage: this much timeouts, then half as much 5xx)
    fuzz_postbacks: int
    fuzz_rows: int
    # Configured per-vendor request limits (rate_limit_per_s): above the steady demand, reached
    # by the campaigns' bursts. engageSPARK's is high: a list claim (up to 5,000 messages) is
    # leased for 2 x 5,000 / rate s, and a lease lost in a crash must end well within these
    # compressed tracking windows.
    limits: dict[str, float]


SHORT = Size("short", 10, 40, ((3, "sparksender", 300), (5, "engagespark", 250),
                               (6, "sparrow", 60)), 2, 5, 5_000, 500,
             {"sparksender": 150.0, "engagespark": 1000.0, "sparrow": 50.0, "twilio": 20.0})
FULL = Size("full", 40, 80, ((8, "sparksender", 1200), (16, "engagespark", 1500),
                             (24, "sparrow", 300), (30, "sparksender", 800)), 3, 12,
            100_000, 10_000, {"sparksender": 250.0, "engagespark": 1000.0, "sparrow": 60.0,
                              "twilio": 40.0})
# Vendor time runs 100 times faster: a receipt within 4 s, engageSPARK's deadline 6 s after the
# send, Skycore's retry 3 s; a postback answer may take 10 real seconds, as the vendors allow.
# engageSPARK and Sparrow do not publish a postback retry policy: the contract's 503 ("so that
# the vendor retries") assumes one, so they get Skycore's documented 5 retries here (and so do
# Twilio's status callbacks, which the sandbox otherwise sends once).
KNOBS = {"time_scale": 0.01, "latency_max_s": 400.0, "deadline_s": 600.0,
         "postback_timeout_s": 1000.0, "postback_retries": 5, "postback_retry_s": 300.0,
         "duplicate_share": 0.1, "out_of_order_share": 0.1, "answer_delay_s": 0.002}


@dataclass
class Scenario:
    key: str
    title: str
    fault: Callable[["Run"], Awaitable[None]] | None = None
    body: Callable[["Run"], Awaitable[None]] | None = None  # instead of load + fault + settle
    vendors: Callable[["Run"], dict[str, dict[str, Any]]] | None = None  # vendor settings
    config: dict[str, dict[str, Any]] = field(default_factory=dict)  # other config sections
    replicas: int = 1
    window_s: float = 15.0
    load_scale: float = 1.0  # this scenario's load lasts this many times the size's load_s
    db_settings: dict[str, str] = field(default_factory=dict)  # the database's defaults
    server_settings: dict[str, str] = field(default_factory=dict)  # ALTER SYSTEM, then reset
    knobs: dict[str, Any] = field(default_factory=dict)
    informational: tuple[str, ...] = ()  # figures shown but not judged (e.g. "rate")
    note: str = ""


@dataclass
class Result:
    title: str
    messages: int = 0
    postbacks_200: int = 0
    lost: int = 0
    duplicates: int = 0
    wrong: int = 0
    consumer: int = 0
    other: dict[str, int] = field(default_factory=dict)
    recovery_s: float | None = None
    rates: dict[str, tuple[float, float]] = field(default_factory=dict)
    informational: tuple[str, ...] = ()
    details: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rate_ratio(self) -> float:
        return max((r / lim for r, lim in self.rates.values()), default=0.0)

    @property
    def failed(self) -> bool:
        bad = self.lost or self.duplicates or self.wrong or self.consumer or any(self.other.values())
        if "rate" not in self.informational and self.rate_ratio > 1.1:
            bad = True
        return bool(bad)
