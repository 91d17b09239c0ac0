"""`tracker sinks enable` and `redrive` without --config, as the README writes them (and as a
disabled sink's own disabled_reason tells the operator to run): they refused ("webhook sinks:
none configured") a sink the database has. A sink the configuration given does not name is
looked up in tracker.sinks. Real PostgreSQL, the CLI as a process."""
from __future__ import annotations

import os
import subprocess
import sys

from tests.sinks_support import write_config
from tracker.sinks import store


def tracker_cli(dsn: str, *args: str) -> subprocess.CompletedProcess:
    """`tracker ARGS` without --config: the database from the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    env["TRACKER_DATABASE__DSN"] = dsn
    return subprocess.run([sys.executable, "-m", "tracker", *args], capture_output=True, text=True,
                          timeout=60, env=env)


async def registered(pool) -> None:
    async with pool.acquire() as conn:
        await store.register(conn, [("billing", "webhook"), ("audit", "nats")])


async def dead_letter(pool, sink: str) -> None:
    await pool.execute("INSERT INTO tracker.sink_deliveries (sink, event_id, pos, message_id, recorded_at,"
                       " body, status, attempts, dead_at) VALUES ($1, 1, 1, 1, now(), '{}', 'dead', 3, now())",
                       sink)


async def test_enable_without_the_configuration_enables_a_webhook_sink_the_database_has(db_dsn, pool):
    await registered(pool)
    async with pool.acquire() as conn:
        await store.disable(conn, "billing", "receiver answered 410 Gone; `tracker sinks enable billing`")
    p = tracker_cli(db_dsn, "sinks", "enable", "billing")
    assert p.returncode == 0 and "sink billing enabled" in p.stdout, p.stderr
    assert await pool.fetchval("SELECT disabled_at IS NULL FROM tracker.sinks WHERE name = 'billing'")

    p = tracker_cli(db_dsn, "sinks", "enable", "audit")  # the database's kind decides, as the configuration's
    assert p.returncode == 2 and "'audit' is a NATS sink: only a webhook sink is ever disabled" in p.stderr, p.stderr

    p = tracker_cli(db_dsn, "sinks", "enable", "nope")
    assert p.returncode == 2, p.stdout
    assert ("no sink named 'nope' in the configuration (configured sinks: none) nor in the database"
            in p.stderr), p.stderr


async def test_redrive_without_the_configuration_redrives_any_sink_the_database_has(db_dsn, pool):
    await registered(pool)
    await dead_letter(pool, "audit")
    p = tracker_cli(db_dsn, "sinks", "redrive", "audit")
    assert p.returncode == 0 and "sink audit: 1 dead letter to send again" in p.stdout, p.stderr
    assert await pool.fetchval("SELECT status FROM tracker.sink_deliveries WHERE sink = 'audit'") == "pending"

    p = tracker_cli(db_dsn, "sinks", "redrive", "nope")
    assert p.returncode == 2 and "nor in the database" in p.stderr, p.stderr


async def test_a_configuration_naming_other_sinks_is_no_reason_to_refuse(db_dsn, pool, tmp_path):
    await registered(pool)
    await dead_letter(pool, "billing")
    other = {"crm": {"url": "https://crm.example/hooks", "secrets": ["whsec_" + "A" * 44]}}
    cfg = write_config(tmp_path / "t.toml", db_dsn, webhooks=other)
    p = subprocess.run([sys.executable, "-m", "tracker", "--config", str(cfg), "sinks", "redrive", "billing"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "1 dead letter to send again" in p.stdout, p.stderr
    p = subprocess.run([sys.executable, "-m", "tracker", "--config", str(cfg), "sinks", "enable", "nope"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "(configured sinks: crm) nor in the database" in p.stderr, p.stderr
