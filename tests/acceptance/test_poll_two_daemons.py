"""Two `tracker run` processes on one database poll the sandbox's vendors together; one of them
is killed with SIGKILL mid-run. No message is polled by both within one lease (the sandbox's
request log), and nothing is lost or stuck: every message ends in its ground-truth state and no
claim is left behind (the killed daemon's claims come due when their leases end)."""
from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from tests.polling_support import numbers, write_daemon_config
from tracker import adapters
from tracker.poller import schedule
from tracker.config_types import VendorConfig
from tracker.sandbox import Sandbox, send_many

pytestmark = pytest.mark.slow

KNOBS = {"time_scale": 0.01, "latency_max_s": 400.0, "deadline_s": 600.0, "read": 0.0}
POLLS = {"first_poll_s": 0.5, "max_poll_interval_s": 2.0, "tracking_window_s": 25.0,
         "deadline_margin_s": 1.0, "rate_limit_per_s": 500.0, "concurrency": 8,
         "request_timeout_s": 1.0, "batch_size": 50, "list_poll_min": 0}
SENDS = {"sparksender": 250, "engagespark": 250, "sparrow": 50}  # recipients per send call


async def start_daemon(config: Path, log: Path) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    with log.open("wb") as out:  # the child has its own copy of the descriptor
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tracker", "--config", str(config), "run",
            stdout=out, stderr=asyncio.subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 60
    while b"tracker ready" not in log.read_bytes():
        assert proc.returncode is None, log.read_text()
        assert time.monotonic() < deadline, "daemon not ready in time"
        await asyncio.sleep(0.1)
    return proc


def owner_of(log: Path) -> str:
    for line in log.read_bytes().splitlines():
        if b"poller started" in line:
            return orjson.loads(line)["owner"]
    raise AssertionError("no 'poller started' line")


async def test_two_daemons_one_killed(pool, db_dsn, tmp_path):
    sandbox = Sandbox(knobs=KNOBS, seed=99)
    await sandbox.start()
    config = tmp_path / "tracker.toml"
    write_daemon_config(config, db_dsn, sandbox, POLLS, SENDS)
    a_log, b_log = tmp_path / "a.log", tmp_path / "b.log"
    a = await start_daemon(config, a_log)
    b = await start_daemon(config, b_log)
    try:
        for i, (vendor, per_call) in enumerate(SENDS.items()):
            recipients = numbers(1000, prefix=f"6392{i}")
            calls = []
            for k in range(0, len(recipients), per_call):
                calls += await send_many(sandbox, vendor, recipients[k:k + per_call], bulk=True)
            await pool.executemany(
                "INSERT INTO tracker.submissions (vendor, request, response) VALUES ($1, $2::jsonb, $3::jsonb)",
                [(c.vendor, orjson.dumps(c.request).decode(), orjson.dumps(c.response).decode())
                 for c in calls])

        # Kill A while it holds claims, once polling is well under way.
        a_owner = owner_of(a_log)
        deadline = time.monotonic() + 30
        while True:
            polls = await pool.fetchval("SELECT count(*) FROM tracker.observations WHERE source = 'poll'")
            held = await pool.fetchval("SELECT count(*) FROM tracker.messages WHERE lease_owner = $1", a_owner)
            if polls > 1000 and held:
                break
            assert time.monotonic() < deadline, "no poll under way"
            await asyncio.sleep(0.02)
        a.send_signal(signal.SIGKILL)
        await a.wait()
        killed_at = time.monotonic()
        orphaned = await pool.fetchval("SELECT count(*) FROM tracker.messages WHERE lease_owner = $1", a_owner)

        deadline = time.monotonic() + 90
        while await pool.fetchval(
                "SELECT (SELECT count(*) FROM tracker.messages WHERE state < 'unknown')"
                " + (SELECT count(*) FROM tracker.submissions WHERE processed_at IS NULL)"
                " + (SELECT count(*) FROM tracker.messages WHERE lease_owner IS NOT NULL)"):
            assert time.monotonic() < deadline, "messages left open or claimed"
            assert b.returncode is None, b_log.read_text()[-3000:]
            await asyncio.sleep(0.5)
        finished = time.monotonic() - killed_at
        b.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(b.wait(), 30) == 0
    finally:
        for p in (a, b):
            if p.returncode is None:
                p.kill()
                await p.wait()
        await sandbox.stop()

    # Nothing lost: every message in its true state.
    rows = await pool.fetch("SELECT vendor, vendor_ref, recipient_key, state FROM tracker.messages")
    have = {(r["vendor"], r["vendor_ref"], r["recipient_key"] or None): r["state"] for r in rows}
    truth = {(v, adapters.get(v).normalize_ref(ref), r): t["final"]
             for (v, ref, r), t in sandbox.truth().items()}
    assert len(have) == len(truth) == 3000
    assert [k for k, s in truth.items() if have.get(k) != s] == []
    assert orphaned > 0  # A died holding claims, and B took them over after their leases

    # Never polled by both at once: two polls of one message (Sparrow: one batch) are always at
    # least half the shortest backoff apart; two claims at once would be milliseconds apart.
    calls = defaultdict(list)
    for r in sandbox.requests:
        path = r["path"]
        if r["vendor"] == "sparrow" and "/report/" in path:
            calls[("sparrow", r["refs"][0], path.rstrip("/").rsplit("/", 1)[1])].append(r["t"])
        elif "/getStatus/" in path or (r["vendor"] == "engagespark" and "/messages/S" in path):
            calls[(r["vendor"], r["refs"][0])].append(r["t"])
    assert len(calls) == 1000 + 1000 + 2 * 20
    shortest = (1 - schedule.JITTER) * schedule.base_delay(VendorConfig("x", **POLLS), 1) / 2
    gaps = [u - t for ts in calls.values() for t, u in zip(ts, ts[1:])]
    assert min(gaps) >= shortest - 0.05, min(gaps)
    print(f"\ntwo daemons: A killed holding {orphaned} claims; all final {finished:.1f}s later;"
          f" {sum(len(t) for t in calls.values())} status calls, smallest gap {min(gaps):.2f}s")
