"""`tracker migrate`: apply the numbered files in sql/ once each, in order, under an advisory
lock so that several replicas starting at once apply each file exactly once."""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from tracker.db import queries as q

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


@functools.cache
def migrations() -> tuple[Migration, ...]:
    """The migrations this process was installed with, read once. A release installed in place
    while the process runs (newer files in sql/) does not change what it expects of the database:
    /readyz asks "is this process's schema there", not "is the newest on disk applied"."""
    found = []
    for path in sorted(sql_dir().iterdir()):
        m = _NAME.match(path.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), path))
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
    await conn.execute(q.MIGRATION_LOCK)
    try:
        await conn.execute(q.CREATE_MIGRATIONS_TABLE)
        todo = await pending(conn)
        for m in todo:
            async with conn.transaction():
                await conn.execute(m.path.read_text())
                await conn.execute(q.RECORD_MIGRATION, m.version, m.name)
        return todo
    finally:
        await conn.execute(q.MIGRATION_UNLOCK)
