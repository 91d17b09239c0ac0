"""consumers: the outbox published to NATS JetStream by a NATS sink, then JetStream consumers
against SQL consumers reading every event."""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from pathlib import Path

import asyncpg

from _polling import Daemon, cpu_seconds, migrated, write_config
from _scaling.common import cluster, consume_all


async def consumers(n: int, tmp: Path, readers: int = 3) -> dict:
    """The outbox filled with n events; `tracker run` publishes them to NATS JetStream through a
    NATS sink; then `readers` JetStream consumers each read all of them (PostgreSQL untouched),
    against `readers` SQL consumers each reading them with read_events/ack_events."""
    import socket
    import subprocess

    import nats

    server = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not os.access(server, os.X_OK):
        return {"skipped": "nats-server is not installed (apt-get install nats-server)"}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = tmp / "nats"
    store.mkdir()
    proc = subprocess.Popen([server, "-js", "-sd", str(store), "-a", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"nats://127.0.0.1:{port}"
    out: dict = {"events": n, "readers": readers}
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            await asyncio.sleep(0.05)
        with cluster("consumers", stats=False, port=55462) as (pg, pg_pid):
            await migrated(pg.dsn)
            conn = await asyncpg.connect(pg.dsn)
            await conn.execute(
                "WITH m AS (INSERT INTO tracker.messages (vendor, vendor_ref, recipient)"
                "  SELECT 'sparksender', 'n' || i, '1555' || i FROM generate_series(1, $1) i RETURNING id)"
                " INSERT INTO tracker.transitions (message_id, from_state, to_state, source, occurred_at)"
                " SELECT id, 'submitted', 'delivered', 'poll', now() FROM m", n)
            config = write_config(tmp / "nats.toml", pg.dsn, {})
            with config.open("a") as f:
                f.write(f'[sinks]\npoll_interval_s = 1.0\nbatch_size = 1000\n[sinks.nats.bus]\n'
                        f'servers = ["{url}"]\nstream = "TRACKER_EVENTS"\nsubject_prefix = "tracker"\n'
                        f'create_stream = true\n')
            nc = await nats.connect(url)
            js = nc.jetstream()
            cpu0 = cpu_seconds(pg_pid, True), cpu_seconds(proc.pid)
            began = time.monotonic()
            daemon = Daemon(config, tmp / "nats.log").start()
            try:
                while True:
                    with contextlib.suppress(Exception):
                        if (await js.stream_info("TRACKER_EVENTS")).state.messages >= n:
                            break
                    if time.monotonic() - began > 300:
                        raise RuntimeError("the NATS sink did not publish every event")
                    await asyncio.sleep(0.05)
                took = time.monotonic() - began
                cpu1 = cpu_seconds(pg_pid, True), cpu_seconds(proc.pid), cpu_seconds(daemon.proc.pid)
            finally:
                daemon.stop()
            out["sink_rate"] = n / took
            out["sink_pg_us"] = (cpu1[0] - cpu0[0]) / n * 1e6
            out["sink_nats_us"] = (cpu1[1] - cpu0[1]) / n * 1e6
            out["sink_daemon_us"] = cpu1[2] / n * 1e6  # (its start included)
            # readers JetStream consumers, each reading every event
            cpu0 = cpu_seconds(pg_pid, True), cpu_seconds(proc.pid)
            began = time.monotonic()
            for k in range(readers):
                sub = await js.pull_subscribe("tracker.>", durable=f"reader{k}", stream="TRACKER_EVENTS")
                got = 0
                while got < n:
                    msgs = await sub.fetch(1000, timeout=10)
                    for m in msgs:
                        await m.ack()
                    got += len(msgs)
            took = time.monotonic() - began
            cpu1 = cpu_seconds(pg_pid, True), cpu_seconds(proc.pid)
            out["js_rate"] = n * readers / took
            out["js_pg_us"] = (cpu1[0] - cpu0[0]) / (n * readers) * 1e6
            out["js_nats_us"] = (cpu1[1] - cpu0[1]) / (n * readers) * 1e6
            await nc.close()
            # readers SQL consumers, each reading every event
            cpu0 = cpu_seconds(pg_pid, True)
            began = time.monotonic()
            for k in range(readers):
                await consume_all(conn, f"sql-reader-{k}")
            took = time.monotonic() - began
            out["sql_rate"] = n * readers / took
            out["sql_pg_us"] = (cpu_seconds(pg_pid, True) - cpu0) / (n * readers) * 1e6
            await conn.close()
    finally:
        proc.terminate()
        proc.wait(10)
    return out
