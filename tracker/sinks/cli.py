"""`tracker sinks status | redrive NAME [--since TIME] | enable NAME | forget NAME`: the
operator's handles on the sinks. They work on the database, with or without the daemon running (its embedded cluster
is found by its private socket, as `tracker replay` does); a running daemon is woken by
NOTIFY tracker_events and sends redriven events at once."""
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
           "oldest_undelivered_age", "last_success_at", "disabled", "last_error", "disabled_reason")


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


def not_for(action: str, name: str, config: Config) -> str | None:
    """Why `action` cannot be taken on sink `name`, or None. Any sink keeps dead letters (a NATS
    sink's: events the broker refused for good), so any may be redriven; only a webhook sink is
    ever disabled (by a 410), so only one is enabled."""
    webhooks, nats = config.sinks.webhooks, config.sinks.nats
    if action == "enable" and name in nats:
        return f"{name!r} is a NATS sink: only a webhook sink is ever disabled (by a 410)"
    if action == "enable" and name not in webhooks:
        return f"no webhook sink named {name!r}; webhook sinks: {', '.join(webhooks) or 'none configured'}"
    if name not in webhooks and name not in nats:
        return f"no sink named {name!r}; configured sinks: {', '.join([*webhooks, *nats]) or 'none'}"
    return None


def main(args, config: Config) -> int:
    action = args.sinks_command
    if action == "status":
        async def show(conn: asyncpg.Connection) -> int:
            rows = await store.status(conn)
            print(table(rows) if rows else "no sinks have run yet")
            return 0
        return _on_database(config, show)

    name = args.name
    if action == "forget":
        if name in config.sinks.webhooks or name in config.sinks.nats:
            print(f"sinks forget: {name!r} is still configured; take it out of the configuration "
                  "(and restart the daemons) first", file=sys.stderr)
            return 2

        async def forget(conn: asyncpg.Connection) -> int:
            if not await store.forget(conn, name):
                print(f"sinks forget: no sink named {name!r} in the database", file=sys.stderr)
                return 1
            print(f"sink {name} forgotten: its cursor, pending deliveries and dead letters are gone")
            return 0
        return _on_database(config, forget)
    refused = not_for(action, name, config)
    if refused:
        print(f"sinks {action}: {refused}", file=sys.stderr)
        return 2
    if action == "enable":
        async def enable(conn: asyncpg.Connection) -> int:
            if not await store.enable(conn, name):
                print(f"sinks enable: {name!r} has not run yet; nothing to enable", file=sys.stderr)
                return 1
            print(f"sink {name} enabled: not disabled, not paused; its waiting events are due now")
            return 0
        return _on_database(config, enable)

    try:
        since = parse_since(args.since)
    except ValueError:
        print(f"sinks redrive: --since {args.since!r} is not an ISO 8601 time", file=sys.stderr)
        return 2

    async def redrive(conn: asyncpg.Connection) -> int:
        n = await store.redrive(conn, name, since)
        print(f"sink {name}: {n} dead letter{'s' if n != 1 else ''} to send again"
              + (f" (events recorded since {_show(since)})" if since else ""))
        return 0
    return _on_database(config, redrive)
