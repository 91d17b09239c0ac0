"""sd_notify for Type=notify units: READY, STOPPING and WATCHDOG pings. A no-op outside systemd."""
from __future__ import annotations

import asyncio
import os
import socket
from typing import Callable, Sequence

from tracker.logging import get_logger
from tracker.supervisor import beat
from tracker.supervisor_health import Problem

log = get_logger("tracker.systemd")


_unheard: set[str] = set()  # kinds of notification that could not be sent (logged once each)


def notify(state: str) -> bool:
    """Tell systemd `state`; False when it cannot hear us. A socket that cannot be reached is
    logged (once per kind, until one gets through) and never raises: a failed READY or STOPPING
    once stopped the daemon from starting, or from stopping its parts (an embedded cluster was
    left running). Watchdog pings that cannot be sent are pings systemd does not get."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    kind = state.partition("=")[0]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(address)
            s.sendall(state.encode())
    except OSError as e:
        if kind not in _unheard:
            _unheard.add(kind)
            log.warning("systemd notification not sent", notification=kind,
                        error=f"{type(e).__name__}: {e}")
        return False
    _unheard.discard(kind)
    return True


def watchdog_interval_s() -> float | None:
    """Half the watchdog timeout systemd set for us, or None when there is none."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec or os.environ.get("WATCHDOG_PID", str(os.getpid())) != str(os.getpid()):
        return None
    return int(usec) / 2_000_000


async def ping_watchdog(interval_s: float, wedged: Callable[[], Sequence[Problem]]) -> None:
    """Ping every `interval_s` from the event loop, so that a blocked loop stops the pings by
    itself; hold them back while a component is wedged, so that systemd restarts us."""
    held_back = False
    while True:
        stuck = wedged()
        if stuck:
            if not held_back:
                log.error("watchdog ping held back: a component is wedged",
                          problems=[f"{p.component}: {p.reason}" for p in stuck])
            held_back = True
        else:
            if held_back:
                log.warning("watchdog ping resumed: no component is wedged any more")
            held_back = False
            notify("WATCHDOG=1")
            beat().progress()
        await asyncio.sleep(interval_s)
