"""The shape of the configuration (docs/design.md#contract-7). Loading and validation live in tracker.config."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from tracker.adapters import VENDORS  # the registered vendors (tracker.adapters.REGISTERED)
from tracker.sinks.policy import DEFAULT_RETRY_SCHEDULE_S


@dataclass(frozen=True)
class VendorConfig:
    name: str
    enabled: bool = True
    base_url: str = ""
    postback_token: str | None = None  # secret
    # secret: the token being rotated out, still accepted (docs: OPERATIONS.md, "Rotating secrets")
    previous_postback_token: str | None = None
    # Spark Sender: the status URL is not public; default is base_url + "/api/getStatus/".
    status_url: str | None = None
    user_id: str | None = None
    api_key: str | None = None  # secret (Spark Sender, engageSPARK, Skycore)
    org_id: str | None = None  # engageSPARK
    api_token: str | None = None  # secret (Sparrow)
    partner_token: str | None = None  # secret (Sparrow)
    # Poll schedule and limits.
    first_poll_s: float = 30.0
    max_poll_interval_s: float = 3600.0
    tracking_window_s: float = 172800.0
    deadline_margin_s: float = 3600.0  # engageSPARK: window = deliveryDeadline + margin
    rate_limit_per_s: float = 10.0
    concurrency: int = 8
    request_timeout_s: float = 10.0
    batch_size: int = 50  # messages claimed per poll batch
    list_poll_min: int = 200  # engageSPARK: in-flight count at which the list endpoint is used
    circuit_failures: int = 5  # consecutive errors that open the circuit
    circuit_reset_s: float = 60.0  # how long it stays open before a half-open probe
    allow_networks: tuple[str, ...] = ()  # postback source allowlist (CIDRs); empty: any
    expected_final_s: float = 3600.0  # stuck_messages: silent longer than this
    # Keys only this vendor has, declared by its adapter (SETTINGS): key -> value.
    settings: Mapping[str, str] = field(default_factory=dict, repr=False)  # may hold secrets

    def previous_secrets(self) -> list[str]:
        """The settings holding a secret being rotated out, still accepted (their names):
        previous_postback_token, and a vendor's own previous_* (Twilio's auth token, its
        SharedKey's secret)."""
        own = sorted(k for k, v in self.settings.items() if v and k.startswith("previous_"))
        return (["previous_postback_token"] if self.previous_postback_token else []) + own

    @classmethod
    def from_keys(cls, name: str, **keys: Any) -> "VendorConfig":
        """A VendorConfig from flat keys, as a configuration file's [vendors.<name>] has them:
        keys that are not fields are the vendor's own settings."""
        fields = {f.name for f in dataclasses.fields(cls)} - {"settings"}
        own = {k: v for k, v in keys.items() if k not in fields and k != "settings"}
        given = {k: v for k, v in keys.items() if k in fields}
        return cls(name=name, **given, settings={**keys.get("settings", {}), **own})


@dataclass(frozen=True)
class HttpConfig:
    listen: str = "127.0.0.1:8080"
    ops_listen: str | None = None
    max_body_bytes: int = 65536
    group_commit_ms: float = 5.0
    group_commit_max: int = 256
    body_timeout_s: float = 10.0  # a request body not received within this is cut off
    keepalive_timeout_s: float = 15.0  # an idle connection (or one slow to send headers) is closed
    max_connections: int = 512  # per listener; one more is closed at once (tracker/http/connections.py)
    trusted_proxies: tuple[str, ...] = ()  # CIDRs whose X-Forwarded-For names the client
    status_token: str | None = None  # secret; set: /status asks for it (?token= or Bearer)
    drain_s: float = 0.0  # at a stop: /readyz 503 and requests still answered this long (behind a load balancer)


@dataclass(frozen=True)
class DatabaseConfig:
    dsn: str | None = None  # secret-bearing; absent: the embedded private cluster
    state_dir: str = "./var/tracker"  # embedded cluster lives here
    pool_min: int = 2
    pool_max: int = 10


