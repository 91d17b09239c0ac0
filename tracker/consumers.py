"""`tracker consumers status | register NAME | forget NAME`: the operator's handles on the
outbox's SQL consumers (tracker.read_events / ack_events; sinks have `tracker sinks`).

Retention keeps every event a known consumer has not acknowledged. `register` makes a consumer
known before its first read, so that a backlog older than `retention.transitions_days` is kept
for it; `forget` drops the cursor of a consumer gone for good, which otherwise holds retention
back for ever. Both work on the database, with or without the daemon running (tracker.db.oneshot).
A name that is not a consumer's (empty, over 200 characters, a sink's 'sink:<name>') is refused
by the database: one line on stderr, exit code 1, nothing changed."""
from __future__ import annotations

import sys

import asyncpg

from tracker.config_types import Config
from tracker.db import queries as q
from tracker.db.oneshot import on_database
from tracker.sinks.cli import table

COLUMNS = ("consumer", "position", "events_behind", "oldest_unacked_age", "updated_at")


def main(args, config: Config) -> int:
    action = args.consumers_command

    async def run(conn: asyncpg.Connection) -> int:
        if action == "status":
            rows = await conn.fetch(q.CONSUMER_STATUS)
            print(table(rows, COLUMNS) if rows else "no consumers known yet")
        elif action == "register":
            position = await conn.fetchval(q.REGISTER_CONSUMER, args.name)
            print(f"consumer {args.name} known, at position {position}: retention keeps every "
                  "event after it until the consumer acknowledges it")
        elif not await conn.fetchval(q.FORGET_CONSUMER, args.name):
            print(f"consumers forget: no consumer named {args.name!r}", file=sys.stderr)
            return 1
        else:
            print(f"consumer {args.name} forgotten: retention no longer waits for it")
        return 0

    return on_database(config, "consumers", run)
