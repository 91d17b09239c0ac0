"""`tracker migrate`: apply the numbered files in sql/ once each, in order, under an advisory
lock so that several replicas starting at once apply each file exactly once."""
from __future__ import annotations

import asyncio
import functools
import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from tracker.db import queries as q
from tracker.logging import get_logger

log = get_logger("tracker.migrate")
LOCK_RETRY_S = 0.5
LOCK_WAIT_LOG_S = 10.0

_NAME = re.compile(r"^(\d+)_([\w-]+)\.sql$")


def sql_dir() -> Path:
    here = Path(__file__).resolve().parent.parent
    for candidate in (here.parent / "sql", here / "_sql"):  # source tree, then installed wheel
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("the tracker's sql/ directory is missing from this installation")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    sql: str
    sha256: str


# Versions a release applied and a later one withdrew (what they did is done otherwise): a
# database holding one was not migrated by a newer release.
RETIRED = {26: "stranded first polls (the poller's start makes them due)",
           31: "the time a report stands for (decided in Python; never released)"}
# Versions whose earlier file a later migration mends (makes what the file became): once that one
# is applied, the earlier file's record is brought up to this release's, said once, not at every start.
MENDED_BY = {25: 32, 27: 32}
FILE_TRIES = 12  # a file that meets a lock held elsewhere (MIGRATION_LOCK_TIMEOUT) is tried again
FILE_RETRY_S = 1.0


@functools.cache
def migrations() -> tuple[Migration, ...]:
    """The migrations this process was installed with, read once. A release installed in place
    while the process runs (newer files in sql/) does not change what it expects of the database:
    /readyz asks "is this process's schema there", not "is the newest on disk applied"."""
    found = []
    for path in sorted(sql_dir().iterdir()):
        m = _NAME.match(path.name)
        if m:
            data = path.read_bytes()
            found.append(Migration(int(m.group(1)), m.group(2), path, data.decode(),
                                   hashlib.sha256(data).hexdigest()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a number in {sql_dir()}")
    return tuple(sorted(found, key=lambda m: m.version))


async def applied(conn: asyncpg.Connection) -> set[int]:
    if not await conn.fetchval(q.MIGRATIONS_TABLE_EXISTS):
        return set()
    return {r["version"] for r in await conn.fetch(q.APPLIED_MIGRATIONS)}


async def pending(conn: asyncpg.Connection) -> list[Migration]:
    done = await applied(conn)
    return [m for m in migrations() if m.version not in done]


async def migrate(conn: asyncpg.Connection) -> list[Migration]:
    """Apply what is missing; return what this call applied."""
    await _take_lock(conn)
    try:
        await conn.execute(q.CREATE_MIGRATIONS_TABLE)
        done = await _check_applied(conn)
        todo = [m for m in migrations() if m.version not in done]
        for m in todo:
            await _apply(conn, m)
        return todo
    finally:
        await conn.execute(q.MIGRATION_UNLOCK)


async def _check_applied(conn: asyncpg.Connection) -> set[int]:
    """The versions applied, after saying what does not match this release's files: versions it
    does not have (a newer release applied them: gone back without restoring, deploy/
    OPERATIONS.md, "Upgrading"), and ones applied from another file (one edited or renamed after
    a database applied it: that database kept the old one's schema, silently)."""
    mine = {m.version: m for m in migrations()}
    rows = await conn.fetch(q.APPLIED_MIGRATION_FILES)
    if newer := [r["version"] for r in rows if r["version"] not in mine and r["version"] not in RETIRED]:
        log.warning("the database holds migrations this release does not have: a newer "
                    "release applied them", versions=newer)
    done = {r["version"] for r in rows}
    unhashed = []
    for r in rows:
        m = mine.get(r["version"])
        if m is None:
            continue
        if r["name"] != m.name or r["sha256"] not in (None, m.sha256):
            if MENDED_BY.get(m.version) in done:
                log.info("a migration applied from an earlier file was mended by a later one",
                         version=m.version, applied=r["name"], mended_by=MENDED_BY[m.version])
                await conn.execute(q.RECORD_MENDED_MIGRATION, m.version, m.name, m.sha256)
            else:
                log.warning("a migration was applied from another file than this release's: its "
                            "schema may differ", version=m.version, applied=r["name"], file=m.path.name)
        elif r["sha256"] is None:
            unhashed.append(m)
    if unhashed:
        await conn.execute(q.KEEP_MIGRATION_HASHES, [m.version for m in unhashed],
                           [m.sha256 for m in unhashed])
    return done


async def _apply(conn: asyncpg.Connection, m: Migration) -> None:
    """One file in one transaction, its locks waited for MIGRATION_LOCK_TIMEOUT at most (then
    the file is tried again, FILE_TRIES times): behind another session's open transaction, a
    lock it waited for held every writer of the table queued for as long. A deadlock with the
    daemons' statements is tried again too."""
    for attempt in range(1, FILE_TRIES + 1):
        try:
            async with conn.transaction():
                await conn.execute(q.MIGRATION_LOCK_TIMEOUT)
                await conn.execute(m.sql)
                await conn.execute(q.RECORD_MIGRATION, m.version, m.name, m.sha256)
            return
        except (asyncpg.LockNotAvailableError, asyncpg.DeadlockDetectedError) as e:
            if attempt == FILE_TRIES:
                raise
            log.warning("migration met a lock another session holds: tried again", version=m.version,
                        name=m.name, attempt=attempt, error=type(e).__name__)
            await asyncio.sleep(FILE_RETRY_S)


async def _take_lock(conn: asyncpg.Connection) -> None:
    """Take the migration lock, asking again every LOCK_RETRY_S, and saying every
    LOCK_WAIT_LOG_S who holds it. A blocking pg_advisory_lock waited without a word (for up to
    the unit's TimeoutStartSec), and a `tracker migrate` stopped meanwhile left its server
    session queued on the lock until the holder let go."""
    waited_since = None
    logged_at = 0.0
    while not await conn.fetchval(q.TRY_MIGRATION_LOCK):
        now = time.monotonic()
        if waited_since is None:
            waited_since = now
        if now - logged_at >= LOCK_WAIT_LOG_S:
            logged_at = now
            holder = await conn.fetchrow(q.MIGRATION_LOCK_HOLDER)
            log.warning("waiting for the migration lock: another process migrates",
                        waited_s=round(now - waited_since),
                        holder_pid=holder["pid"] if holder else None,
                        holder_application=holder["application_name"] if holder else None,
                        holder_connected_s=round(holder["connected_s"]) if holder else None)
        await asyncio.sleep(LOCK_RETRY_S)
