"""Small defects a reviewer found following the README: a one-off command whose standard output
is closed early (`tracker sinks status | head -1`) said "database unavailable: BrokenPipeError";
/readyz named a database that does not answer with an empty detail ("TimeoutError: "); and
`tracker sinks status` did not say why a sink was disabled. Real processes, real PostgreSQL."""
from __future__ import annotations

import asyncio
import concurrent.futures
import os
import subprocess
import sys

import pytest

from tests.postbacks_support import config_for, named, readyz, running, session
from tests.sinks_support import wait_until, write_config
from tracker.config_types import Config, DatabaseConfig
from tracker.db.oneshot import OUTPUT_CLOSED, on_database
from tracker.http import ops
from tracker.sinks import store

TRACKER = [sys.executable, "-m", "tracker"]


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("command", [("sinks", "status"), ("consumers", "status"), ("check-config",)],
                         ids=" ".join)
def test_a_closed_stdout_is_no_database_outage(db_dsn, tmp_path, command, unbuffered):
    """The reader goes away before the command writes: quiet, exit 141, as Unix tools are.
    Buffered, the write fails when stdout is flushed (at the interpreter's exit before the fix:
    "Exception ignored ... BrokenPipeError", exit 120); unbuffered (PYTHONUNBUFFERED, as the
    reviewer's shell had it) in the print itself (before: "database unavailable", exit 1)."""
    p = _started(db_dsn, tmp_path, command, unbuffered, stderr=subprocess.PIPE)
    p.stdout.close()  # before the command has even connected: `| true`
    err = p.stderr.read()
    p.stderr.close()
    assert p.wait(timeout=60) == OUTPUT_CLOSED == 141, err
    assert "BrokenPipe" not in err and "database" not in err and "Traceback" not in err, err


@pytest.mark.parametrize("command", [("replay",), ("migrate",)], ids=" ".join)
def test_a_closed_pipe_for_stdout_and_stderr_is_no_database_outage(db_dsn, tmp_path, command):
    """`tracker replay 2>&1 | true`: replay and migrate say what they did on stderr (their
    stdout alone closed changes nothing: exit 0); both on one pipe closed early, quiet, exit 141
    (before the fix: the message about the database failed in turn, exit 1)."""
    p = _started(db_dsn, tmp_path, command, False, stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read()
    p.stderr.close()
    assert p.wait(timeout=60) == 0, err
    p = _started(db_dsn, tmp_path, command, False, stderr=subprocess.STDOUT)
    p.stdout.close()
    assert p.wait(timeout=60) == OUTPUT_CLOSED


def _started(db_dsn: str, tmp_path, command: tuple[str, ...], unbuffered: bool, stderr) -> subprocess.Popen:
    cfg = write_config(tmp_path / "t.toml", db_dsn)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_") and k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    return subprocess.Popen([*TRACKER, "--config", str(cfg), *command], env=env,
                            stdout=subprocess.PIPE, stderr=stderr, text=True)


def test_a_broken_pipe_from_elsewhere_is_still_a_database_error(pg_server, capsys):
    """Only standard output closed is quiet: the same error from anything else (the database's
    socket) while stdout is fine stays "database unavailable", exit 1."""
    async def job(_conn) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    cfg = Config(database=DatabaseConfig(dsn=pg_server))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # asyncio.run off the tests' loop
        code = pool.submit(on_database, cfg, "sinks", job).result(timeout=60)
    assert code == 1
    assert "sinks: database unavailable: BrokenPipeError" in capsys.readouterr().err


def test_the_timeout_reason_says_how_long():
    assert ops.not_answering(TimeoutError()) == f"did not answer within {ops.READY_TIMEOUT_S:g} s"
    assert ops.not_answering(TimeoutError()) == "did not answer within 2 s"
    assert ops.not_answering(ConnectionRefusedError(111, "Connection refused")) == (
        "not answering: ConnectionRefusedError: [Errno 111] Connection refused")
    assert ops.not_answering(OSError()) == "not answering: OSError"


async def test_readyz_names_a_database_that_does_not_answer_and_for_how_long(db_dsn, pool):
    """The readiness query reads tracker.schema_migrations (pending migrations): a session
    holding that table locked makes the database not answer it within READY_TIMEOUT_S."""
    async with running(config_for(db_dsn)) as (_tracker, base), session() as s:
        await wait_until(lambda: _ready(s, base), 20, "ready first")
        async with pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            try:
                await conn.execute("LOCK TABLE tracker.schema_migrations IN ACCESS EXCLUSIVE MODE")
                status, body = await asyncio.wait_for(readyz(s, base), ops.READY_TIMEOUT_S + 10)
            finally:
                await tx.rollback()
        assert status == 503, body
        assert named(body, "database") == ["did not answer within 2 s"], body
        await wait_until(lambda: _ready(s, base), 20, "ready again once the lock is gone")


async def _ready(s, base: str) -> bool:
    return (await readyz(s, base))[0] == 200


async def test_sinks_status_says_why_a_sink_is_disabled(db_dsn, pool, tmp_path):
    reason = ("the receiver answered 410 Gone at 2024-05-01 12:00:00 UTC;"
              " `tracker sinks enable crm` sends again")
    async with pool.acquire() as conn:  # as the sink loop marks it (tracker.sinks.answers)
        await store.register(conn, [("crm", "webhook"), ("audit", "webhook")])
        await store.disable(conn, "crm", reason)
        # a receiver's Retry-After: how long the sink stays silent (it was not shown)
        await conn.execute("UPDATE tracker.sinks SET paused_until = '2999-01-01 00:00:00+00'"
                           " WHERE name = 'audit'")
    cfg = write_config(tmp_path / "t.toml", db_dsn)
    p = await asyncio.to_thread(subprocess.run, [*TRACKER, "--config", str(cfg), "sinks", "status"],
                                capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    header, *rows = p.stdout.splitlines()
    assert header.split()[-3:] == ["disabled", "last_error", "disabled_reason"], p.stdout
    by_sink = {row.split()[0]: row for row in rows}
    assert by_sink["crm"].split()[-len(reason.split()) - 2:] == ["True", "-", *reason.split()], p.stdout
    assert by_sink["audit"].split()[-5:] == ["2999-01-01", "00:00:00Z", "False", "-", "-"], p.stdout
    assert by_sink["audit"].index("2999") == header.index("paused_until"), p.stdout
    # the long reason last: the columns before it line up as before
    assert by_sink["crm"].index("True") == header.index("disabled") == by_sink["audit"].index("False")
