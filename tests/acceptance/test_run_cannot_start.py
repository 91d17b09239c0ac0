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
    cannot, lines = said_cannot_start(p, 2)
    assert cannot["key"] == key and cannot["address"] == address
    assert "address already in use" in cannot["reason"]
    assert lines[-1]["event"] == "tracker stopped"  # what had started was stopped


def said_cannot_start(p: subprocess.CompletedProcess, code: int) -> tuple[dict, list[dict]]:
    """`tracker run` exited `code` with one "tracker cannot start" line and no traceback: that
    line, and every JSON line it wrote."""
    out = p.stdout + p.stderr
    assert p.returncode == code, out
    assert "Traceback" not in out and "never retrieved" not in out
    lines = [json.loads(line) for line in p.stderr.splitlines() if line.startswith("{")]
    cannot = [line for line in lines if line["event"] == "tracker cannot start"]
    assert len(cannot) == 1, out
    return cannot[0], lines


def test_migrate_in_execstartpre_exits_2_only_for_a_database_refusing_its_settings(db_dsn):
    # The unit runs `tracker migrate` before `run`: it said 1 for every database error, so a
    # wrong database name restarted every 2 s whatever RestartPreventExitStatus=2 said.
    from urllib.parse import urlsplit, urlunsplit

    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    missing = urlunsplit(urlsplit(db_dsn)._replace(path="/no_such_database_here"))
    with socket.socket() as s:  # a port nothing listens on: unreachable, which may pass
        s.bind(("127.0.0.1", 0))
        closed = f"postgresql://tracker@127.0.0.1:{s.getsockname()[1]}/tracker"
    for dsn, code, said in ((missing, 2, "migrate: the database refused: InvalidCatalogNameError"),
                            (closed, 1, "migrate: database unavailable: ")):
        p = subprocess.run(TRACKER + ["migrate"], env={**env, "TRACKER_DATABASE__DSN": dsn},
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == code and said in p.stderr, (dsn, p.returncode, p.stderr)
