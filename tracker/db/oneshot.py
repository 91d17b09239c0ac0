"""A one-off command's connection (`tracker migrate`, `replay`, `sinks ...`): the configured DSN;
else the embedded cluster a running daemon already has (found by its private socket, so that a
command never tries to start a second postmaster on the daemon's data directory); else the
embedded cluster started for the command alone. Only `tracker migrate` may create that cluster:
the others, which read or replay, refuse one that does not exist yet (a mistyped state_dir left a
new 46 MB cluster behind) in one line and exit code 2, creating nothing; a state_dir that is not
the tracker's to take (another's files) is refused so by every command, as by the daemon. A
database that cannot be reached, or refuses, is one line on stderr (the DSN's password scrubbed)
and exit code 1, never a traceback. Standard output (or error) closed by its reader (`tracker
sinks status | head -1`) is no database outage: the command stops quietly, exit code 141 (see
output_closed)."""
from __future__ import annotations

import asyncio
import os
import select
import sys
from pathlib import Path
from typing import Awaitable, Callable

import asyncpg

from tracker.config import redact_dsn
from tracker.config_types import Config
from tracker.db import clock, passes, sessions, settings_refused
from tracker.db.embedded import EmbeddedError, EmbeddedPostgres, running_dsn
from tracker.db.state_dir import StateDirError, state_dir_refusal

Job = Callable[[asyncpg.Connection], Awaitable[int]]
CREATES_CLUSTER = frozenset({"migrate"})  # `tracker run` starts its own (tracker.app)


def on_database(config: Config, command: str, job: Job) -> int:
    """`job`'s exit code, run on one connection; 1 when the database fails it, 2 when there is
    none to run it on."""
    async def go(dsn: str) -> int:
        # named, so that pg_stat_activity (and migrate's waiting line) tells what a session is
        conn = await asyncpg.connect(dsn, server_settings={"application_name": f"tracker {command}"})
        try:
            await sessions.ids_past_now(conn)  # `replay` numbers events: never a lost time's ids
            await clock.read(conn)  # `replay` keeps what is younger than the database's time
            return await job(conn)
        finally:
            await conn.close()

    def run(dsn: str) -> int:
        code = asyncio.run(go(dsn))
        sys.stdout.flush()  # what is buffered fails here, not in the interpreter's exit
        sys.stderr.flush()
        return code

    state_dir = Path(config.database.state_dir)
    dsn = config.database.dsn or running_dsn(state_dir)
    try:
        if dsn:
            return run(dsn)
        refusal = state_dir_refusal(state_dir, None)  # what it holds: not the tracker's
        if refusal is not None:
            raise StateDirError(state_dir, refusal)
        if command not in CREATES_CLUSTER and not _has_cluster(state_dir):
            print(f"{command}: no database at {state_dir.absolute()} (database.state_dir; no database.dsn): "
                  "is the daemon's state_dir another (under systemd: TRACKER_DATABASE__STATE_DIR="
                  "/var/lib/tracker, deploy/OPERATIONS.md, \"One-off commands\")? For a new one: "
                  "`tracker migrate` makes it", file=sys.stderr)
            return 2
        with EmbeddedPostgres(state_dir) as pg:
            return run(pg.dsn)
    except StateDirError as e:  # a setting to change, as for the daemon (tracker.start_error)
        print(f"{command}: {e}", file=sys.stderr)
        return e.code
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, EmbeddedError) as e:
        if isinstance(e, BrokenPipeError) and output_closed():
            return OUTPUT_CLOSED
        refused = isinstance(e, asyncpg.PostgresError) and not passes(e)
        what = "the database refused" if refused else "database unavailable"
        print(f"{command}: {what}: {type(e).__name__}: {redact_dsn(str(e))}", file=sys.stderr)
        return 2 if settings_refused(e) else 1  # as the daemon (tracker.start_error)


# Exit code when the reader of standard output (or error) went away: 128 + SIGPIPE, what the shell reports
# for `cat`, `ls` and the like killed by SIGPIPE in the same place (Python ignores SIGPIPE and
# gets BrokenPipeError instead), so `set -o pipefail` scripts see what they see for any tool.
OUTPUT_CLOSED = 141


def output_closed() -> bool:
    """Whether standard output (or error: `2>&1 | head`) is a pipe or socket its reader has
    closed; if so, point it at /dev/null, and the caller says nothing. That is the conventional
    way (Python's documentation, signal module, "Note on SIGPIPE"): what is still buffered would
    fail again when the interpreter flushes it at exit ("Exception ignored ... BrokenPipeError",
    exit code 120). A BrokenPipeError from anything else, the database's socket included, while
    both are fine, stays a database error."""
    closed = False
    for stream in (sys.stdout, sys.stderr):
        try:
            fd = stream.fileno()
            poll = select.poll()
            poll.register(fd, select.POLLOUT)
            if not any(events & (select.POLLERR | select.POLLHUP) for _, events in poll.poll(0)):
                continue
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
            closed = True
        except (AttributeError, ValueError, OSError):  # no real stream (replaced, closed): not ours
            continue
    return closed


def _has_cluster(state_dir: Path) -> bool:
    """Whether an embedded cluster was made under ``state_dir`` (tracker.db.state_dir's sign)."""
    try:
        return (state_dir / "pgdata" / "PG_VERSION").is_file()
    except OSError:  # a directory we may not enter: starting the cluster says why, as before
        return True
