"""What ``tracker check-config`` prints: a short, redacted summary, or every problem."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Mapping, TextIO
from urllib.parse import urlsplit

from tracker import adapters
from tracker.config.dsn import asyncpg_target
from tracker.config.listen import parse_listen
from tracker.config.loader import load
from tracker.config.problems import ConfigError
from tracker.config.redaction import redact_dsn
from tracker.config_types import Config
from tracker.sinks import described as sinks_described
from tracker.sinks.checks import public_url


def dsn_target(dsn: str) -> str:
    """Where a DSN connects, for the summary: host:port (or socket) and database only, read from
    the DSN with its passwords hidden, as asyncpg reads it (host lists, ?host=, percent-encoding).
    Never a user or a password, whatever characters the password holds (one that makes asyncpg
    read the DSN otherwise than its hidden form is refused before: tracker.config.dsn)."""
    return asyncpg_target(redact_dsn(dsn)) or "(not readable with its password hidden)"


def _shown(url: str) -> str:
    """A URL as the summary shows it: scheme://host[:port], and a sign that a path (which may
    hold a token) was left out, so that the URL does not look cut short by mistake."""
    parts = urlsplit(url)
    return public_url(url) + ("/... (path not shown)" if parts.path.strip("/") or parts.query else "")


def summary(cfg: Config) -> list[str]:
    """A short, redacted description of a configuration."""
    db = (f"dsn {dsn_target(cfg.database.dsn)}" if cfg.database.dsn
          else f"embedded cluster in {cfg.database.state_dir}")
    lines = [
        f"database: {db}",
        f"http.listen: {cfg.http.listen}",
        f"http.ops_listen: {cfg.http.ops_listen or '(same listener)'}",
        f"log: level={cfg.log.level} format={cfg.log.format}",
    ]
    for v in cfg.vendors.values():
        if not v.enabled:
            lines.append(f"vendor {v.name}: disabled")
            continue
        adapter = adapters.get(v.name)
        notes = ([f"base_url={_shown(v.base_url) if v.base_url else '(unset: not polled)'}"]
                 if adapter.POLLS else ["never polled (postbacks only)"])
        pushes = adapter.PUSHES  # a vendor that never calls back needs no token
        if pushes and not v.postback_token:
            notes.append("no postback_token (postbacks refused)")
        elif pushes and (previous := v.previous_secrets()):
            notes.append(f"{' and '.join(previous)} accepted too (a rotation: remove "
                         "it once tracker_postbacks_previous_token_total stops rising)")
        lines.append(f"vendor {v.name}: enabled, {', '.join(notes)}")
    lines += sinks_described.summary(cfg.sinks)
    return lines


def _reached(listen: str) -> bool:
    """Does a listener take connections from other hosts (any of its addresses not loopback)?"""
    listener = parse_listen(listen)
    return not isinstance(listener, str) and not all(a.is_loopback for a in listener.addresses)


def warnings(cfg: Config) -> list[str]:
    """What is allowed but exposes more than an operator may mean to (check-config prints it,
    `tracker run` logs it): the operations endpoints on an address others reach."""
    http = cfg.http
    if not http.ops_listen and _reached(http.listen):
        return [f"/metrics, /readyz and /status are served on the postback listener ({http.listen}), "
                "which vendors reach: set http.ops_listen to an address only your monitoring "
                "reaches" + ("" if http.status_token else ", and http.status_token")]
    if http.ops_listen and not http.status_token and _reached(http.ops_listen):
        return [f"/status is served on {http.ops_listen} (http.ops_listen) without http.status_token: "
                "whoever reaches that address reads it (vendor errors, volumes, consumers)"]
    return []


def check_config(path: str | None, env: Mapping[str, str] | None = None, out: TextIO | None = None) -> int:
    """``tracker check-config``: 0 and a summary when the configuration is valid, else 2 and every problem."""
    out = sys.stdout if out is None else out
    env = os.environ if env is None else env
    try:
        cfg = load(path, env)
    except ConfigError as e:
        n = len(e.problems)
        print(f"config has {n} problem{'s' if n != 1 else ''}:", file=out)
        for p in e.problems:
            print(str(p), file=out)
        return 2
    if not cfg.database.dsn:  # what `run` would refuse before touching the directory
        from tracker.db.embedded import check_state_dir
        refused = check_state_dir(Path(cfg.database.state_dir))
        if refused is not None:
            print("config has 1 problem:", file=out)
            print(f"database.state_dir = {cfg.database.state_dir}: {refused}", file=out)
            return 2
    print(f"config OK: {cfg.source or 'defaults'}", file=out)
    for line in summary(cfg):
        print(f"  {line}", file=out)
    for line in warnings(cfg):
        print(f"warning: {line}", file=out)
    return 0
