"""LISTEN on a channel for as long as a component runs: one loop for the daemon's listeners
(intake wake-ups, the sinks; the publisher listens on the connection it publishes on)."""
from __future__ import annotations

import asyncio
import contextlib
from typing import Callable

import asyncpg

from tracker.db import DB_ERRORS
from tracker.logging import get_logger
from tracker.supervisor import beat

log = get_logger("tracker.db.listen")

RECONNECT_S = 1.0  # after a lost connection, listen again this soon


async def listen(pool: Callable[[], asyncpg.Pool], channel: str, wake: Callable[[], None],
                 stopping: Callable[[], bool], check_s: float = 1.0) -> None:
    """Call `wake()` on every NOTIFY on `channel`, and once each time listening (re)starts (a
    notification sent while nobody listened is lost: whoever is woken looks anyway). A lost
    connection is logged and listened on again, until `stopping()`."""
    while not stopping():
        try:
            async with pool().acquire() as conn:
                await listen_on(conn, channel, wake, stopping, check_s)
        except DB_ERRORS as e:
            log.warning("listener lost; reconnecting", channel=channel, error=type(e).__name__)
        await asyncio.sleep(RECONNECT_S)


async def listen_on(conn: asyncpg.Connection, channel: str, wake: Callable[[], None],
                    stopping: Callable[[], bool], check_s: float = 1.0) -> None:
    """Listen on one connection until it closes or `stopping()` (looked at every `check_s`)."""
    def on_notify(*_) -> None:
        wake()

    await conn.add_listener(channel, on_notify)
    wake()  # anything committed before we listened
    beat().progress()  # progress: listening
    try:
        while not conn.is_closed() and not stopping():
            await asyncio.sleep(check_s)
    finally:
        await unlisten(conn, channel, on_notify)


async def unlisten(conn: asyncpg.Connection, channel: str, callback: Callable) -> None:
    """Before a connection goes back to the pool: its listener dropped, so that no stopped
    component's callback stays on it (asyncpg warns of one at the release). A lost connection
    cannot UNLISTEN: it is terminated, which drops its listeners, and the pool replaces it.
    InterfaceError: mid-query (the listener is dropped here all the same, and the pool's reset
    runs UNLISTEN *), or the pool already took the lost connection back."""
    with contextlib.suppress(*DB_ERRORS):
        if conn.is_closed():
            conn.terminate()
            return
        await conn.remove_listener(channel, callback)
