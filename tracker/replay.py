"""`tracker replay [--vendor V] [--since TIME]`: parse stored raw postbacks again (say after a
mapping fix) and apply what they now say through the reducer.

A replay appends only the observations that the new parse adds to those the row has already
produced (a code now mapped, a field now read; tracker.observations.postback_id says which):
running it twice changes nothing the second time. A row that no longer parses keeps what it
produced before and gets the error (tracker.postback_problems); a row that now parses has its
error cleared. Polls are not pushed out again. Safe while the daemon runs: rows are locked batch
by batch, and the daemon's worker skips them.
"""
from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone
from typing import TextIO

import asyncpg

from tracker.config_types import VENDORS, Config
from tracker.db import queries as q
from tracker.db.oneshot import on_database
from tracker.postbacks.process import Outcome, replay_rows
from tracker.db import clock as db_clock

BATCH = 500


def _since(text: str | None) -> datetime | None:
    if not text:
        return None
    at = datetime.fromisoformat(text.strip())
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


class Progress:
    """A text progress bar on stderr: `replay [#####.....]  1200/2400 postbacks`."""

    def __init__(self, total: int, stream: TextIO | None = None, width: int = 30) -> None:
        self.total, self.stream, self.width = total, stream or sys.stderr, width

    def show(self, done: int) -> None:
        filled = self.width * min(done, self.total) // self.total if self.total else self.width
        self.stream.write(f"\rreplay [{'#' * filled}{'.' * (self.width - filled)}] "
                          f"{done}/{self.total} postbacks")
        self.stream.flush()

    def end(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def reports_kept_for(config: Config) -> timedelta | None:
    """How long retention keeps a postback's reports (observations, or their message with its
    history): None, for ever."""
    days = [d for d in (config.retention.observations_days, config.retention.final_messages_days)
            if d > 0]
    return timedelta(days=min(days)) if days else None


async def replay(conn: asyncpg.Connection, config: Config, vendor: str | None,
                 since: datetime | None, progress: Progress | None = None) -> Outcome:
    """Replay what `vendor` (None: every vendor) sent since `since` (None: ever), but never a
    postback older than its reports' retention (reports_kept_for): retention may have removed
    what it produced, and a replay would add it again (a report of a message long gone, kept as
    an orphan that names a missing message). Those left out are said on the progress stream."""
    progress = progress or Progress(0)
    kept = reports_kept_for(config)
    if kept is not None:
        kept_from = db_clock.now() - kept
        if since is None or since < kept_from:
            older = await conn.fetchval(q.COUNT_REPLAY_POSTBACKS, vendor, since, kept_from)
            if older:
                progress.stream.write(
                    f"replay: {older} postbacks received before {kept_from:%Y-%m-%d %H:%M}Z left "
                    f"out: retention keeps reports {kept.days} days (retention.observations_days, "
                    "final_messages_days), and replaying them would add back what it removed\n")
            since = kept_from
    total = await conn.fetchval(q.COUNT_REPLAY_POSTBACKS, vendor, since, None)
    progress.total = total
    out, last = Outcome(), 0
    progress.show(0)
    while True:
        async with conn.transaction():
            rows = await conn.fetch(q.REPLAY_POSTBACKS, last, vendor, since, BATCH)
            if not rows:
                break
            out.add(await replay_rows(conn, config, rows))
        last = rows[-1]["id"]
        progress.show(out.rows)
    progress.end()
    return out


def main(args, config: Config) -> int:
    vendor = args.vendor
    if vendor is not None and vendor not in VENDORS:
        print(f"replay: unknown vendor {vendor!r}; one of {', '.join(VENDORS)}", file=sys.stderr)
        return 2
    try:
        since = _since(args.since)
    except ValueError:
        print(f"replay: --since {args.since!r} is not an ISO 8601 time", file=sys.stderr)
        return 2

    async def go(conn: asyncpg.Connection) -> int:
        if not await conn.fetchval(q.POSTBACKS_TABLE_EXISTS):
            print("replay: the database has no tracker.postbacks: run `tracker migrate`",
                  file=sys.stderr)
            return 2
        out = await replay(conn, config, vendor, since)
        print(f"replayed {out.rows} postbacks: {out.observations} new observations, "
              f"{out.transitions} transitions, {out.unchanged} unchanged, "
              f"{out.unreadable} unreadable", file=sys.stderr)
        return 0

    return on_database(config, "replay", go)
