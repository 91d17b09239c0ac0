"""What the scaling bench's parts share: a private cluster with pg_stat_statements, a meter of
WAL, statements and PostgreSQL CPU, and small waits."""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import asyncpg

from _polling import cpu_seconds
from tracker.db.embedded import EmbeddedPostgres


TOKEN = "bench-token-0123456789"
BENCH = "/* bench */ "  # the bench's own statements, left out of the counts


@contextlib.contextmanager
def cluster(name: str, stats: bool = True, port: int = 55432):
    """A private cluster with pg_stat_statements loaded; yields (EmbeddedPostgres, postmaster pid)."""
    tmp = tempfile.mkdtemp(prefix=f"tracker-bench-{name}-")
    os.chmod(tmp, 0o755)
    pg = EmbeddedPostgres(Path(tmp) / "pg", port=port)
    try:
        pg.start()
        if stats:
            for setting in ("shared_preload_libraries = 'pg_stat_statements'",):
                pg._cmd("psql", "-h", str(pg.socket_dir), "-p", str(pg.port), "-U", "tracker", "-d", "postgres",
                        "-c", f"ALTER SYSTEM SET {setting}")
            pg.stop()
            pg.start()
            pg._cmd("psql", "-h", str(pg.socket_dir), "-p", str(pg.port), "-U", "tracker", "-d", pg.database,
                    "-c", "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        pid = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
        yield pg, pid
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


class Meter:
    """WAL bytes, statements (not the bench's own) and PostgreSQL CPU between start() and stop()."""

    def __init__(self, conn: asyncpg.Connection, pg_pid: int):
        self.conn, self.pg_pid = conn, pg_pid

    async def start(self) -> None:
        await self.conn.execute("SELECT pg_stat_statements_reset()")
        self.lsn = await self.conn.fetchval(BENCH + "SELECT pg_current_wal_lsn()")
        self.cpu = cpu_seconds(self.pg_pid, True)

    async def stop(self) -> dict:
        cpu = cpu_seconds(self.pg_pid, True) - self.cpu
        wal = await self.conn.fetchval(BENCH + "SELECT pg_current_wal_lsn() - $1::pg_lsn", self.lsn)
        rows = await self.conn.fetch(
            BENCH + "SELECT calls, query, total_exec_time FROM pg_stat_statements"
            " WHERE query NOT LIKE '%/* bench */%' AND query NOT LIKE '%pg_stat_statements%'")
        return {"wal": float(wal), "statements": sum(r["calls"] for r in rows), "cpu_s": cpu,
                "by_query": sorted(((r["calls"], r["query"]) for r in rows), reverse=True)}


async def wait_for(conn: asyncpg.Connection, sql: str, *args, timeout: float = 300) -> None:
    began = time.monotonic()
    while not await conn.fetchval(BENCH + sql, *args):
        if time.monotonic() - began > timeout:
            raise RuntimeError(f"timed out waiting for: {sql}")
        await asyncio.sleep(0.2)


async def consume_all(conn: asyncpg.Connection, consumer: str) -> int:
    """One consumer reads every published event and acknowledges it, 1000 at a time."""
    n = 0
    while True:
        rows = await conn.fetch("SELECT event_id FROM tracker.read_events($1, 1000)", consumer)
        if not rows:
            return n
        n += len(rows)
        await conn.execute("SELECT tracker.ack_events($1, $2)", consumer, rows[-1]["event_id"])


def per_message(stage: dict, n: int) -> dict:
    return {"wal": stage["wal"] / n, "statements": stage["statements"] / n, "cpu_us": stage["cpu_s"] / n * 1e6}
