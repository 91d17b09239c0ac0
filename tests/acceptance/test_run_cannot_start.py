"""`tracker run` that cannot listen: the operator is told which setting and which address, the
exit code says so, and no traceback is printed."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

TRACKER = [sys.executable, "-m", "tracker"]


@pytest.mark.parametrize("key", ["http.listen", "http.ops_listen"])
def test_an_address_in_use_is_reported_with_its_setting(db_dsn, key):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    address = f"127.0.0.1:{taken.getsockname()[1]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    env.update(TRACKER_DATABASE__DSN=db_dsn, TRACKER_LOG__FORMAT="json",
               TRACKER_HTTP__LISTEN="127.0.0.1:0")
    env["TRACKER_" + key.upper().replace(".", "__")] = address
    try:
        p = subprocess.run(TRACKER + ["run"], env=env, capture_output=True, text=True, timeout=60)
    finally:
        taken.close()
    out = p.stdout + p.stderr
    assert p.returncode == 2, out
    assert "Traceback" not in out and "never retrieved" not in out
    lines = [json.loads(line) for line in p.stderr.splitlines() if line.startswith("{")]
    cannot = [line for line in lines if line["event"] == "tracker cannot start"]
    assert len(cannot) == 1, out
    assert cannot[0]["key"] == key and cannot[0]["address"] == address
    assert "address already in use" in cannot[0]["reason"]
    assert lines[-1]["event"] == "tracker stopped"  # what had started was stopped
