"""`tracker sinks status | redrive NAME [--since TIME] | enable NAME | forget NAME`: the
operator's handles on the sinks. They work on the database, with or without the daemon running (its embedded cluster
is found by its private socket, as `tracker replay` does); a running daemon is woken by
NOTIFY tracker_events and sends redriven events at once. A sink is known by the configuration
given, else by the database (tracker.sinks: name, kind), so that `enable` and `redrive` work
without the daemon's configuration, as `status` does. `forget` refuses a sink the configuration
given names, and one a daemon runs now (tracker.sink_runners, written by every daemon every few
seconds for the sinks it runs: store.forget)."""
from __future__ import annotations

import sys
from datetime import datetime, timezone
from typing import Awaitable, Callable

import asyncpg

from tracker.config_types import Config
from tracker.db.oneshot import on_database
from tracker.sinks import store

# disabled_reason last: a disabled sink's is a long sentence (why, and the command that
# enables it again), kept from pushing the other columns apart.
COLUMNS = ("sink", "kind", "position", "events_behind", "pending", "dead_letters",
           "oldest_undelivered_age", "last_success_at", "last_error_at", "paused_until", "disabled",
           "last_error", "disabled_reason")  # the long texts last


def parse_since(text: str | None) -> datetime | None:
    if not text:
        return None
    at = datetime.fromisoformat(text.strip())
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def _show(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    if hasattr(value, "total_seconds"):
        return f"{value.total_seconds():.1f}s"
    return str(value)


def table(rows, columns: tuple[str, ...] = COLUMNS) -> str:
    shown = [[_show(r[c]) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in shown)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in shown]
    return "\n".join(line.rstrip() for line in lines)


def _on_database(config: Config, job: Callable[[asyncpg.Connection], Awaitable[int]]) -> int:
    async def checked(conn: asyncpg.Connection) -> int:
        if not await conn.fetchval("SELECT to_regclass('tracker.sinks') IS NOT NULL"):
            print("sinks: the database has no tracker.sinks: run `tracker migrate`", file=sys.stderr)
            return 2
        return await job(conn)

    return on_database(config, "sinks", checked)


def configured_kind(name: str, config: Config) -> str | None:
    if name in config.sinks.webhooks:
        return "webhook"
    return "nats" if name in config.sinks.nats else None


def not_for(action: str, name: str, kind: str) -> str | None:
    """Why `action` cannot be taken on sink `name` of `kind`, or None. Any sink keeps dead
    letters (a NATS sink's: events the broker refused for good), so any may be redriven; only a
    webhook sink is ever disabled (by a 410), so only one is enabled."""
    if action == "enable" and kind == "nats":
        return f"{name!r} is a NATS sink: only a webhook sink is ever disabled (by a 410)"
    return None


def unknown(name: str, config: Config) -> str:
    names = ", ".join([*config.sinks.webhooks, *config.sinks.nats]) or "none"
    return (f"no sink named {name!r} in the configuration (configured sinks: {names}) nor in the "
            "database (`tracker sinks status` lists the sinks it has)")


def running(name: str, forget: store.Forget) -> str:
    seen = "; ".join(f"{ago:.0f} s ago by {runner}" for runner, ago in forget.running)
    return (f"a daemon is running sink {name!r} now: seen running it {seen} (tracker.sink_runners: "
            f"a daemon writes there every {store.SEEN_EVERY_S:.0f} s for each sink it runs, and "
            "removes that when it stops). Take the sink out of the configuration, restart every "
            "daemon, then forget it (a daemon killed without a stop counts as running it until "
            f"{store.SEEN_FRESH_S:.0f} s after it was last seen)")


def main(args, config: Config) -> int:
    action = args.sinks_command
    if action == "status":
        async def show(conn: asyncpg.Connection) -> int:
            rows = await store.status(conn)
            print(table(rows) if rows else "no sinks have run yet")
            return 0
        return _on_database(config, show)

    name = args.name
    kind = configured_kind(name, config)
    if action == "forget":
        if kind:
            print(f"sinks forget: {name!r} is still configured; take it out of the configuration "
                  "(and restart the daemons) first", file=sys.stderr)
            return 2

        async def forget(conn: asyncpg.Connection) -> int:
            done = await store.forget(conn, name)
            if not done.known:
                print(f"sinks forget: no sink named {name!r} in the database", file=sys.stderr)
                return 1
            if done.running:
                print(f"sinks forget: {running(name, done)}", file=sys.stderr)
                return 2
            print(f"sink {name} forgotten: its cursor, pending deliveries and dead letters are gone")
            return 0
        return _on_database(config, forget)

    refused = kind and not_for(action, name, kind)
    if refused:
        print(f"sinks {action}: {refused}", file=sys.stderr)
        return 2
    try:
        since = parse_since(args.since) if action == "redrive" else None
    except ValueError:
        print(f"sinks redrive: --since {args.since!r} is not an ISO 8601 time", file=sys.stderr)
        return 2

    async def act(conn: asyncpg.Connection) -> int:
        known = kind or await store.kind(conn, name)  # not in this configuration: the database's
        refused = unknown(name, config) if known is None else not_for(action, name, known)
        if refused:
            print(f"sinks {action}: {refused}", file=sys.stderr)
            return 2
        if action == "enable":
            if not await store.enable(conn, name):
                print(f"sinks enable: {name!r} has not run yet; nothing to enable", file=sys.stderr)
                return 1
            print(f"sink {name} enabled: not disabled, not paused; its waiting events are due now")
            return 0
        n = await store.redrive(conn, name, since)
        print(f"sink {name}: {n} dead letter{'s' if n != 1 else ''} to send again"
              + (f" (events recorded since {_show(since)})" if since else ""))
        return 0
    return _on_database(config, act)
