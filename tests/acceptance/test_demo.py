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
