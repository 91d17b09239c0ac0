"""A daemon whose host clock is off (NTP broken on one replica's host) writes the database's time,
not its own: `tracker run` under libfaketime, its wall clock 700 s behind or 120 s ahead while
PostgreSQL and the sandbox keep the real one. Every message ends in its true state, delivered at
its true time; no vendor time is replaced, no event dated before its message's previous one, no
submission blamed; the offset is shown (tracker_database_clock_offset_seconds).

Before (reviewer A, session 28), 700 s behind: every pushed delivery dated 700 s early, all 167
vendor times replaced ("its clock or time zone is off?"), every submission noted as 12 minutes
ahead; 120 s ahead: half the polled transitions dated before the message's previous one."""
from __future__ import annotations

import asyncio
import glob
import os
import sys
import time
from pathlib import Path

import orjson
import pytest

from tests.polling_support import write_daemon_config
from tests.postbacks_support import metric_value
from tracker import adapters
from tracker.sandbox import Sandbox, send_many

pytestmark = pytest.mark.slow

LIBFAKETIME = next(iter(glob.glob("/usr/lib/*/faketime/libfaketime.so.1")), None)
needs_faketime = pytest.mark.skipif(LIBFAKETIME is None and not os.environ.get("CI"),
                                    reason="libfaketime is not installed (.ci/run installs faketime)")

WINDOW = 12.0
KNOBS = {"time_scale": 0.01, "latency_max_s": 400.0, "deadline_s": 600.0, "read": 0.0}
POLLS = {"first_poll_s": 0.5, "max_poll_interval_s": 2.0, "tracking_window_s": WINDOW,
         "deadline_margin_s": 1.0, "rate_limit_per_s": 500.0, "concurrency": 8,
         "request_timeout_s": 1.0, "batch_size": 50, "list_poll_min": 0}
VENDORS = ("sparksender", "skycore", "engagespark")  # polled; pushed with times; pushed
TOKEN = "tok-clock-skew-5f3a9c1e7b0d"
N = 30


async def start_skewed(config: Path, log: Path, offset_s: int) -> tuple[asyncio.subprocess.Process, str]:
    """`tracker run` with its wall clock `offset_s` away (its monotonic clock left true);
    (process, base URL of its listener)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    env.update(LD_PRELOAD=LIBFAKETIME, FAKETIME=f"{offset_s:+d}s", FAKETIME_DONT_FAKE_MONOTONIC="1",
               FAKETIME_DONT_RESET="1")
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tracker", "--config", str(config), "run",
            stdout=out, stderr=asyncio.subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 60
    while True:
        ready = [ln for ln in log.read_bytes().splitlines() if b'"tracker ready"' in ln]
        if ready:
            return proc, "http://" + orjson.loads(ready[0])["listen"]
        assert proc.returncode is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "daemon not ready in time"
        await asyncio.sleep(0.1)


@needs_faketime
@pytest.mark.parametrize("offset_s", [-700, 120])
async def test_a_daemon_whose_clock_is_off_writes_the_database_s_time(pool, db_dsn, tmp_path, offset_s):
    sandbox = Sandbox(knobs=KNOBS, seed=11)
    await sandbox.start()
    config, log = tmp_path / "tracker.toml", tmp_path / "daemon.log"
    write_daemon_config(config, db_dsn, sandbox, POLLS, VENDORS, postback_token=TOKEN)
    proc, base = await start_skewed(config, log, offset_s)
    try:
        assert await metric_value(base, "tracker_database_clock_offset_seconds") == pytest.approx(
            -offset_s, abs=2)  # the database's clock minus the daemon's
        sandbox.set_postback_url("skycore", f"{base}/postbacks/skycore/{TOKEN}")
        for i, vendor in enumerate(VENDORS):
            numbers = [f"1555{i}{k:05d}" for k in range(N)]
            push = f"{base}/postbacks/engagespark/{TOKEN}" if vendor == "engagespark" else None
            calls = await send_many(sandbox, vendor, numbers, client_push_url=push)
            await pool.executemany(
                "INSERT INTO tracker.submissions (vendor, request, response)"
                " VALUES ($1, $2::jsonb, $3::jsonb)",
                [(c.vendor, orjson.dumps(c.request).decode(), orjson.dumps(c.response).decode())
                 for c in calls])
        sent = time.monotonic()
        deadline = sent + WINDOW + 60
        while (time.monotonic() - sent < WINDOW + 2 or sandbox.pending_postbacks()
               or await pool.fetchval(
                   "SELECT (SELECT count(*) FROM tracker.messages WHERE state < 'unknown')"
                   " + (SELECT count(*) FROM tracker.submissions WHERE processed_at IS NULL)"
                   " + (SELECT count(*) FROM tracker.postbacks WHERE processed_at IS NULL)")):
            assert time.monotonic() < deadline, "messages left open"
            assert proc.returncode is None, log.read_text()[-3000:]
            await asyncio.sleep(0.5)
        replaced = await metric_value(base, "tracker_event_times_replaced_total")
    finally:
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 60)
        await sandbox.stop()

    # Every message in its true state, delivered at its true time (the vendor's, or the poll's).
    expected = sandbox.expected(WINDOW, pushes=True)
    truth = {(v, adapters.get(v).normalize_ref(ref), r or ""): (want, sandbox.message(v, ref, r))
             for (v, ref, r), want in expected.items() if ref is not None}
    rows = await pool.fetch("SELECT vendor, vendor_ref, recipient_key, state::text, delivered_at"
                            " FROM tracker.messages")
    assert len(rows) == len(truth) == N * len(VENDORS)
    wrong, off = [], []
    for r in rows:
        want, m = truth[(r["vendor"], r["vendor_ref"], r["recipient_key"])]
        if r["state"] != want:
            wrong.append((r["vendor"], r["state"], want))
        at = m.time_of("delivered") or m.time_of("read")
        if r["delivered_at"] is not None and at is not None:
            off.append(abs((r["delivered_at"] - m.wall(at)).total_seconds()))
    assert wrong == []
    assert off and max(off) < 5, max(off)  # polls see a delivery up to 2 s late; 700 s before
    assert replaced == 0
    # Each message's events in order, none before its submission; no submission blamed.
    assert await pool.fetchval("""
        SELECT count(*) FROM (
            SELECT t.occurred_at, m.submitted_at,
                   lag(t.occurred_at) OVER (PARTITION BY t.message_id ORDER BY t.event_id) AS prev
            FROM tracker.transitions t JOIN tracker.messages m ON m.id = t.message_id) t
        WHERE occurred_at < prev - interval '1 second'
           OR occurred_at < submitted_at - interval '1 second'""") == 0
    assert await pool.fetchval("SELECT count(*) FROM tracker.intake_problems") == 0
    # Postbacks are stamped on arrival with the database's time (the age gauges, the sweeps).
    assert await pool.fetchval(
        "SELECT count(*) FROM tracker.postbacks"
        " WHERE received_at NOT BETWEEN now() - interval '3 minutes' AND now()") == 0
    assert await pool.fetchval("SELECT count(*) FROM tracker.postbacks") > 0
