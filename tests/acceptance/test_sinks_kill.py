"""`tracker run` with a webhook sink and a NATS JetStream sink, killed with SIGKILL in the middle
of its deliveries while events keep being written; the broker restarts while the daemon is
down; a new daemon picks up. Nothing is lost: the receiver (checking every signature with
`standardwebhooks`) gets every event, a repeat only with the same webhook-id and body, per
message never out of order; the stream holds every event once per Nats-Msg-Id, in order per
message. No secret reaches the log."""
from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from tests.nats_support import NatsServer, check_stream, needs_nats, stream_count, stream_messages
from tests.sinks_support import (Receiver, events, in_order_per_message, make_messages, new_secret,
                                 report, wait_until, write_config)
from tracker.core.states import State

pytestmark = [pytest.mark.slow, needs_nats]


async def start_daemon(config: Path, log: Path) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    before = log.read_bytes().count(b"tracker ready") if log.exists() else 0
    with log.open("ab") as out:  # the child has its own copy of the descriptor
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tracker", "--config", str(config), "run",
            stdout=out, stderr=asyncio.subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 60
    while log.read_bytes().count(b"tracker ready") <= before:
        assert proc.returncode is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "daemon not ready in time"
        await asyncio.sleep(0.1)
    return proc


async def test_kill_9_during_deliveries_loses_nothing(pool, db_dsn, tmp_path):
    secret = new_secret()
    rx = await Receiver([secret], delay_s=0.003).start()
    (tmp_path / "nats").mkdir()
    broker = NatsServer(tmp_path / "nats").start()
    config = write_config(
        tmp_path / "tracker.toml", db_dsn, poll_interval_s=0.5,
        webhooks={"crm": {"url": rx.url, "secrets": [secret], "timeout_s": 2.0, "concurrency": 4,
                          "retry_schedule_s": [0, 0.2, 0.5, 1, 1, 1, 1, 1]}},
        nats={"bus": {"servers": [broker.url], "stream": "SMS_EVENTS", "subject_prefix": "sms.events",
                      "create_stream": True, "timeout_s": 2.0}})
    refs = [f"k{i}" for i in range(300)]
    await make_messages(pool, refs)
    log = tmp_path / "daemon.log"
    daemon = await start_daemon(config, log)
    try:
        async def write() -> None:
            for state in (State.accepted, State.sent, State.delivered):
                for i in range(0, len(refs), 30):
                    await report(pool, refs[i:i + 30], state)
                    await asyncio.sleep(0.02)  # a steady stream, not one burst

        writer = asyncio.create_task(write())
        await wait_until(lambda: len(rx.delivered_ids()) >= 150, 60, "deliveries under way")
        await wait_until(lambda: _count_at_least(broker.url, 150), 60, "publishes under way")
        daemon.send_signal(signal.SIGKILL)
        await daemon.wait()
        killed_with = len(rx.requests)
        broker.stop()
        broker.start()
        await writer
        daemon = await start_daemon(config, log)
        evs = await events(pool)
        assert len(evs) == 900
        await wait_until(lambda: rx.delivered_ids() >= {e["event_id"] for e in evs}, 90,
                         "every event at the receiver")
        await wait_until(lambda: _all_behind_zero(pool), 60, "both sinks at the end of the outbox")
        daemon.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(daemon.wait(), 30) == 0
    finally:
        if daemon.returncode is None:
            daemon.kill()
            await daemon.wait()
        await rx.stop()
    try:
        messages = await stream_messages(broker.url)
    finally:
        broker.stop()

    evs = await events(pool)
    pos = {e["event_id"]: e["pos"] for e in evs}
    # Webhooks: at least once, a repeat only with the same id and bytes, never out of order.
    assert killed_with < len(rx.requests)
    assert rx.delivered_ids() == set(pos)
    assert all(d.verified for d in rx.requests)
    bodies = defaultdict(set)
    for d in rx.requests:
        bodies[d.id].add(d.body)
        assert d.id == str(d.data["data"]["event_id"])
    assert all(len(b) == 1 for b in bodies.values())
    assert in_order_per_message(rx.requests, pos)
    # JetStream: once per Nats-Msg-Id, in order per message, across the kill and the restart.
    check_stream(messages, evs)
    text = log.read_text()
    assert secret not in text and secret.removeprefix("whsec_") not in text
    assert "receiver-token-123" not in text


async def _count_at_least(url: str, n: int) -> bool:
    return await stream_count(url) >= n


async def _all_behind_zero(pool) -> bool:
    rows = await pool.fetch("SELECT events_behind FROM tracker.sink_status")
    return len(rows) == 2 and all(r["events_behind"] == 0 for r in rows)
