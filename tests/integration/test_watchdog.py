"""The systemd watchdog ping (tracker.systemd) of a running tracker: it comes from the event loop,
so a blocked loop stops it by itself, and it is held back while a component is wedged (busy
without progress), so that systemd restarts the service. NOTIFY_SOCKET points at a datagram
socket the test owns; a thread reads it, so that it keeps reading while the loop is blocked."""
from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading
import time

import structlog

from tests.polling_support import wait_until
from tests.postbacks_support import config_for, running, session
from tracker import intake

PING_S = 0.1  # WATCHDOG_USEC is twice this


class NotifySocket:
    """What the tracker sends to systemd, with the monotonic time it arrived."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.05)
        self.received: list[tuple[float, str]] = []
        self.closed = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.closed:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            self.received.append((time.monotonic(), data.decode()))

    def pings_since(self, t: float) -> list[float]:
        return [at for at, msg in list(self.received) if msg == "WATCHDOG=1" and at > t]

    def close(self) -> None:
        self.closed = True
        self.thread.join()
        self.sock.close()


def watched(monkeypatch, tmp_path) -> NotifySocket:
    path = str(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", str(int(PING_S * 2_000_000)))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    return NotifySocket(path)


async def _true(value: bool) -> bool:
    return value


async def _pinged_since(notify: NotifySocket, t: float, n: int = 1) -> bool:
    return len(notify.pings_since(t)) >= n


async def test_a_wedged_component_stops_the_ping_until_it_moves_again(db_dsn, monkeypatch, tmp_path):
    notify = watched(monkeypatch, tmp_path)
    release = asyncio.Event()
    hang = False
    real = intake.take_in

    async def take_in(*args, **kwargs):
        if hang:
            await release.wait()  # wedged: busy, no progress
        return await real(*args, **kwargs)

    monkeypatch.setattr(intake, "take_in", take_in)
    config = config_for(db_dsn)
    config = dataclasses.replace(config, health=dataclasses.replace(
        config.health, wedged_after_s=0.5, intake_stall_s=0.5))
    try:
        with structlog.testing.capture_logs() as logs:
            async with running(config) as (tr, base), session() as s:
                await wait_until(lambda: _pinged_since(notify, 0, 3), 5, step=0.05)
                assert "READY=1" in [m for _, m in notify.received]
                hang = True
                await tr.pool.execute("INSERT INTO tracker.submissions (vendor, vendor_ref, recipient)"
                                      " VALUES ('sparksender', 'wedge-1', '639170000001')")

                async def held_back() -> bool:
                    return any(e["event"].startswith("watchdog ping held back") for e in logs)

                await wait_until(held_back, 5, step=0.05)
                stopped_at = time.monotonic()
                async with s.get(base + "/readyz") as r:
                    body = await r.json()
                assert r.status == 503
                reasons = [p["reason"] for p in body["problems"] if p["component"] == "intake"]
                assert any("without progress" in x for x in reasons), body
                # No ping for ten intervals (an absence: nothing to poll for but time).
                await asyncio.sleep(10 * PING_S)
                assert notify.pings_since(stopped_at) == []
                release.set()  # intake moves again: the row goes in, the pings resume
                await wait_until(lambda: _pinged_since(notify, stopped_at), 5, step=0.05)
                held = [e for e in logs if e["event"].startswith("watchdog ping held back")]
                assert len(held) == 1 and any(p.startswith("intake") and "busy for" in p
                                              for p in held[0]["problems"])
        await wait_until(lambda: _true("STOPPING=1" in [m for _, m in notify.received]), 5, step=0.05)
    finally:
        notify.close()


async def test_a_blocked_event_loop_stops_the_ping(db_dsn, monkeypatch, tmp_path):
    notify = watched(monkeypatch, tmp_path)
    try:
        async with running(config_for(db_dsn)):
            await wait_until(lambda: _pinged_since(notify, 0, 2), 5, step=0.05)
            blocked_at = time.monotonic()
            time.sleep(6 * PING_S)  # the loop is blocked: nothing of ours runs
            unblocked_at = time.monotonic()
            await wait_until(lambda: _pinged_since(notify, unblocked_at - 0.01), 5, step=0.05)
    finally:
        notify.close()
    # A ping sent just before the block may arrive inside it; none after that one.
    during = [t for t in notify.pings_since(blocked_at) if t < unblocked_at - 0.01]
    assert len(during) <= 1, during


async def test_a_notify_socket_that_is_gone_neither_stops_the_start_nor_the_stop(
        db_dsn, monkeypatch, tmp_path):
    # READY=1 to a socket that is gone raised: the daemon did not start; STOPPING=1 raised before
    # any part was stopped (an embedded cluster was left running). Now each is logged once.
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    with structlog.testing.capture_logs() as logs:
        async with running(config_for(db_dsn)) as (tr, base), session() as s:
            async with s.get(base + "/readyz") as r:
                assert r.status == 200
        assert tr.pool.is_closing()  # stopped: its parts too
    unheard = [e for e in logs if e["event"] == "systemd notification not sent"]
    assert {e["notification"] for e in unheard} == {"READY", "STOPPING"}
    assert all("FileNotFoundError" in e["error"] for e in unheard)
