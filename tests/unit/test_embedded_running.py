"""Whether the embedded cluster runs is read from its pid file: none is "stopped", one that
cannot be read for another reason (EMFILE, the process's descriptors used up by a flood of
connections) is no answer, and was taken for "stopped": the keeper restarted PostgreSQL for nothing
and alerted on it."""
from __future__ import annotations

import os

import pytest

from tracker.db import keeper
from tracker.db.embedded import EmbeddedPostgres


def test_a_pid_file_that_cannot_be_read_is_no_stopped_cluster(tmp_path):
    pg = EmbeddedPostgres(tmp_path / "state")
    pg.data_dir.mkdir(parents=True)
    assert not pg.running() and keeper.seen_stopped(pg)  # no pid file: stopped
    (pg.data_dir / "postmaster.pid").write_text(f"{os.getpid()}\n")
    assert pg.running() and not keeper.seen_stopped(pg)
    (pg.data_dir / "postmaster.pid").unlink()
    (pg.data_dir / "postmaster.pid").mkdir()  # read() fails, as with EMFILE, for another reason
    with pytest.raises(OSError):
        pg.running()
    assert not keeper.seen_stopped(pg)
