"""The daemon component that runs the configured sinks (tracker.app lists it).

start(): registers every enabled sink (tracker.sinks rows), then runs one supervised loop per
sink (component `sink:<name>`), one listener on `LISTEN tracker_events` that wakes them all
(component `sinks-listener`; each loop's own timer, `sinks.poll_interval_s`, is the backstop),
a sweep that refreshes `tracker_sink_lag_events` and `tracker_sink_disabled` from
tracker.sink_status, and one (`sweep:sinks-seen`, every store.SEEN_EVERY_S) that writes that this
daemon runs its sinks (tracker.sink_runners: `tracker sinks forget` refuses them while it does)
and tells a loop whose sink's row is gone, which then fails (store.SinkGone) until it is back.
stop(): tells each loop to stop; a webhook loop lets its requests in flight finish (up to its
timeout, within the stop's grace) and records them, settles its batches and drops its reader
lease within the margin after it; whatever is not recorded is sent again after its lease. Then
this daemon's runner rows go (a forget may follow at once); if the database does not take that,
a forget is refused until they are store.SEEN_FRESH_S old.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket

from tracker import metrics
from tracker.db import DB_ERRORS
from tracker.db.listen import listen
from tracker.logging import get_logger, register_secret
from tracker.sinks import described, store
from tracker.sinks.jetstream import NatsSink
from tracker.sinks.webhook import WebhookSink

log = get_logger("tracker.sinks")

CHANNEL = "tracker_events"
LAG_SWEEP_S = 10.0
STOP_GRACE_MARGIN_S = 5.0
# A delivery in flight at a stop gets its timeout, but no more than this: a stop must end within
# systemd's TimeoutStopSec (deploy/tracker.service) whatever `timeout_s` says (up to 300 s). One
# cut off is not lost: its event stays undelivered and goes again after the next start (receivers
# dedupe by webhook-id / Nats-Msg-Id).
STOP_GRACE_MAX_S = 10.0


class Sinks:
    def __init__(self, tracker) -> None:
        self.tracker = tracker
        self.config = tracker.config.sinks
        for secret in described.secrets_of(self.config):  # a Config built in code, not loaded
            register_secret(secret)
        self.loops: list[WebhookSink | NatsSink] = []
        self.tasks: list[asyncio.Task] = []
        self.stopping = False
        # who runs the sinks, as `tracker sinks forget` names it: this daemon's start
        self.runner = f"{socket.gethostname()} pid {os.getpid()} {secrets.token_hex(3)}"
        self.seeing = asyncio.Lock()  # a heartbeat never writes after the stop's release

    def configured(self) -> list[tuple[str, str]]:
        return ([(w.name, "webhook") for w in self.config.webhooks.values() if w.enabled]
                + [(n.name, "nats") for n in self.config.nats.values() if n.enabled])

    async def start(self) -> None:
        sinks = self.configured()
        pool = self.tracker.pool
        async with pool.acquire() as conn:
            self._left_behind(await store.status(conn), {name for name, _ in sinks})
        if not sinks:
            return
        async with pool.acquire() as conn:
            new = await store.register(conn, sinks)
            await store.see(conn, [name for name, _ in sinks], self.runner)
        for name in new:  # a forgotten sink still configured is one too: every event kept goes again
            log.info("sink new to the database: it starts at the oldest event kept", sink=name)
        self.stopping = False
        self.loops = ([WebhookSink(w, pool, self.config) for w in self.config.webhooks.values() if w.enabled]
                      + [NatsSink(n, pool, self.config) for n in self.config.nats.values() if n.enabled])
        spawn, stopping = self.tracker.supervisor.spawn, lambda: self.stopping
        self.tasks = [spawn(f"sink:{s.name}", s.run, stopping=stopping) for s in self.loops]
        self.listener = spawn("sinks-listener", self._listen, stopping=stopping)
        self.tracker.every("sinks-lag", LAG_SWEEP_S, self.refresh_lag)
        self.tracker.every("sinks-seen", store.SEEN_EVERY_S, self.see)
        log.info("sinks started", sinks=[f"{kind}:{name}" for name, kind in sinks])

    async def stop(self) -> None:
        if not self.loops:
            return
        self.stopping = True
        grace = min(max(s.cfg.timeout_s for s in self.loops), STOP_GRACE_MAX_S)
        for s in self.loops:
            s.stop(grace)  # the margin is left for recording what came back
        self.listener.cancel()  # it holds nothing
        await self.tracker.supervisor.stop_tasks([*self.tasks, self.listener], grace + STOP_GRACE_MARGIN_S)
        for job in ("sinks-lag", "sinks-seen"):
            with contextlib.suppress(Exception):  # gone with a scheduler already shut down
                self.tracker.scheduler.remove_job(job)
        await self._release()
        self.tasks, self.loops = [], []

    @staticmethod
    def _left_behind(rows, running: set[str]) -> None:
        """A sink the database has and this daemon does not run (taken out of the configuration,
        or `enabled = false`) holds back the removal of every event it has not acknowledged:
        said at each start, or the disk grows with nobody told (a sink that never acknowledged
        anything has no cursor, so no consumer lag either)."""
        for r in rows:
            if r["sink"] not in running:
                log.warning("sink in the database but not run by this daemon: the events it has not"
                            " acknowledged are kept for it; if no daemon runs it any more,"
                            " `tracker sinks forget` it", sink=r["sink"], events_behind=r["events_behind"])

    async def see(self) -> None:
        """Write that this daemon runs its sinks; a loop whose row is gone is told (and woken),
        and fails at its next turn; one whose row is back (a daemon started with it) goes on."""
        async with self.seeing:
            if self.stopping:
                return
            async with self.tracker.pool.acquire() as conn:
                found = await store.see(conn, [s.name for s in self.loops], self.runner)
            for s in self.loops:
                if s.gone != (s.name not in found):
                    s.gone = s.name not in found
                    s.wake()

    async def _release(self) -> None:
        async def release() -> None:
            async with self.seeing, self.tracker.pool.acquire() as conn:
                await store.release(conn, self.runner)

        try:
            await asyncio.wait_for(release(), STOP_GRACE_MARGIN_S)
        except DB_ERRORS as e:
            log.warning("sinks: could not write that this daemon stopped running them; `tracker "
                        f"sinks forget` refuses them for {store.SEEN_FRESH_S:.0f} s more",
                        error=type(e).__name__)

    def wake_all(self) -> None:
        for s in self.loops:
            s.wake()

    async def _listen(self) -> None:
        """Wake every sink on NOTIFY tracker_events (one per published batch of transitions)."""
        await listen(lambda: self.tracker.pool, CHANNEL, self.wake_all, lambda: self.stopping)

    async def refresh_lag(self) -> None:
        async with self.tracker.pool.acquire() as conn:
            rows = await store.lag(conn)
        running = {s.name for s in self.loops}
        for r in rows:
            if r["sink"] in running:
                metrics.sink_lag.labels(r["sink"]).set(r["events_behind"])
                metrics.sink_disabled.labels(r["sink"]).set(1 if r["disabled"] else 0)
