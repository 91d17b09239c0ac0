"""`tracker demo` (the README's run command) shows transitions for every registered vendor."""
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path


def test_demo_shows_transitions_for_every_vendor():
    work = Path(tempfile.mkdtemp(prefix="tracker-demo-"))
    os.chmod(work, 0o755)  # the embedded cluster may run as the postgres user
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    try:
        p = subprocess.run([sys.executable, "-m", "tracker", "demo", "--seconds", "20", "--rate", "8"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=180)
    finally:
        subprocess.run(["rm", "-rf", str(work)])
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    line = re.compile(r"^\s*[\d.]+s\s+(\w+)\s+\S+\s+(\w+) -> (\w+)\s+via (\w+)", re.M)
    seen = {(m.group(1), m.group(4)) for m in line.finditer(p.stdout)}
    finals = {m.group(1) for m in line.finditer(p.stdout)
              if m.group(3) in ("delivered", "read", "failed", "expired", "rejected")}
    from tracker.adapters import VENDORS
    assert "twilio" in VENDORS
    for vendor in VENDORS:
        assert any(v == vendor and src in ("poll", "postback") for v, src in seen), (vendor, seen)
        assert vendor in finals, (vendor, finals)
    assert "transitions shown" in p.stdout and "delivered" in p.stdout


def test_a_demo_given_a_configuration_refuses_it_in_one_line(tmp_path):
    # `tracker --config F demo` ran the demo and ignored F, even a broken one.
    (tmp_path / "typo.toml").write_text("[databse]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    p = subprocess.run([sys.executable, "-m", "tracker", "--config", "typo.toml", "demo", "--seconds", "1"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.splitlines() == ["demo: takes no configuration (--config): it makes its own, for "
                                     "the sandbox's vendors on its embedded database"]
    assert not (tmp_path / "var").exists()


def test_a_demo_that_cannot_start_says_why_in_one_line(tmp_path, monkeypatch, capsys):
    # Run as root from a clone under a 0700 directory (/root, mktemp -d): a traceback, and no
    # way given around it.
    import argparse
    import pwd

    from tracker import demo
    from tracker import logging as tlog
    from tracker.db import embedded

    monkeypatch.setattr(embedded, "_run_as", lambda: pwd.getpwnam("nobody"))  # the cluster's user
    # The demo's logging setup left alone: bound to this test's captured stream, it outlived it.
    monkeypatch.setattr(tlog, "configure", lambda *args, **kwargs: None)
    private = tmp_path / "private"
    private.mkdir()
    os.chmod(private, 0o700)
    monkeypatch.chdir(private)
    code = demo.main(argparse.Namespace(config=None, seconds=1.0, rate=1.0))
    assert code == 2
    out = capsys.readouterr()
    [line, hint] = out.err.splitlines()
    assert line == (f"demo cannot start: database.state_dir = {private}/var/demo: the `nobody` user, which "
                    f"runs the cluster, cannot reach it ({private} is not searchable by others): "
                    "choose another directory, e.g. under /var/lib")
    assert "`chmod o+x` each directory above" in hint and "Traceback" not in out.out + out.err
    assert not (private / "var" / "demo" / "pgdata").exists()
