"""A full disk met where no postback is (reviewer B, session 28): a component that judges a
failure with is_outage alone (the poller's write-back, the supervisor) notes it too, and a
one-off command (`tracker migrate` in ExecStartPre) exits 1, restarted, never 2."""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

import asyncpg

from tracker import db
from tracker.config_types import Config, DatabaseConfig
from tracker.db.oneshot import on_database


def test_a_full_disk_met_through_is_outage_is_noted(monkeypatch):
    monkeypatch.setattr(db, "_wanting", {"at": float("-inf"), "what": ""})
    assert db.is_outage(asyncpg.exceptions.DiskFullError("could not extend file"))
    assert "DiskFullError" in (db.wanting_resources() or "")


def test_a_one_off_command_on_a_full_disk_exits_1(monkeypatch, capsys):
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    base = Path(tempfile.mkdtemp(prefix="tracker-full-"))
    base.chmod(0o755)  # the cluster may run as the postgres user
    try:
        monkeypatch.setattr(Path, "write_text", full)
        code = on_database(Config(database=DatabaseConfig(state_dir=str(base / "pg"))), "migrate",
                           lambda conn: 0)
    finally:
        monkeypatch.undo()
        shutil.rmtree(base, ignore_errors=True)
    err = capsys.readouterr().err
    assert "No space left on device" in err and code == 1, (code, err)
