"""Loading and validating the configuration (docs/design.md#contract-7).

Layers, later wins: dataclass defaults < TOML file < environment (``TRACKER_<SECTION>__<KEY>``,
``TRACKER_VENDORS__<VENDOR>__<KEY>``). Secret keys may instead be given as ``<key>_file``. Every problem
is collected and raised together as one :class:`ConfigError`; secret values never appear in it.

- ``schema.py``: the sections, each key's kind, which keys are secret, the limits
- ``layers.py``: the TOML file and the environment read and merged
- ``values.py``: each value converted and checked on its own
- ``loader.py``: ``load()``: the checks across keys, the Config
- ``listen.py``: ``host:port`` parsed and resolved; ``redaction.py``: secrets kept out of output
- ``report.py``: ``tracker check-config`` (``check_config``, ``summary``, ``warnings``)

Everything is imported from here; the modules are the layout, not the interface.
"""
from tracker.config.listen import IPAddress, Listener, parse_listen, resolve
from tracker.config.loader import load
from tracker.config.problems import ConfigError, Problem
from tracker.config.redaction import redact_dsn, secrets_of
from tracker.config.report import check_config, summary, warnings
from tracker.config.schema import (
    _FIELDS,  # the example config's test checks it documents every key
    EMBEDDED_POOL_HEADROOM,
    ENV_PREFIX,
    ENVIRONMENT,
    LOG_FORMATS,
    LOG_LEVELS,
    MAX_BODY_BYTES,
    MIN_BODY_BYTES,
    MIN_POOL,
    MIN_POSTBACK_TOKEN_CHARS,
)
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

__all__ = ["ConfigError", "Problem", "check_config", "load", "redact_dsn", "secrets_of", "summary",
           "warnings"]
