"""The daemon's database sessions: what the main pool's are set to (session_settings), how every
connection notices a peer gone silent (keep_alive), and how no connection of the tracker's hands
out an id again after the database went back in time (ids_past_now).

A database connection whose server or network went silent (a NAT table flushed, a failover
that dropped packets, a frozen host) was never noticed: its socket stayed open, a statement on
it waited for ever, a pool connection handed back after a cancel waited for the server to
confirm it, and a LISTEN connection slept on. /readyz said ready for two minutes, postbacks were
answered 503 until the watchdog killed the daemon, and without a watchdog nothing recovered.

So every connection of the daemon over TCP probes its peer (`keep_alive`, the pools' `init`):
probes after 30 s of silence, every 10 s, three unanswered and the kernel closes it; data unacknowledged
for 60 s closes it too. asyncpg then sees the connection lost, which the components take as
an outage (they wait, /readyz says so) and the pool replaces it. The server probes its side
the same way (SERVER_KEEPALIVE, session settings), so that its sessions of a vanished client do
not hold connection slots for hours. A Unix socket (the embedded cluster) has no such fault."""
from __future__ import annotations

import socket

import asyncpg

from tracker.db import queries as q

IDLE_S, INTERVAL_S, COUNT = 30, 10, 3
USER_TIMEOUT_MS = 60_000
SERVER_KEEPALIVE = {"tcp_keepalives_idle": str(IDLE_S), "tcp_keepalives_interval": str(INTERVAL_S),
                    "tcp_keepalives_count": str(COUNT), "tcp_user_timeout": str(USER_TIMEOUT_MS)}
_OPTIONS = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)] + [
    (socket.IPPROTO_TCP, getattr(socket, name), value)
    for name, value in (("TCP_KEEPIDLE", IDLE_S), ("TCP_KEEPINTVL", INTERVAL_S),
                        ("TCP_KEEPCNT", COUNT), ("TCP_USER_TIMEOUT", USER_TIMEOUT_MS))
    if hasattr(socket, name)]  # Linux has them all


def keep_alive(conn: asyncpg.Connection) -> None:
    """Probe the peer of `conn`'s TCP socket (above); nothing for a Unix socket. asyncpg has no
    option for it: its transport's socket (asyncpg issue 606)."""
    transport = getattr(conn, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    for level, option, value in _OPTIONS:
        sock.setsockopt(level, option, value)


async def ids_past_now(conn: asyncpg.Connection) -> None:
    """The schema's id sequences moved past any id a restored backup or a promoted standby lost
    (queries.IDS_PAST_NOW), before `conn` inserts anything: run by each new connection of the
    pools and of the one-off commands, so that neither a restore nor a failover needs a step
    an operator could forget. Its errors are the connection's: an outage is one to connect; a
    refusal (a role that may not set the sequences) stops the start with one line naming it,
    and later fails the component that wanted the connection (counted, named by /readyz)."""
    await conn.execute(q.IDS_PAST_NOW)


async def init(conn: asyncpg.Connection) -> None:
    """The main pool's `init`: each new connection probes its peer and moves the ids (above)."""
    keep_alive(conn)
    await ids_past_now(conn)


def session_settings(wedged_after_s: float) -> dict[str, str]:
    """The main pool's sessions. Every transaction that leads to a 200 or a transition is
    durable at commit, whatever the role's or the database's default (a startup option outranks
    ALTER ROLE/DATABASE ... SET). A lock is waited for half of health.wedged_after_s at most:
    held longer by another session (an operator's LOCK TABLE or ALTER TABLE on
    tracker.messages), a statement fails: counted, its component restarted and named by /readyz. Waited for without end, it kept intake and the pollers busy until they
    counted as wedged, which holds back the watchdog: systemd killed every replica at once, for
    a lock no restart can take."""
    return {"synchronous_commit": "on", "lock_timeout": f"{round(wedged_after_s * 500)}ms",
            "application_name": "tracker",  # named in pg_stat_activity, as its other sessions are
            **SERVER_KEEPALIVE}  # a session of a vanished daemon ends (above)
