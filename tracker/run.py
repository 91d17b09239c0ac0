"""`tracker run` under a signal: start, run until SIGTERM or SIGINT, stop (tracker.app.Tracker
does the starting and stopping; this module decides when)."""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from tracker.app import STOP_DATABASE_WAIT_S, Tracker
from tracker.logging import get_logger
from tracker.start_error import StartError

log = get_logger("tracker.app")


async def run_until_signal(tracker: Tracker) -> None:
    """Start, run until SIGTERM or SIGINT, stop. A signal while starting (a replica waiting for
    another's migration lock, a slow embedded cluster) cancels the start: what did start stops,
    in reverse, and READY is never sent."""
    loop = asyncio.get_running_loop()
    on_terminal = os.isatty(0)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, signalled, tracker, sig, on_terminal)
    starting = asyncio.create_task(tracker.start(), name="start")
    asked = asyncio.create_task(tracker.stopping.wait(), name="stop signal")
    try:
        await asyncio.wait({starting, asked}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            log.info("stop asked while starting: the start is abandoned")
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return
        starting.result()  # a start that failed raises here
        await tracker.stopping.wait()
    except StartError as e:
        log.error("tracker cannot start", key=e.key, address=e.value, reason=e.reason)
        raise SystemExit(e.code) from None
    finally:
        asked.cancel()
        await tracker.stop()


def signalled(tracker: Tracker, sig: signal.Signals, on_terminal: bool) -> None:
    """SIGTERM and SIGINT stop. SIGHUP stops a run whose terminal hung up; with none (under
    systemd) it is logged and changes nothing: the configuration is read at start, and a stop
    would leave the unit down (Restart=on-failure). Unhandled, it killed the daemon on the spot,
    the embedded cluster left running. A signal during the drain (http.drain_s) ends it; during
    the rest of a stop it is logged, and the stop goes on: it waits for the database at most
    STOP_DATABASE_WAIT_S."""
    name = signal.Signals(sig).name
    if sig == signal.SIGHUP and not on_terminal:
        log.warning("SIGHUP ignored: the configuration is read only at start; restart the "
                    "service to apply a change")
    elif tracker.stopping.is_set() and tracker.drain.under_way:
        tracker.drain.cut()  # a second signal: no more waiting for the load balancer
    elif tracker.stopping.is_set():
        log.warning("stop already under way: still waiting for what is in flight",
                    signal=name, database_wait_max_s=STOP_DATABASE_WAIT_S)
    else:
        tracker.stopping.set()  # first: whatever happens to the line below, the stop is asked
        log.info("stop asked", signal=name)
