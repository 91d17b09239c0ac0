"""A NATS sink's connection to its broker (tracker.sinks.jetstream uses it).

nats-py applies `max_reconnect_attempts = -1` to the first connection too: `Client.connect`
would try an unreachable broker (or refuse bad credentials) forever, calling only its error
callback. So the first connection is bounded here: it ends with NotConnected, the client
closed, once every server has failed once (each failure comes through the error callback) or
after `connect_bound_s` or when the sink stops, whichever is first; the sink then records the
error and backs off.
An established connection keeps nats-py's own reconnecting (its publishes fail meanwhile, and
the sink starts over after its backoff).

nats-py reports every failed attempt through the error callback, about twice a second per
server while a broker is down: logged here at most once per LOG_EVERY_S, the next line carrying
`suppressed`, the count of those left out.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Callable

import nats.errors
from nats.aio.client import Client

from tracker.config_types import NatsSinkConfig
from tracker.logging import get_logger, scrub
from tracker.sinks.checks import nats_credentials

log = get_logger("tracker.sinks.nats")

RECONNECT_WAIT_S = 0.5  # nats-py's wait between attempts on one server
ATTEMPT_STEPS = 3  # a connection attempt: TCP (and TLS), INFO, CONNECT/PONG, each up to connect_timeout
LOG_EVERY_S = 30.0


class NotConnected(nats.errors.Error):
    """No server of the sink's list took the first connection."""


class Quiet:
    """At most one log line per `every_s`; `allow()` says whether to log now and how many were
    left out since the last one."""

    def __init__(self, every_s: float, clock: Callable[[], float] = time.monotonic):
        self.every_s, self.clock = every_s, clock
        self.last = float("-inf")
        self.suppressed = 0

    def allow(self) -> tuple[bool, int]:
        now = self.clock()
        if now - self.last < self.every_s:
            self.suppressed += 1
            return False, 0
        left_out, self.last, self.suppressed = self.suppressed, now, 0
        return True, left_out


def connect_timeout_s(cfg: NatsSinkConfig) -> int:
    return max(1, int(cfg.timeout_s))  # nats-py wants whole seconds


def connect_bound_s(cfg: NatsSinkConfig) -> float:
    """How long the first connection may take: each server one full attempt."""
    return len(cfg.servers) * (ATTEMPT_STEPS * connect_timeout_s(cfg) + RECONNECT_WAIT_S)


class Link:
    """The sink's connection; its callbacks log in the sink's name."""

    def __init__(self, cfg: NatsSinkConfig):
        self.cfg, self.name = cfg, cfg.name
        self.connected = False  # the current client got through its first connection
        self.failures: list[str] = []  # errors of the first connection under way
        self.all_failed = asyncio.Event()
        self.stopped = asyncio.Event()  # the sink stops: a first connection under way gives up
        self.quiet = Quiet(LOG_EVERY_S)
        self.said: tuple[float, str] | None = None  # the broker's last error while connected, when

    async def connect(self) -> Client:
        """A connected client, or NotConnected (the client closed)."""
        nc = Client()
        self.connected, self.failures = False, []
        self.all_failed = asyncio.Event()
        bound = connect_bound_s(self.cfg)
        servers, credentials = nats_credentials(self.cfg.servers) or (list(self.cfg.servers), {})
        attempt = asyncio.ensure_future(nc.connect(
            servers=servers, **credentials, name=f"sms-delivery-tracker sink {self.name}",
            connect_timeout=connect_timeout_s(self.cfg), allow_reconnect=True,
            max_reconnect_attempts=-1, reconnect_time_wait=RECONNECT_WAIT_S,
            error_cb=self._on_error, disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected))
        gave_up = [asyncio.ensure_future(e.wait()) for e in (self.all_failed, self.stopped)]
        try:
            await asyncio.wait({attempt, *gave_up}, timeout=bound, return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when cancelled: no attempt, no client outlives this call
            for t in gave_up:
                t.cancel()
            if not attempt.done():
                attempt.cancel()
            await asyncio.gather(attempt, *gave_up, return_exceptions=True)
            if attempt.cancelled() or attempt.exception() is not None:
                await self.close(nc)
        if not attempt.cancelled():
            if attempt.exception() is not None:
                raise attempt.exception()
            self.connected = True
            return nc
        last = (self.failures[-1] if self.failures else "stopping" if self.stopped.is_set()
                else f"no answer within {bound:g} s")
        raise NotConnected(f"could not connect to the broker ({len(self.cfg.servers)} server(s)"
                           f" tried): {last}")

    async def close(self, nc: Client) -> None:
        self.connected = False  # its disconnected callback is no loss to report
        with contextlib.suppress(Exception):
            await nc.close()

    # nats-py's callbacks: its own reconnecting, in our log
    async def _on_error(self, e: Exception) -> None:
        error = scrub(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)[:300]
        if not self.connected:  # the first connection: the sink records and logs it
            self.failures.append(error)
            if len(self.failures) >= len(self.cfg.servers):
                self.all_failed.set()
            return
        self.said = (time.monotonic(), error)
        ok, suppressed = self.quiet.allow()
        if ok:
            log.warning("NATS connection error", sink=self.name, error=error,
                        **({"suppressed": suppressed} if suppressed else {}))

    def recent_error(self, within_s: float) -> str:
        """What the broker last said went wrong, if within `within_s` (while the publish that
        failed was waiting: an older error is another's): a publish it refused (a permissions
        violation) times out, and the timeout alone sends an operator after the network."""
        if self.said is None or time.monotonic() - self.said[0] > within_s:
            return ""
        return f" (the broker said {time.monotonic() - self.said[0]:.0f} s ago: {self.said[1]})"

    async def _on_disconnected(self) -> None:
        if self.connected:
            log.warning("NATS connection lost; reconnecting", sink=self.name)

    async def _on_reconnected(self) -> None:
        log.info("NATS connection back", sink=self.name)
