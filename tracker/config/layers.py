"""The file and environment layers of a configuration, read key by key and merged (the
environment wins), with every problem found on the way."""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from typing import Any, Mapping

from tracker.config.listen import Listener
from tracker.config.problems import Problem
from tracker.config.schema import (
    _SECRETS,
    _SECTIONS,
    ENV_PREFIX,
    ENVIRONMENT,
    OTHER_ENV_NAMES,
    _allowed_keys,
    _suggest,
)
from tracker.config.schema import whose as _whose
from tracker.config_types import VENDORS
from tracker.sinks import settings as sink_settings


def _env_names() -> dict[str, str]:
    """Every setting's environment name, keyed by its parts joined with one underscore (lower
    case): TRACKER_DATABASE_DSN's key finds TRACKER_DATABASE__DSN."""
    names = [f"{ENV_PREFIX}{s.upper()}__{k.upper()}" for s in _SECTIONS for k in _allowed_keys(s)]
    names += [f"{ENV_PREFIX}VENDORS__{v.upper()}__{k.upper()}"
              for v in VENDORS for k in _allowed_keys("vendors", v)]
    names += [f"{ENV_PREFIX}SINKS__{k.upper()}" for k in sink_settings.GLOBAL_KEYS]
    return {n.replace("__", "_").lower(): n for n in names}


def _not_a_key(key: str, vendor: str | None, hint: str, quoted: bool = False) -> str:
    """Why a key is refused: another vendor's (said so: put in the wrong table), or unknown."""
    if (owners := _whose(key, vendor)) is not None:
        base = key.removesuffix("_file")
        return f"{base} is not a setting of {vendor} (it is {owners}): in the wrong vendor's table?"
    return f"unknown key '{key}'{hint}" if quoted else f"unknown key{hint}"


@dataclass
class _Raw:
    value: Any
    file: str  # where it came from: config path or "environment"
    key: str  # dotted key or env var name
    from_env: bool


