"""The [sinks...] configuration: reading, conversion and checks (DESIGN §7, docs/events.md).

    [sinks]                      poll_interval_s, batch_size
    [sinks.webhooks.<name>]      url | url_file, secrets | secrets_file, vendors, states,
                                 timeout_s, retry_schedule_s, concurrency, enabled
    [sinks.nats.<name>]          servers | servers_file, stream, subject_prefix, create_stream,
                                 duplicate_window_s, max_age_days, timeout_s, enabled

Environment: TRACKER_SINKS__<KEY>, TRACKER_SINKS__WEBHOOKS__<NAME>__<KEY>,
TRACKER_SINKS__NATS__<NAME>__<KEY>; lists are comma-separated there. tracker.config calls
`SinkSettings` and reports its problems with everything else's; secrets are never quoted.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit

from tracker.config.schema import MAX_DAYS
from tracker.config.secret_files import read_secret, secret_path
from tracker.config_types import VENDORS, NatsSinkConfig, SinksConfig, WebhookSinkConfig
from tracker.sinks import checks
from tracker.sinks.checks import (EVENT_STATES, MAX_BATCH, MAX_CONCURRENCY, MAX_RETRIES,
                                  MAX_RETRY_DELAY_S, MAX_TIMEOUT_S, NAME, NATS_SCHEMES, STREAM,
                                  SUBJECT_TOKEN, nats_credentials, public_url, url_problem)
from tracker.sinks.signing import BadSecret, parse_secret

__all__ = ["SinkSettings", "public_url"]

Problem = tuple[str, str, str]  # file, key, reason (tracker.config makes them Problems)

KINDS = ("webhooks", "nats")
GLOBAL_KEYS = {"poll_interval_s": "float", "batch_size": "int"}
KEYS: dict[str, dict[str, str]] = {
    "webhooks": {"url": "str", "url_file": "str", "secrets": "strlist", "secrets_file": "str",
                 "vendors": "strlist", "states": "strlist", "timeout_s": "float",
                 "retry_schedule_s": "floatlist", "concurrency": "int", "enabled": "bool"},
    "nats": {"servers": "strlist", "servers_file": "str", "stream": "str", "subject_prefix": "str",
             "create_stream": "bool", "duplicate_window_s": "float", "max_age_days": "float",
             "timeout_s": "float", "enabled": "bool"},
}
# Never quoted: server URLs may hold passwords, a webhook URL's path and query a token
# (secrets_of masks them in logs; problems say at most a URL's scheme and host: url_problem).
SECRET_KEYS = frozenset({"secrets", "servers", "url"})
# ... and each may be given as a file that holds it instead (a systemd credential): one value a
# line for a list. The file's name, the key, and where the value goes.
FILE_KEYS = {"webhooks": {"secrets_file": "secrets", "url_file": "url"},
             "nats": {"servers_file": "servers"}}

@dataclass
class Raw:
    value: Any
    file: str
    key: str  # dotted key, or the environment variable's name
    from_env: bool


class SinkSettings:
    """Collects [sinks...] values from the file and the environment, then builds SinksConfig."""

    def __init__(self, path: str | None, env: Mapping[str, str]):
        self.path, self.env = path, env
        self.problems: list[Problem] = []
        self.globals: dict[str, dict[str, Raw]] = {"file": {}, "env": {}}
        # (kind, name) -> layer -> key -> Raw
        self.sinks: dict[tuple[str, str], dict[str, dict[str, Raw]]] = {}

    def problem(self, raw_or_file: Raw | str, key: str, reason: str) -> None:
        if isinstance(raw_or_file, Raw):
            self.problems.append((raw_or_file.file, raw_or_file.key, reason))
        else:
            self.problems.append((raw_or_file, key, reason))

    # --- reading --------------------------------------------------------------------------------

    def read_file(self, table: Any) -> None:
        file = self.path or "(file)"
        if not isinstance(table, dict):
            self.problem(file, "sinks", "expected a table ([sinks], [sinks.webhooks.<name>], ...)")
            return
        for key, value in table.items():
            dotted = f"sinks.{key}"
            if key in GLOBAL_KEYS:
                self.globals["file"][key] = Raw(value, file, dotted, False)
            elif key in KINDS:
                if not isinstance(value, dict):
                    self.problem(file, dotted, f"expected a table of [{dotted}.<name>] tables")
                    continue
                for name, sink in value.items():
                    self._file_sink(key, name, sink)
            else:
                self.problem(file, dotted, f"unknown key; known: {', '.join([*GLOBAL_KEYS, *KINDS])}")

    def _file_sink(self, kind: str, name: str, table: Any) -> None:
        file, prefix = self.path or "(file)", f"sinks.{kind}.{name}"
        if not isinstance(table, dict):
            self.problem(file, prefix, "expected a table")
            return
        if not self._name_ok(file, prefix, name):
            return
        layer = self.sinks.setdefault((kind, name), {}).setdefault("file", {})
        for key, value in table.items():
            if key not in KEYS[kind]:
                self.problem(file, f"{prefix}.{key}", f"unknown key; known: {', '.join(KEYS[kind])}")
                continue
            layer[key] = Raw(value, file, f"{prefix}.{key}", False)

    def read_env(self, name: str, parts: list[str], value: str) -> None:
        """`parts`: the lower-cased name after TRACKER_SINKS__, split on "__"."""
        if len(parts) == 1 and parts[0] in GLOBAL_KEYS:
            self.globals["env"][parts[0]] = Raw(value, "environment", name, True)
            return
        if len(parts) != 3 or parts[0] not in KINDS:
            self.problem("environment", name, "expected TRACKER_SINKS__<KEY> or "
                         "TRACKER_SINKS__WEBHOOKS__<NAME>__<KEY> or TRACKER_SINKS__NATS__<NAME>__<KEY>")
            return
        kind, sink, key = parts
        if not self._name_ok("environment", name, sink):
            return
        if key not in KEYS[kind]:
            self.problem("environment", name, f"unknown key '{key}'; known: {', '.join(KEYS[kind])}")
            return
        self.sinks.setdefault((kind, sink), {}).setdefault("env", {})[key] = Raw(value, "environment", name, True)

    def _name_ok(self, file: str, key: str, name: str) -> bool:
        if NAME.fullmatch(name):
            return True
        self.problem(file, key, "a sink's name is 1 to 64 lower-case letters, digits, '-' or '_' "
                     "(it names the sink's cursor, its metrics and its environment variables)")
        return False

    # --- building -------------------------------------------------------------------------------

    def merged(self, layers: dict[str, dict[str, Raw]],
               files: Mapping[str, str] | None = None) -> dict[str, Raw]:
        """The file's values with the environment's over them; a key and its `_file` form
        (``files``) are one value: both in one layer is a problem, either in the environment
        replaces both in the file."""
        file_l, env_l = dict(layers.get("file", {})), layers.get("env", {})
        for b, a in (files or {}).items():
            for layer in (file_l, env_l):
                if a in layer and b in layer:
                    self.problem(layer[b], "", f"give either {layer[a].key} or {layer[b].key}, not both")
            if a in env_l or b in env_l:
                file_l.pop(a, None)
                file_l.pop(b, None)
        return {**file_l, **env_l}

    def build(self) -> SinksConfig:
        g = {k: self.convert(GLOBAL_KEYS[k], k, raw) for k, raw in self.merged(self.globals).items()}
        g = {k: v for k, v in g.items() if v is not None}
        if g.get("poll_interval_s", 1.0) <= 0:
            self.problem(self.merged(self.globals)["poll_interval_s"], "", "must be positive")
        if not 1 <= g.get("batch_size", 1) <= MAX_BATCH:
            self.problem(self.merged(self.globals)["batch_size"], "", f"must be 1 to {MAX_BATCH}")
        webhooks, nats = {}, {}
        for (kind, name), layers in sorted(self.sinks.items()):
            values = self.merged(layers, FILE_KEYS[kind])
            if self._misspelt(kind, name, layers, values):
                continue
            if kind == "webhooks":
                built = self.webhook(name, values)
                if built is not None:
                    webhooks[name] = built
            else:
                built = self.nats(name, values)
                if built is not None:
                    nats[name] = built
        for name in sorted(set(webhooks) & set(nats)):
            self.problem(self.path or "environment", f"sinks.nats.{name}",
                         f"a webhook sink is named {name!r} too; sink names must be unique")
        return SinksConfig(webhooks=webhooks, nats=nats, **g)

    def _misspelt(self, kind: str, name: str, layers: dict[str, dict[str, Raw]],
                  values: dict[str, Raw]) -> bool:
        """A sink named only by environment variables that lack where it delivers to: most likely
        a sink of the file, misspelt in a variable's name (TRACKER_SINKS__WEBHOOKS__BILLNG__ENABLED
        was reported as the file's sink `billng` missing its url and secrets). Said once, at the
        variable; True then."""
        needed = "url" if kind == "webhooks" else "servers"
        if "file" in layers or needed in values or f"{needed}_file" in values:
            return False
        named = sorted(n for (k, n), sink in self.sinks.items() if k == kind and "file" in sink)
        first = min(layers["env"].values(), key=lambda r: r.key)
        self.problem(first, "", f"names sink {name!r}, which the file has not, with no {needed}: "
                     "a misspelt sink name?" + (f" (the file's {kind}: {', '.join(named)})" if named else ""))
        return True

    def convert(self, kind: str, key: str, raw: Raw) -> Any:
        """The value as `kind`, or None after reporting why not (a secret is not quoted)."""
        try:
            return checks.convert(kind, raw.value, raw.from_env)
        except ValueError:
            shown = (" a value not shown (it may hold a secret)" if key in SECRET_KEYS
                     else f" {str(raw.value)[:60]!r}")
            self.problem(raw, "", f"expected {checks.KIND_TEXT[kind]}, got{shown}")
            return None

    def _values(self, kind: str, values: dict[str, Raw]) -> dict[str, Any]:
        """The values converted, a `_file` key's as read from its file (and under its key)."""
        out = {k: self.convert(KEYS[kind][k], k, raw) for k, raw in values.items()}
        for file_key, key in FILE_KEYS[kind].items():
            if out.get(file_key) is not None:
                text = self._read(values[file_key], out.pop(file_key))
                lines = None if text is None else tuple(x.strip() for x in text.splitlines() if x.strip())
                out[key] = lines if KEYS[kind][key] == "strlist" or lines is None else " ".join(lines)
                values[key] = values[file_key]  # its problems are the file key's
        return {k: v for k, v in out.items() if v is not None}

    def webhook(self, name: str, values: dict[str, Raw]) -> WebhookSinkConfig | None:
        prefix, before = f"sinks.webhooks.{name}", len(self.problems)
        given = self._values("webhooks", values)
        where = lambda key: values.get(key) or Raw(None, self.path or "environment", f"{prefix}.{key}", False)  # noqa: E731
        url = given.get("url")
        if url is None and "url" not in values:
            self.problem(where("url"), "", "required: the receiver's http:// or https:// URL")
        elif url is not None and (reason := url_problem(url, ("http", "https"))):
            self.problem(values["url"], "", reason)
        secrets = given.get("secrets")
        if secrets == () or (secrets is None and "secrets" not in values):
            self.problem(where("secrets"), "", "at least one whsec_ secret is required "
                         "(secrets = [...] or secrets_file = PATH): deliveries are always signed")
        for i, secret in enumerate(secrets or ()):
            try:
                parse_secret(secret)
            except BadSecret as e:
                self.problem(values["secrets"], "", f"secret {i + 1}: {e}")
        self._members(values, given, "vendors", VENDORS)
        self._members(values, given, "states", EVENT_STATES)
        self._bounded(values, given, "timeout_s", 0.0, MAX_TIMEOUT_S, strict_low=True)
        self._bounded(values, given, "concurrency", 1, MAX_CONCURRENCY)
        schedule = given.get("retry_schedule_s")
        if schedule is not None:
            if not 1 <= len(schedule) <= MAX_RETRIES:
                self.problem(values["retry_schedule_s"], "", f"expected 1 to {MAX_RETRIES} delays in seconds")
            elif any(not 0 <= d <= MAX_RETRY_DELAY_S for d in schedule):
                self.problem(values["retry_schedule_s"], "", "each delay must be 0 to 604800 s (7 days)")
        if len(self.problems) > before:
            return None
        return WebhookSinkConfig(name=name, **given)

    def nats(self, name: str, values: dict[str, Raw]) -> NatsSinkConfig | None:
        prefix, before = f"sinks.nats.{name}", len(self.problems)
        given = self._values("nats", values)
        servers = given.get("servers")
        if not servers:
            src = values.get("servers") or Raw(None, self.path or "environment", f"{prefix}.servers", False)
            if servers is not None or "servers" not in values:
                self.problem(src, "", "at least one server is required, e.g. [\"nats://127.0.0.1:4222\"]")
        for i, server in enumerate(servers or ()):
            if reason := url_problem(server, NATS_SCHEMES):
                self.problem(values["servers"], "", f"server {i + 1}: {reason}")
        if (servers and len(self.problems) == before and nats_credentials(servers) is None
                and any("%" in urlsplit(s.strip()).netloc for s in servers)):
            self.problem(values["servers"], "", "the servers name different users or passwords "
                         "(or some none), one of them percent-encoded: the NATS client sends "
                         "such a one as written; give every server the same credentials")
        stream = given.get("stream")
        if stream is not None and not STREAM.fullmatch(stream):
            self.problem(values["stream"], "", "a JetStream stream name: letters, digits, '-' and '_' only")
        prefix_value = given.get("subject_prefix")
        if prefix_value is not None and not all(SUBJECT_TOKEN.fullmatch(t) for t in prefix_value.split(".")):
            self.problem(values["subject_prefix"], "", "dot-separated subject tokens, none empty, "
                         "without spaces or the wildcards '*' and '>'")
        self._bounded(values, given, "timeout_s", 0.0, MAX_TIMEOUT_S, strict_low=True)
        self._bounded(values, given, "duplicate_window_s", 0.0, MAX_RETRY_DELAY_S, strict_low=True)
        self._bounded(values, given, "max_age_days", 0.0, MAX_DAYS)
        age_s = given.get("max_age_days", NatsSinkConfig.max_age_days) * 86400
        window_s = given.get("duplicate_window_s", NatsSinkConfig.duplicate_window_s)
        if 0 < age_s < window_s and "max_age_days" in values:  # JetStream refuses such a stream
            self.problem(values["max_age_days"], "", f"keeps events {age_s:g} s, less than "
                         f"duplicate_window_s ({window_s:g} s): JetStream refuses such a stream")
        if len(self.problems) > before:
            return None
        return NatsSinkConfig(name=name, **given)

    def _members(self, values: dict[str, Raw], given: dict[str, Any], key: str, known: tuple[str, ...]) -> None:
        for item in given.get(key, ()):
            if item not in known:
                self.problem(values[key], "", f"unknown {key[:-1]} {item[:60]!r}; known: {', '.join(known)}")

    def _bounded(self, values: dict[str, Raw], given: dict[str, Any], key: str, low: float, high: float,
                 strict_low: bool = False) -> None:
        v = given.get(key)
        if v is None:
            return
        too_low = v <= low if strict_low else v < low
        if too_low or v > high:
            self.problem(values[key], "", f"must be {'above' if strict_low else 'at least'} {low:g} "
                         f"and at most {high:g}, got {v:g}")

    def _read(self, raw: Raw, name: str) -> str | None:
        name = name.strip()
        if not name:
            self.problem(raw, "", "empty file name")
            return None
        p = secret_path(name, self.env, self.path)
        text, reason = read_secret(p)
        if text is None:
            self.problem(raw, "", f"cannot read secret file {str(p)!r}: {reason}")
        return text
