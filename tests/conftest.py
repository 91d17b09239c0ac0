"""Shared fixtures. Integration tests get a real PostgreSQL: an ephemeral cluster started from
the machine's PostgreSQL binaries, or the server named by TRACKER_TEST_DSN (its role needs
CREATEDB). Each test gets its own database, copied from a migrated template."""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from tracker.db.embedded import EmbeddedPostgres
from tracker.db.migrate import migrate

TEMPLATE = "tracker_test_template"


async def until_waiting_on_a_lock(conn: asyncpg.Connection, pid: int, what: str,
                                  timeout: float = 4.0) -> None:
    """Wait until the server session `pid` waits on a lock (as `conn` sees it), or fail
    naming `what` was expected to get there."""
    for _ in range(int(timeout / 0.02)):
        if await conn.fetchval("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{what} never reached its last step")


def dsn_with_db(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


@pytest.fixture(scope="session")
def pg_server():
    """A DSN of a server where tests may create databases."""
    dsn = os.environ.get("TRACKER_TEST_DSN")
    if dsn:
        yield dsn
        return
    tmp = tempfile.mkdtemp(prefix="tracker-test-")
    os.chmod(tmp, 0o755)  # the cluster may run as the postgres user
    reaper = subprocess.Popen([sys.executable, "-m", "tests.cluster_reaper", str(os.getpid()), tmp],
                              cwd=Path(__file__).parent.parent, start_new_session=True)
    pg = EmbeddedPostgres(Path(tmp) / "pg", fast=True).start()
    try:
        yield pg.dsn
    finally:
        reaper.kill()
        reaper.wait()
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
async def template_db(pg_server):
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {TEMPLATE}")
    finally:
        await admin.close()
    conn = await asyncpg.connect(dsn_with_db(pg_server, TEMPLATE))
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return TEMPLATE


@pytest.fixture
async def db_dsn(pg_server, template_db):
    """A fresh, migrated database for one test."""
    name = "t_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {template_db}")
    finally:
        await admin.close()
    yield dsn_with_db(pg_server, name)
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def empty_db_dsn(pg_server):
    """A fresh database with nothing in it (for migration tests)."""
    name = "e_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(pg_server)
    await admin.execute(f"CREATE DATABASE {name}")
    await admin.close()
    yield dsn_with_db(pg_server, name)
    admin = await asyncpg.connect(pg_server)
    await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    await admin.close()


@pytest.fixture
async def pool(db_dsn):
    p = await asyncpg.create_pool(db_dsn, min_size=1, max_size=8)
    yield p
    await p.close()


@pytest.fixture
def no_secrets_registered(monkeypatch):
    """No secret registered with tracker.masking, for a test that registers its own (undone after)."""
    from tracker import masking

    for name, empty in (("_secrets", set()), ("_secret_re", None), ("_sent", set()), ("_sent_re", None)):
        monkeypatch.setattr(masking, name, empty)


@pytest.fixture(autouse=True)
def fresh_log_throttles(monkeypatch):
    """Every test starts with no log line held back by an earlier test's (tracker.throttle: a
    line per key a minute)."""
    from tracker import postbacks
    from tracker.db import counts
    from tracker.throttle import Throttle

    monkeypatch.setattr(postbacks, "_refusals", Throttle())
    monkeypatch.setattr(counts, "_unmapped_log", Throttle())
