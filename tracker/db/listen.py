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
# A listening connection only reads: one whose server went silent was never noticed (intake and
# the sinks fell back to their sweeps, in silence, until a restart). It is asked a question this
# often, and one not answered this soon ends it: listened on again, on a new connection.
PING_EVERY_S = 30.0
PING_TIMEOUT_S = 5.0


class ListenerSilent(ConnectionError):
    """The listening connection did not answer a ping: taken as lost."""


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
            log.warning("listener lost; reconnecting", channel=channel, error=type(e).__name__,
                        reason=str(e)[:200] if isinstance(e, ListenerSilent) else None)
        await asyncio.sleep(RECONNECT_S)


async def listen_on(conn: asyncpg.Connection, channel: str, wake: Callable[[], None],
                    stopping: Callable[[], bool], check_s: float = 1.0) -> None:
    """Listen on one connection until it closes, stops answering (ListenerSilent), or
    `stopping()` (looked at every `check_s`)."""
    def on_notify(*_) -> None:
        wake()

    await conn.add_listener(channel, on_notify)
    wake()  # anything committed before we listened
    beat().progress()  # progress: listening
    loop = asyncio.get_running_loop()
    ping_at = loop.time() + PING_EVERY_S
    try:
        while not conn.is_closed() and not stopping():
            await asyncio.sleep(check_s)
            if loop.time() >= ping_at and not conn.is_closed():
                try:
                    await conn.fetchval("SELECT 1", timeout=PING_TIMEOUT_S)
                except asyncio.TimeoutError:
                    conn.terminate()  # nothing waits for a server that does not answer
                    raise ListenerSilent(f"no answer to a ping within {PING_TIMEOUT_S:g} s") from None
                ping_at = loop.time() + PING_EVERY_S
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
