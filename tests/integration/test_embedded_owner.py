"""One process runs an embedded cluster (state_dir.OWNER_LOCK): a second start on its state_dir
is refused naming the process that runs it (a setting: exit 2), and a postmaster left running by
a tracker that is gone (killed) is stopped and started again by the next start. Before, both
failed in pg_ctl's words ("another server might be running") as a database that may come back:
restarted every 2 s, for ever."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import asyncpg
import pytest

from tracker.app import Tracker
from tracker.config_types import Config, DatabaseConfig, HttpConfig
from tracker.db.embedded import EmbeddedPostgres, _alive
from tracker.db.state_dir import StateDirError
from tracker.start_error import StartError


@pytest.fixture
def state():
    tmp = Path(tempfile.mkdtemp(prefix="tracker-owner-"))
    os.chmod(tmp, 0o755)  # the cluster may run as the postgres user
    try:
        yield tmp / "pg"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_second_start_on_a_state_dir_in_use_is_refused_naming_who_runs_it(state):
    first = EmbeddedPostgres(state, fast=True).start()
    try:
        with pytest.raises(StateDirError, match=rf"run by another tracker process \(pid {os.getpid()}\)"):
            EmbeddedPostgres(state, fast=True).start()
        with pytest.raises(StateDirError):  # nor stopped by another
            EmbeddedPostgres(state).stop()
        assert first.running()
    finally:
        first.stop()
    again = EmbeddedPostgres(state, fast=True).start()  # free once the first has stopped
    again.stop()


async def test_the_daemon_refuses_a_state_dir_another_process_runs_as_a_setting(state):
    other = EmbeddedPostgres(state, fast=True).start()
    try:
        tracker = Tracker(Config(database=DatabaseConfig(state_dir=str(state)),
                                 http=HttpConfig(listen="127.0.0.1:0")))
        with pytest.raises(StartError) as ei:
            await tracker.start()
        await tracker.stop()
        assert ei.value.key == "database.state_dir" and ei.value.code == 2
        assert "run by another tracker process" in ei.value.reason
        assert other.running()  # the daemon that could not start did not stop it
    finally:
        other.stop()


async def test_a_cluster_left_by_a_killed_tracker_is_stopped_and_started_again(state):
    starts = ("from tracker.db.embedded import EmbeddedPostgres; import sys; "
              f"EmbeddedPostgres({str(state)!r}, fast=True).start(); print('up', flush=True); "
              "sys.stdin.read()")
    owner = subprocess.Popen([sys.executable, "-c", starts], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert owner.stdout.readline().strip() == "up"
    owner.kill()  # SIGKILL: its postmaster stays behind, nobody owns it
    owner.wait()
    pg = EmbeddedPostgres(state, fast=True)
    left = pg._postmaster_pid()
    assert left is not None and _alive(left)
    try:
        pg.start()
        assert pg.orphan_stopped == left  # (pg_ctl stop -w returns as its pid file goes)
        assert pg.running() and pg._postmaster_pid() != left
        conn = await asyncpg.connect(pg.dsn)
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()
    finally:
        pg.stop()