class _Layers:
    """The raw values of one load: (section, vendor) -> layer -> key, and the problems so far."""

    def __init__(self, path: str | None, env: Mapping[str, str]):
        self.env = env
        self.path = path
        self.problems: list[Problem] = []
        # (section, vendor or None) -> layer ("file"/"env") -> key -> _Raw
        self.layers: dict[tuple[str, str | None], dict[str, dict[str, _Raw]]] = {}
        self._merged: dict[tuple[str, str | None], dict[str, _Raw]] = {}
        self.listeners: dict[str, Listener] = {}  # "listen" / "ops_listen" -> checked address
        self._bad_keys: set[str] = set()  # keys already reported: cross-checks leave them alone
        self.sinks = sink_settings.SinkSettings(path, env)  # [sinks...]: tracker.sinks.settings

    def problem(self, file: str, key: str, reason: str) -> None:
        self.problems.append(Problem(file, key, reason))
        self._bad_keys.add(key)

    def _put(self, section: str, vendor: str | None, layer: str, key: str, raw: _Raw) -> None:
        self.layers.setdefault((section, vendor), {}).setdefault(layer, {})[key] = raw

    # ---- file layer

    def read_file(self) -> None:
        if self.path is None:
            return
        try:
            with open(self.path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as e:
            self.problem(self.path, "", f"cannot read config file: {e.strerror or e}")
            return
        except UnicodeDecodeError as e:
            self.problem(self.path, "", f"not UTF-8 text (byte offset {e.start})")
            return
        except tomllib.TOMLDecodeError as e:
            msg = str(e)
            m = re.search(r"\s*\(at line (\d+), column (\d+)\)\s*$", msg)
            if m:
                self.problem(self.path, f"line {m.group(1)}, column {m.group(2)}",
                             f"TOML syntax error: {msg[:m.start()]}")
            else:
                self.problem(self.path, "", f"TOML syntax error: {msg}")
            return
        for top, table in data.items():
            if top == "vendors":
                if not isinstance(table, dict):
                    self.problem(self.path, top, "expected a table of [vendors.<vendor>] tables")
                    continue
                for vendor, vtable in table.items():
                    key = f"vendors.{vendor}"
                    if vendor not in VENDORS:
                        self.problem(self.path, key, f"unknown vendor{_suggest(vendor, VENDORS)}; "
                                     f"known: {', '.join(VENDORS)}")
                    elif not isinstance(vtable, dict):
                        self.problem(self.path, key, "expected a table")
                    else:
                        self._file_table("vendors", vendor, vtable)
            elif top in _SECTIONS:
                if not isinstance(table, dict):
                    self.problem(self.path, top, "expected a table")
                else:
                    self._file_table(top, None, table)
            elif top == "sinks":
                self.sinks.read_file(table)
            else:
                self.problem(self.path, top,
                             f"unknown section{_suggest(top, [*_SECTIONS, 'vendors'])}")

    def _file_table(self, section: str, vendor: str | None, table: dict[str, Any]) -> None:
        assert self.path is not None
        prefix = f"{section}.{vendor}" if vendor else section
        allowed = _allowed_keys(section, vendor)
        for key, value in table.items():
            dotted = f"{prefix}.{key}"
            if key not in allowed:
                hint = " (it is taken from the section name)" if key == "name" and vendor else ""
                self.problem(self.path, dotted, _not_a_key(key, vendor, hint or _suggest(key, allowed)))
                continue
            self._put(section, vendor, "file", key, _Raw(value, self.path, dotted, False))

    # ---- environment layer

    def read_env(self) -> None:
        for name, value in self.env.items():
            if not name.upper().startswith(ENV_PREFIX) or name.upper() in OTHER_ENV_NAMES:
                continue
            if "__" not in name:
                # A setting written with one underscore (TRACKER_DATABASE_DSN) would be silently
                # ignored; any other name (TRACKER_HOME, TRACKER_DATABASE_HOST: a deployment
                # tool's) is none of ours.
                meant = _env_names().get(name.lower())
                if meant:
                    self.problem(ENVIRONMENT, name, "unknown: a setting is named TRACKER_<SECTION>__"
                                 "<KEY> or TRACKER_VENDORS__<VENDOR>__<KEY>, two underscores between "
                                 f"the parts (did you mean '{meant}'?)")
                continue
            parts = name[len(ENV_PREFIX):].lower().split("__")
            section = parts[0]
            if section == "sinks":
                self.sinks.read_env(name, parts[1:], value)
                continue
            if section == "vendors":
                if len(parts) != 3:
                    self.problem(ENVIRONMENT, name, "expected TRACKER_VENDORS__<VENDOR>__<KEY>")
                    continue
                vendor, key = parts[1], parts[2]
                if vendor not in VENDORS:
                    self.problem(ENVIRONMENT, name, f"unknown vendor '{vendor}'"
                                 f"{_suggest(vendor, VENDORS)}; known: {', '.join(VENDORS)}")
                    continue
            elif section in _SECTIONS:
                if len(parts) != 2:
                    self.problem(ENVIRONMENT, name, "expected TRACKER_<SECTION>__<KEY>")
                    continue
                vendor, key = None, parts[1]
            else:
                self.problem(ENVIRONMENT, name,
                             f"unknown section '{section}'{_suggest(section, [*_SECTIONS, 'vendors'])}")
                continue
            allowed = _allowed_keys(section, vendor)
            if key not in allowed:
                self.problem(ENVIRONMENT, name, _not_a_key(key, vendor, _suggest(key, allowed), quoted=True))
                continue
            self._put(section, vendor, "env", key, _Raw(value, ENVIRONMENT, name, True))

    # ---- merging

    def merged(self, section: str, vendor: str | None) -> dict[str, _Raw]:
        if (section, vendor) not in self._merged:
            self._merged[(section, vendor)] = self._merge(section, vendor)
        return self._merged[(section, vendor)]

    def _merge(self, section: str, vendor: str | None) -> dict[str, _Raw]:
        layers = self.layers.get((section, vendor), {})
        file_l, env_l = dict(layers.get("file", {})), layers.get("env", {})
        for secret in _SECRETS.get(section, ()):
            for layer in (file_l, env_l):
                if secret in layer and f"{secret}_file" in layer:
                    a, b = layer[secret], layer[f"{secret}_file"]
                    self.problem(b.file, b.key, f"give either {a.key} or {b.key}, not both")
            if secret in env_l or f"{secret}_file" in env_l:  # the environment replaces the file's pair
                file_l.pop(secret, None)
                file_l.pop(f"{secret}_file", None)
        file_l.update(env_l)
        return file_l
