"""The loader: layers read and merged, each value converted and checked, then the checks across
keys, and a Config built, or every problem raised together as one ConfigError."""
from __future__ import annotations

import os
import re
from typing import Any, Mapping

from tracker import adapters
from tracker.config.listen import Listener, parse_listen
from tracker.config.polling import not_configured, polled
from tracker.config.problems import ConfigError
from tracker.config.redaction import secrets_of, vendor_secrets_of
from tracker.config.schema import (
    _FIELDS,
    _SECRETS,
    _SECTIONS,
    EMBEDDED_POOL_HEADROOM,
    ENV_PREFIX,
    ENVIRONMENT,
    MIN_POOL,
    _allowed_keys,
)
from tracker.config.values import _Values
from tracker.config_types import (
    VENDORS,
    Config,
    DatabaseConfig,
    HealthConfig,
    HttpConfig,
    IntakeConfig,
    LogConfig,
    RetentionConfig,
    VendorConfig,
)
from tracker.db.cluster_settings import MAX_CONNECTIONS as EMBEDDED_MAX_CONNECTIONS


class _Loader(_Values):
    """One load: build() each section from its checked values, then the checks across keys."""

    def build(self, section: str, vendor: str | None) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for key, raw in self.merged(section, vendor).items():
            if key.endswith("_file") and key not in _FIELDS[section]:
                field_name = key[: -len("_file")]
                ok, value = self.read_secret_file(raw)
            else:
                field_name = key
                ok, value = self.convert(section, key, raw)
            if ok:
                values[field_name] = self.check(section, field_name, value, raw)
        return values

    def load(self) -> Config:
        self.read_file()
        self.read_env()
        sections = {s: self.build(s, None) for s in _SECTIONS}
        vendors = {v: self.build("vendors", v) for v in VENDORS}
        self.check_database(sections["database"])
        self.check_listeners()
        for v in VENDORS:
            self.check_poll_schedule(v, vendors[v])
            self.check_previous_token(v, vendors[v])
            self.check_signed(v, vendors[v])
            self.check_polled(v, vendors[v])
        sinks = self.sinks.build()
        for file, key, reason in self.sinks.problems:
            self.problem(file, key, reason)
        if self.problems:  # the file's problems first, then the environment's
            raise ConfigError(sorted(self.problems, key=lambda p: p.file == ENVIRONMENT))
        return Config(
            database=DatabaseConfig(**sections["database"]),
            http=HttpConfig(**sections["http"]),
            intake=IntakeConfig(**sections["intake"]),
            health=HealthConfig(**sections["health"]),
            log=LogConfig(**sections["log"]),
            retention=RetentionConfig(**sections["retention"]),
            vendors={v: VendorConfig.from_keys(v, **vendors[v]) for v in VENDORS},
            sinks=sinks,
            source=self.path,
        )

    # ---- checks across keys: each reported once, at the key most likely to be the mistake

    def source(self, section: str, vendor: str | None, key: str) -> tuple[str, str]:
        """(file, key) to name in a problem about ``key``: where it was set, else its dotted name."""
        raw = self.merged(section, vendor).get(key)
        if raw is not None:
            return raw.file, raw.key
        return self.path or ENVIRONMENT, f"{section}.{vendor}.{key}" if vendor else f"{section}.{key}"

    def usable(self, section: str, vendor: str | None, *keys: str) -> bool:
        """None of ``keys`` has been reported already (a cross-check on them would only echo)."""
        return not any(self.source(section, vendor, k)[1] in self._bad_keys for k in keys)

    def cross_problem(self, section: str, vendor: str | None, key: str, reason: str) -> None:
        self.problem(*self.source(section, vendor, key), reason)

    def check_database(self, db: dict[str, Any]) -> None:
        if not self.usable("database", None, "pool_min", "pool_max"):
            return
        pool_min = db.get("pool_min", DatabaseConfig.pool_min)
        pool_max = db.get("pool_max", DatabaseConfig.pool_max)
        if pool_max < MIN_POOL:
            self.cross_problem("database", None, "pool_max",
                               f"must be at least {MIN_POOL}: the intake listener, the publisher "
                               "and the sinks' listener each hold one connection for as long as "
                               "the tracker runs, and the rest need at least one more")
        elif pool_min > pool_max:
            key = "pool_min" if "pool_min" in db else "pool_max"
            self.cross_problem("database", None, key,
                               f"database.pool_min ({pool_min}) must not exceed database.pool_max ({pool_max})")
        limit = EMBEDDED_MAX_CONNECTIONS - EMBEDDED_POOL_HEADROOM
        if not db.get("dsn") and pool_max > limit:
            self.cross_problem("database", None, "pool_max",
                               f"must be at most {limit} with the embedded cluster (no database.dsn), "
                               f"which accepts {EMBEDDED_MAX_CONNECTIONS} connections in all")

    def check_listeners(self) -> None:
        ops = self.listeners.get("ops_listen")
        if ops is None or not self.usable("http", None, "listen"):
            return
        main = self.listeners.get("listen") or parse_listen(HttpConfig.listen)
        if isinstance(main, Listener) and ops.clashes_with(main):
            self.cross_problem("http", None, "ops_listen",
                               f"{ops.text} takes the same address and port as http.listen "
                               f"({main.text}); give it another port, or leave it out to serve "
                               "/healthz, /readyz and /metrics on the postback listener")

    def check_poll_schedule(self, vendor: str, given: dict[str, Any]) -> None:
        keys = ("first_poll_s", "max_poll_interval_s", "tracking_window_s")
        if not self.usable("vendors", vendor, *keys):
            return
        if not adapters.get(vendor).POLLS:
            return  # never polled (Skycore): a schedule of polls means nothing
        first, cap, window = (given.get(k, getattr(VendorConfig, k)) for k in keys)
        prefix = f"vendors.{vendor}"
        # Name the key the operator set: that is the one to change.
        if first > cap:
            key = "first_poll_s" if "first_poll_s" in given else "max_poll_interval_s"
            self.cross_problem("vendors", vendor, key,
                               f"{prefix}.first_poll_s ({first:g} s) exceeds {prefix}.max_poll_interval_s "
                               f"({cap:g} s): the first poll would wait longer than any later one")
        if first >= window:
            key = "first_poll_s" if "first_poll_s" in given else "tracking_window_s"
            self.cross_problem("vendors", vendor, key,
                               f"{prefix}.first_poll_s ({first:g} s) is not less than "
                               f"{prefix}.tracking_window_s ({window:g} s): messages would be given "
                               "up on before their first poll")

    def check_previous_token(self, vendor: str, given: dict[str, Any]) -> None:
        """A secret being rotated out (`previous_<key>`: the postback token, Twilio's auth token
        and shared key) is accepted beside the current one, never alone (a rotation that lost
        its new secret) and never the same (a rotation not done)."""
        for key in [k for k in given if k.startswith("previous_")]:
            current = key.removeprefix("previous_")
            if not self.usable("vendors", vendor, current, key):
                continue
            if not given.get(current):
                self.cross_problem("vendors", vendor, key,
                                   f"is set without vendors.{vendor}.{current}: set the new secret "
                                   "there (the previous one is accepted only beside it)")
            elif given[key] == given[current]:
                self.cross_problem("vendors", vendor, key,
                                   f"is the same as vendors.{vendor}.{current}: a rotation needs a "
                                   "new secret")

    def check_signed(self, vendor: str, given: dict[str, Any]) -> None:
        """A vendor whose callbacks are signed (its adapter's SIGNING_KEYS), taking them (a
        postback_token), with no key to verify them: every callback would be refused 403."""
        keys = getattr(adapters.get(vendor), "SIGNING_KEYS", ())
        if not keys or not given.get("postback_token") or given.get("enabled") is False:
            return
        if not self.usable("vendors", vendor, "postback_token", *keys) or any(given.get(k) for k in keys):
            return
        either = " or ".join(f"vendors.{vendor}.{k}" for k in keys)
        self.cross_problem("vendors", vendor, "postback_token",
                           f"is set, but nothing verifies {vendor}'s callbacks: set {either} "
                           "(every callback would be refused 403), or unset postback_token")

    def check_polled(self, vendor: str, given: dict[str, Any]) -> None:
        """A vendor `tracker run` polls (tracker.config.polling.polled) whose adapter cannot build
        its requests for want of a setting (its own NotConfigured): reported at base_url, the
        key that makes it polled, naming the vendor's keys the adapter asks for."""
        if not self.usable("vendors", vendor, *_allowed_keys("vendors", vendor)):
            return  # one of its keys is reported already: that first
        cfg = VendorConfig.from_keys(vendor, **given)
        reason = not_configured(vendor, cfg) if polled(vendor, cfg) else None
        if reason is None:
            return
        at = {k: m.start() for k in _allowed_keys("vendors", vendor) if not k.endswith("_file")
              for m in [re.search(rf"(?<![\w.]){re.escape(k)}(?!\w)", reason)] if m}
        named = sorted(at, key=at.get)  # as the adapter names them
        ways = []
        for k in named:
            env = f"{ENV_PREFIX}VENDORS__{vendor.upper()}__{k.upper()}"
            alt = f", or vendors.{vendor}.{k}_file" if k in _SECRETS["vendors"] else ""
            ways.append(f"vendors.{vendor}.{k} (or {env}{alt})")
        todo = f"set {' and '.join(ways)}" if ways else f"set the vendors.{vendor} keys it names"
        self.cross_problem("vendors", vendor, "base_url",
                           f"{vendor} is polled (enabled, with a base_url) but its adapter cannot "
                           f"build a status call: {reason}; {todo}, or unset base_url (or "
                           "enabled = false) not to poll it")


def _config_path(path: str | None, env: Mapping[str, str]) -> str | None:
    return path or env.get("TRACKER_CONFIG") or None


def load(path: str | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load the configuration: ``path``, else ``$TRACKER_CONFIG``, else defaults; then the environment.

    Raises :class:`ConfigError` listing every problem. Registers every secret with tracker.logging so
    that it is masked in log output. A vendor `tracker run` would poll whose adapter lacks a
    setting it needs (tracker.config.polling) is a problem too: run refuses it as check-config does.
    """
    env = os.environ if env is None else env
    loader = _Loader(_config_path(path, env), env)
    cfg = loader.load()
    from tracker.logging import register_secret  # late: tracker.logging imports tracker.config
    from tracker.masking import register_public

    sent = set(vendor_secrets_of(cfg))  # masked in the rows stored too (tracker.masking)
    for s in secrets_of(cfg):
        register_secret(s, sent=s in sent)
    register_public(*cfg.vendors)
    return cfg

