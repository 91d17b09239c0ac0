"""A pytest killed before it stops its ephemeral cluster (SIGKILL, a CI timeout) leaves no
postmaster and no files behind: tests.cluster_reaper stops and removes them."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from tracker.db.embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parent.parent.parent

# What the suite's session fixture does: start the cluster, then live until killed.
STARTER = """
import sys
from pathlib import Path
from tracker.db.embedded import EmbeddedPostgres
EmbeddedPostgres(Path(sys.argv[1]) / "pg", fast=True).start()
print("started", flush=True)
sys.stdin.read()
"""


def _runs(pid: int) -> bool:
    """Alive and not a zombie (an orphan's exit may wait for a reaper of the machine's)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_killed_owner_s_cluster_is_stopped_and_its_directory_removed():
    tmp = Path(tempfile.mkdtemp(prefix="tracker-reaped-"))
    os.chmod(tmp, 0o755)  # the cluster may run as the postgres user
    owner = subprocess.Popen([sys.executable, "-c", STARTER, str(tmp)], cwd=ROOT,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout.readline() == "started\n"
        reaper = subprocess.Popen([sys.executable, "-m", "tests.cluster_reaper", str(owner.pid),
                                   str(tmp)], cwd=ROOT, start_new_session=True)
        pid = int((tmp / "pg" / "pgdata" / "postmaster.pid").read_text().split()[0])
        assert reaper.poll() is None  # waits while its owner lives
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        assert reaper.wait(timeout=60) == 0
        assert not tmp.exists()
        assert not _runs(pid), f"postmaster {pid} still runs"
    finally:
        owner.kill()
        if tmp.exists():
            EmbeddedPostgres(tmp / "pg", fast=True).stop()
