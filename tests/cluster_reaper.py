"""Stops the test suite's ephemeral cluster when the pytest that started it is gone without
stopping it (killed: SIGKILL, a CI timeout), and removes its directory: pg_ctl's server outlives
its parent, and each killed run used to leave a postmaster and its files behind.

    python -m tests.cluster_reaper <pid> <directory>

Waits on a pidfd (no polling); started in a session of its own, so a signal to pytest's process
group does not reach it. A normal end of pytest stops the cluster itself and this first."""
from __future__ import annotations

import os
import select
import shutil
import sys
from pathlib import Path

from tracker.db.embedded import EmbeddedPostgres


def reap(pid: int, directory: Path) -> None:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        pass  # already gone
    else:
        select.select([fd], [], [])  # readable once the process has ended
        os.close(fd)
    if (directory / "pg").is_dir():
        EmbeddedPostgres(directory / "pg", fast=True).stop()
    shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    reap(int(sys.argv[1]), Path(sys.argv[2]))
