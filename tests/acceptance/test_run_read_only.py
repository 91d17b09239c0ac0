"""`tracker run` against a database that takes no writes: what a DSN pointing at a standby
finds after a failover. It must exit 1 (restarted by the unit until the DSN points at a primary
again), never 2 (RestartPreventExitStatus=2 would keep the service down for good), with one line
naming the setting and no traceback."""
from __future__ import annotations

import os
import subprocess
import sys
from urllib.parse import urlsplit

import asyncpg

from tests.acceptance.test_run_cannot_start import said_cannot_start

TRACKER = [sys.executable, "-m", "tracker"]


async def test_a_read_only_database_at_start_is_exit_1_and_named(db_dsn):
    name = urlsplit(db_dsn).path.lstrip("/")
    admin = await asyncpg.connect(db_dsn)
    try:  # as a hot standby answers: every write refused with 25006
        await admin.execute(f"ALTER DATABASE {name} SET default_transaction_read_only = on")
    finally:
        await admin.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    env.update(TRACKER_DATABASE__DSN=db_dsn, TRACKER_LOG__FORMAT="json",
               TRACKER_HTTP__LISTEN="127.0.0.1:0")
    p = subprocess.run(TRACKER + ["run"], env=env, capture_output=True, text=True, timeout=120)
    cannot, _ = said_cannot_start(p, 1)
    assert cannot["key"] == "database.dsn" and "ReadOnlySQLTransaction" in cannot["reason"], cannot
    assert "tracker ready" not in p.stdout + p.stderr
