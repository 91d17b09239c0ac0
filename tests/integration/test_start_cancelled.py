"""A stop asked while the daemon starts (SIGTERM from systemd, Ctrl-C) cancels the start: what
did start stops, in reverse. The embedded cluster starts in a thread a cancellation cannot stop:
the start waits for it and stops the cluster, which would otherwise outlive the daemon."""
from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import threading
from pathlib import Path

from tracker.app import Tracker
from tracker.config_types import Config, DatabaseConfig, HttpConfig
from tracker.db.embedded import EmbeddedPostgres
from tracker.run import run_until_signal


async def test_a_stop_asked_while_the_embedded_cluster_starts_stops_the_cluster_too(monkeypatch):
    state = Path(tempfile.mkdtemp(prefix="tracker-cancelled-")) / "s"
    os.chmod(state.parent, 0o755)  # the cluster may run as the postgres user
    starting, finished = threading.Event(), threading.Event()
    real = EmbeddedPostgres.start

    def start(self):
        starting.set()
        try:
            return real(self)
        finally:
            finished.set()

    monkeypatch.setattr(EmbeddedPostgres, "start", start)
    tracker = Tracker(Config(database=DatabaseConfig(state_dir=str(state)),
                             http=HttpConfig(listen="127.0.0.1:0")))
    loop = asyncio.get_running_loop()
    run = asyncio.create_task(run_until_signal(tracker))
    try:
        assert await asyncio.to_thread(starting.wait, 60)
        tracker.stopping.set()  # what the SIGTERM handler does
        await asyncio.wait_for(run, 120)
        assert await asyncio.to_thread(finished.wait, 60)  # the cluster's start has ended
        assert not (state / "pgdata" / "postmaster.pid").exists()  # and it was stopped
        assert tracker.pool is None  # the start went no further
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        EmbeddedPostgres(state).stop()  # whatever a failed assertion left running
