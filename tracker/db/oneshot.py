"""A one-off command's connection (`tracker migrate`, `replay`, `sinks ...`): the configured DSN;
else the embedded cluster a running daemon already has (found by its private socket, so that a
command never tries to start a second postmaster on the daemon's data directory); else the
embedded cluster started for the command alone. Only `tracker migrate` may create that cluster:
the others, which read or replay, refuse one that does not exist yet (a mistyped state_dir left a
new 46 MB cluster behind) in one line and exit code 2, creating nothing. A database that cannot
be reached, or refuses, is one line on stderr (the DSN's password scrubbed) and exit code 1,
never a traceback."""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Awaitable, Callable

import asyncpg

from tracker.config import redact_dsn
from tracker.config_types import Config
from tracker.db import is_outage
from tracker.db.embedded import EmbeddedError, EmbeddedPostgres, StateDirError, running_dsn

Job = Callable[[asyncpg.Connection], Awaitable[int]]
CREATES_CLUSTER = frozenset({"migrate"})  # `tracker run` starts its own (tracker.app)


def on_database(config: Config, command: str, job: Job) -> int:
    """`job`'s exit code, run on one connection; 1 when the database fails it, 2 when there is
    none to run it on."""
    async def go(dsn: str) -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return await job(conn)
        finally:
            await conn.close()

    state_dir = Path(config.database.state_dir)
    dsn = config.database.dsn or running_dsn(state_dir)
    try:
        if dsn:
            return asyncio.run(go(dsn))
        if command not in CREATES_CLUSTER and not _has_cluster(state_dir):
            print(f"{command}: no database at {state_dir.absolute()} (database.state_dir; no database.dsn): "
                  "run `tracker migrate` first", file=sys.stderr)
            return 2
        with EmbeddedPostgres(state_dir) as pg:
            return asyncio.run(go(pg.dsn))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, EmbeddedError, StateDirError) as e:
        refused = isinstance(e, asyncpg.PostgresError) and not is_outage(e)
        what = "the database refused" if refused else "database unavailable"
        print(f"{command}: {what}: {type(e).__name__}: {redact_dsn(str(e))}", file=sys.stderr)
        return 1


def _has_cluster(state_dir: Path) -> bool:
    """Whether an embedded cluster was made under ``state_dir`` (tracker.db.state_dir's sign)."""
    try:
        return (state_dir / "pgdata" / "PG_VERSION").is_file()
    except OSError:  # a directory we may not enter: starting the cluster says why, as before
        return True