@dataclass(frozen=True)
class IntakeConfig:
    sweep_interval_s: float = 5.0
    batch_size: int = 1000  # submission rows claimed per transaction
    max_messages_per_row: int = 200_000  # a row that expands to more is refused with the reason
    orphan_sweep_age_s: float = 600.0  # the periodic sweep adopts orphans received this recently
    workers: int = 2  # intake loops: one reads rows while another's batch is written


@dataclass(frozen=True)
class HealthConfig:
    """Supervision and readiness (tracker.supervisor, /readyz)."""

    restart_backoff_max_s: float = 30.0  # a failing component restarts after 0.1 s, doubling to this
    failures_before_unready: int = 3  # consecutive failures after which /readyz names the component
    intake_stall_s: float = 60.0  # /readyz 503 while a submission row waits longer than this
    postbacks_stall_s: float = 60.0  # /readyz 503 while a stored postback waits longer than this
    wedged_after_s: float = 120.0  # busy this long without progress: wedged (watchdog ping stops)


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    format: str = "auto"  # auto | json | console


@dataclass(frozen=True)
class WebhookSinkConfig:
    """[sinks.webhooks.<name>]: Standard Webhooks deliveries of every event (tracker.sinks)."""

    name: str
    url: str = ""
    secrets: tuple[str, ...] = field(default=(), repr=False)  # whsec_<base64>, each signs
    vendors: tuple[str, ...] = ()  # empty: every vendor
    states: tuple[str, ...] = ()  # to_state filter; empty: every state
    timeout_s: float = 15.0
    retry_schedule_s: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE_S
    concurrency: int = 16  # deliveries in flight (halved while the receiver throttles)
    enabled: bool = True


@dataclass(frozen=True)
class NatsSinkConfig:
    """[sinks.nats.<name>]: JetStream publishes of every event (tracker.sinks)."""

    name: str
    servers: tuple[str, ...] = field(default=(), repr=False)  # nats:// URLs (may hold credentials)
    stream: str = "TRACKER_EVENTS"
    subject_prefix: str = "tracker"
    create_stream: bool = False
    duplicate_window_s: float = 120.0  # a stream we create drops repeated Nats-Msg-Ids this long
    max_age_days: float = 7.0  # a stream we create keeps an event this long; 0: for ever
    timeout_s: float = 5.0  # connect and publish-acknowledgement timeout
    enabled: bool = True


@dataclass(frozen=True)
class SinksConfig:
    webhooks: dict[str, WebhookSinkConfig] = field(default_factory=dict)
    nats: dict[str, NatsSinkConfig] = field(default_factory=dict)
    poll_interval_s: float = 5.0  # backstop when no NOTIFY tracker_events arrives
    batch_size: int = 500  # events taken from the outbox per transaction


@dataclass(frozen=True)
class RetentionConfig:
    """[retention]: how long each kind of row is kept (tracker.retention, docs/retention.md).
    0 days keeps that kind for ever. Nothing a consumer or sink has not acknowledged, and no
    message with work left, is ever removed."""

    observations_days: float = 30.0  # reports with their raw payloads, of final messages
    postbacks_days: float = 14.0  # raw postbacks already applied (replay reads them)
    orphans_days: float = 7.0  # reports that never found their message
    transitions_days: float = 30.0  # events every consumer and sink has acknowledged
    refused_rows_days: float = 30.0  # submission rows refused (or that named no message)
    final_messages_days: float = 90.0  # messages final this long, with their history
    sink_dead_letters_days: float = 0.0  # events a sink gave up on (redrive sends them); 0: kept
    interval_s: float = 300.0  # a sweep runs this often, on one replica at a time
    batch_size: int = 500  # rows removed per transaction (short ones: never long locks)
    run_budget_s: float = 60.0  # a sweep stops after this long; the next one goes on
    pause_ms: float = 50.0  # between two batches (and at least twice as long as the batch took),
    # so that retention has the database a third of the time at most and the hot path keeps it


@dataclass(frozen=True)
class Config:
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    intake: IntakeConfig = field(default_factory=IntakeConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    log: LogConfig = field(default_factory=LogConfig)
    vendors: dict[str, VendorConfig] = field(
        default_factory=lambda: {v: VendorConfig(name=v) for v in VENDORS}
    )
    sinks: SinksConfig = field(default_factory=SinksConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    source: str | None = None  # the file it came from, for messages
