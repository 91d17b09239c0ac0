"""The embedded cluster kept running. The daemon owns it (nothing else reaches it), so a
postmaster gone while the daemon runs (killed, the OOM killer, `pg_ctl stop` by hand) is started
again, as systemd restarts a service: logged, counted once an outage however many starts it
takes (tracker_embedded_database_restarts_total) and shown in /readyz until it answers.
Meanwhile every component waits for the database as in any outage. A cluster whose data
directory is gone is not made anew (an empty database would lose the messages without a word):
that start fails, and the supervisor tries it again after a backoff, with the reason in /readyz
and the log."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Callable

from tracker import metrics
from tracker.db.embedded import EmbeddedError, EmbeddedPostgres
from tracker.logging import get_logger
from tracker.supervisor import beat

log = get_logger("tracker.db")

CHECK_EVERY_S = 1.0


LOW_SPACE_BYTES = 64 * 1024 * 1024

# Data directories found stopped and not yet seen running again: an outage is counted once,
# though the supervisor runs keep_running anew after each start that fails (a full disk: nine).
_DOWN: set[Path] = set()


def not_running(pg: EmbeddedPostgres) -> str:
    """What /readyz and the keeper's own component say while the cluster is down: where to look,
    and a full filesystem when it is one (a PANIC on a full disk is written nowhere: its own log
    could not be written either)."""
    try:
        st = os.statvfs(pg.state_dir)
        free = st.f_bavail * st.f_frsize
    except OSError:
        free = None
    full = (f"; its filesystem has {free // 1024} KiB free: free space there (never in pgdata)"
            if free is not None and free < LOW_SPACE_BYTES else "")
    return (f"the embedded cluster in {pg.state_dir} is not running: the tracker starts it again "
            f"(its logs: {pg.data_dir / 'log'}, and {pg.start_log} for a start that failed){full}")


def seen_stopped(pg: EmbeddedPostgres) -> bool:
    """Whether the cluster is known to be stopped (False where its pid file cannot be read)."""
    try:
        return not pg.running()
    except OSError:
        return False


async def keep_running(pg: EmbeddedPostgres, stopping: Callable[[], bool]) -> None:
    """Check every CHECK_EVERY_S that the cluster runs; start it again when it does not."""
    while not stopping():
        if pg.running():
            _DOWN.discard(pg.data_dir)  # up again, however (pg_ctl's wait ran out; by hand)
        else:
            beat().blocked(not_running(pg))
            log.error("embedded PostgreSQL not running: starting it again", data_dir=str(pg.data_dir))
            if pg.data_dir not in _DOWN:
                _DOWN.add(pg.data_dir)
                metrics.embedded_restarts.inc()
            if not (pg.data_dir / "PG_VERSION").exists():
                raise EmbeddedError(f"its data directory {pg.data_dir} is gone: not made anew "
                                    "(restore it, or stop the tracker and move the state_dir away)")
            await _start(pg)
            _DOWN.discard(pg.data_dir)
            log.info("embedded PostgreSQL started again", data_dir=str(pg.data_dir))
        beat().progress()
        await asyncio.sleep(CHECK_EVERY_S)


async def _start(pg: EmbeddedPostgres) -> None:
    """pg.start() in a thread, which a cancellation (the daemon stopping) cannot stop: it is
    waited for, so that the cluster's stop never runs beside its start."""
    starting = asyncio.ensure_future(asyncio.to_thread(pg.start))
    try:
        await asyncio.shield(starting)
    except asyncio.CancelledError:
        await asyncio.gather(starting, return_exceptions=True)
        raise
