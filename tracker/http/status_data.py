"""What the status page shows (tracker.http.status gathers it, tracker.http.status_page renders
it), and the pure rules that judge it: which badges a vendor's card wears, how an age is
coloured."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping

from tracker.http.status_format import age_s, ago, count, hour_label

ACCOUNT_ERROR = "account error"  # how a poll's account error begins (tracker.poller.outcomes.kind_of)
# how a row refused for the vendor's account problem says so (tracker.intake.rows._expanded)
ACCOUNT_REFUSAL = "the vendor reported an account problem"
# A half-open circuit is a probe cycle; this many cycles without a success and the vendor has
# not answered well for a long time (a probe that fails reopens the circuit: it may be seen
# half-open at any look).
STALE_PROBE_CYCLES = 5


@dataclass
class UnmappedCode:
    code: str
    reports: int | None = None  # None: not counted (beyond the codes a card lists)
    last_seen_at: datetime | None = None


@dataclass
class VendorStatus:
    vendor: str
    enabled: bool = True  # False: disabled in the configuration (or not in it): nothing polls it
    in_flight: int = 0
    stuck: int = 0
    oldest_stuck_at: datetime | None = None  # submission time of the oldest stuck message
    count_cap: int = 100_000
    stuck_cap: int = 10_000
    hour: Mapping[str, Any] | None = None  # tracker.vendor_figures_since: total, ratio, p50_s, p90_s
    day: Mapping[str, Any] | None = None
    refused: int = 0  # submission rows refused at intake since StatusData.hour_from
    refused_cap: int = 10_000
    last_refusal: str | None = None  # the latest refused row's error
    last_refusal_at: datetime | None = None
    circuit: str | None = None  # closed | half_open | open | None (not polled)
    circuit_since: datetime | None = None
    circuit_reset_s: float = 60.0  # the vendor's configured wait before a half-open probe
    polling_replicas: int = 0
    last_success_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    unmapped_codes: list[UnmappedCode] = field(default_factory=list)
    unmapped_count_cap: int = 100  # tracker.http.status.UNMAPPED_COUNT_CAP, which sets it
    chart: list[tuple[datetime, int, float | None]] = field(default_factory=list)  # hour, total, ratio


@dataclass
class ComponentStatus:
    """A component of this daemon that has failed since it started (tracker.supervisor)."""

    name: str
    failures: int  # since this process started (tracker_component_failures_total)
    in_a_row: int  # 0: it has made progress since its last failure
    last_error: str


@dataclass
class TrackerStatus:
    """The tracker itself: what /readyz says (tracker.http.ops.readiness), its components'
    failures, and the replicas polling vendors (tracker.poll_stats)."""

    problems: list[Any] = field(default_factory=list)  # supervisor_health.Problem: component, reason
    components: list[ComponentStatus] = field(default_factory=list)
    replicas: list[Mapping[str, Any]] = field(default_factory=list)  # replica, vendors, reported_at


@dataclass
class StatusData:
    now: datetime
    vendors: list[VendorStatus]
    hour_from: datetime | None = None  # "since HH:00": figures are by the hour of submission
    day_from: datetime | None = None
    tracker: TrackerStatus | None = None
    intake_waiting: int = 0
    intake_oldest_s: float | None = None
    postbacks_waiting: int = 0
    postbacks_oldest_s: float | None = None
    consumers: list[Mapping[str, Any]] = field(default_factory=list)  # consumer, events, age_s
    sinks: list[Mapping[str, Any]] | None = None  # None: the sinks' view does not exist (yet)
    sinks_note: str | None = None
    routes: list[Mapping[str, Any]] = field(default_factory=list)  # top routes by volume
    retention: list[Mapping[str, Any]] = field(default_factory=list)  # last run per kind
    # submission rows refused since hour_from for a vendor no card shows (a misspelt vendor
    # name: a whole feed refused would look idle): vendor, refused, last_error, capped
    refused_elsewhere: list[Mapping[str, Any]] = field(default_factory=list)
    count_cap: int = 100_000
    stall_s: float = 60.0  # health.intake_stall_s
    postbacks_stall_s: float = 60.0


def error_is_current(v: VendorStatus) -> bool:
    """The last poll error came after the last success (or there was none): the vendor is still
    failing, as far as anyone knows. An error without a time is taken as current."""
    if not v.last_error:
        return False
    if v.last_error_at is None or v.last_success_at is None:
        return True
    return v.last_error_at > v.last_success_at


def vendor_alerts(v: VendorStatus, now: datetime, since: datetime | None) -> list[tuple[str, str]]:
    """A vendor card's badges, (text, level), worst news first after `disabled`."""
    out = [] if v.enabled else [("disabled", "mute")]
    if v.refused:
        when = f" since {hour_label(since, now)}" if since else ""
        out.append((f"{count(v.refused, v.refused_cap)} refused at intake{when}", "bad"))
    if ((error_is_current(v) and v.last_error.startswith(ACCOUNT_ERROR))
            or (v.last_refusal or "").startswith(ACCOUNT_REFUSAL)):
        out.append(("account error", "bad"))
    if v.circuit == "open":
        out.append(("circuit open", "bad"))
    elif v.circuit == "half_open":
        old = age_s(v.last_success_at, now)
        if old is None or old > STALE_PROBE_CYCLES * v.circuit_reset_s:
            out.append((f"half-open, last success {ago(v.last_success_at, now)}", "bad"))
    if v.stuck:
        oldest = f", oldest submitted {ago(v.oldest_stuck_at, now)}" if v.oldest_stuck_at else ""
        out.append((f"{count(v.stuck, v.stuck_cap)} stuck{oldest}", "warn"))
    if v.unmapped_codes:
        out.append((f"{len(v.unmapped_codes)} unmapped codes", "warn"))
    return out


def age_level(age: float | None, limit_s: float) -> str:
    """An age of work waiting: fine under half its limit (/readyz's stall setting), amber from
    there, red past it (then /readyz is 503 unless the component is busy taking it in)."""
    if not age or age < limit_s / 2:
        return "ok"
    return "bad" if age > limit_s else "warn"
