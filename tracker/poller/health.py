"""A vendor's health on this replica: its circuit breaker (the pure rules are in
tracker.poller.circuit) and its poll counters, flushed to tracker.poll_stats by the Poller
(tracker.vendor_health sums them over replicas). Every poll's outcome comes through record():
it counts the poll, tells the supervisor a poll was answered, and moves the circuit.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tracker import metrics
from tracker.config_types import VendorConfig
from tracker.logging import get_logger, scrub
from tracker.poller import circuit as cb
from tracker.poller.clock import Clock
from tracker.supervisor import beat

log = get_logger("tracker.poller")

CLOSED = cb.Circuit()
MIN_REOPEN_WAIT_S = 0.1  # messages handed back by an open circuit come due no sooner


@dataclass
class Stats:
    """Counters since the last flush to tracker.poll_stats."""

    ok: int = 0
    failed: int = 0
    last_success_at: datetime | None = None
    last_error_at: datetime | None = None
    last_error: str | None = None

    def merge(self, later: "Stats") -> "Stats":
        """These counts followed by `later`'s."""
        return Stats(self.ok + later.ok, self.failed + later.failed,
                     later.last_success_at or self.last_success_at,
                     later.last_error_at or self.last_error_at,
                     later.last_error if later.last_error_at else self.last_error)


class VendorHealth:
    def __init__(self, cfg: VendorConfig, clock: Clock):
        self.name = cfg.name
        self.cfg = cfg
        self.clock = clock
        self.circuit = CLOSED
        self.circuit_since = clock.now()
        self.stats = Stats()
        self.m_polls = {o: metrics.polls.labels(self.name, o) for o in ("ok", "error", "account")}
        self.m_seconds = metrics.poll_seconds.labels(self.name)
        # closed at start: a series from the first scrape ("No data" on a healthy daemon's
        # circuit panel could not be told from a vendor not polled)
        metrics.circuit_open.labels(self.name).set(0)

    # --- the circuit ----------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.circuit.state == "open"

    def reopens_in(self) -> float:
        """Seconds until a probe may go (0: polls may go now)."""
        return cb.reopens_in(self.circuit, self.clock.monotonic(), self.cfg.circuit_reset_s)

    def reopen_wait(self) -> float:
        """When messages handed back by an open circuit come due again."""
        return max(self.reopens_in(), MIN_REOPEN_WAIT_S)

    def allow(self) -> tuple[bool, bool]:
        """(may a batch go now, is it the half-open probe: one message only)."""
        c, may = cb.allow(self.circuit, self.clock.monotonic(), self.cfg.circuit_reset_s)
        self._set(c)
        return may, c.state == "half_open"

    def release_probe(self) -> None:
        """The probe allowed did not go out (nothing due, told to wait, a failure before it
        was sent): let the next one go."""
        self._set(cb.release_probe(self.circuit))

    def rest(self) -> None:
        """This replica holds no concurrency slot, so it can send no probe: an open circuit whose
        wait is over goes half-open with no probe out (as after a probe with nothing due), not
        "open" for ever in vendor_health and the gauge while other replicas poll the vendor."""
        if self.circuit.state == "open" and self.reopens_in() <= 0:
            c, _ = cb.allow(self.circuit, self.clock.monotonic(), self.cfg.circuit_reset_s)
            self._set(cb.release_probe(c))

    def _set(self, c: cb.Circuit) -> None:
        if c.state != self.circuit.state:
            self.circuit_since = self.clock.now()
        if (c.state, c.probing) != (self.circuit.state, self.circuit.probing):
            # 1 while open, and while the half-open probe is out (the vendor has not answered
            # well yet: a 0 for the probe's timeout reset the alert's `for:` every cycle); 0
            # half-open with no probe out (nothing due to probe with: an idle vendor)
            probing = c.state == "half_open" and c.probing
            metrics.circuit_open.labels(self.name).set(1 if c.state == "open" or probing else 0)
        self.circuit = c

    # --- outcomes -------------------------------------------------------------------------------

    def took(self, seconds: float) -> None:
        self.m_seconds.observe(seconds)

    def record(self, outcome: cb.Outcome, error: str | None = None) -> None:
        """One poll's outcome: "ok", "error" (transient) or "account" (with what went wrong)."""
        now = self.clock.now()
        beat().progress()  # a poll answered (or failed): a long tick is not stuck
        self.m_polls[outcome].inc()
        if outcome == "ok":
            self.stats.ok += 1
            self.stats.last_success_at = now
            if self.circuit == CLOSED:
                return  # the usual case: nothing about the circuit to record
        else:
            self.stats.failed += 1
            # Stored in tracker.poll_stats (vendor_health): masked like a log line, since a
            # vendor's error text may echo a key or token it was sent; masked before it is cut
            # (cut first, a secret across the cut would leave its start).
            self.stats.last_error_at, self.stats.last_error = now, scrub(error or outcome)[:200]
        before = self.circuit.state
        self._set(cb.record(self.circuit, outcome, self.clock.monotonic(), self.cfg.circuit_failures))
        if self.circuit.state == "open" and before != "open":
            log.warning("vendor circuit open: polls paused", vendor=self.name,
                        reason=self.stats.last_error, probe_in_s=self.cfg.circuit_reset_s)
        elif self.circuit.state == "closed" and before != "closed":
            log.info("vendor circuit closed: polling again", vendor=self.name)

    def take_stats(self) -> Stats:
        s, self.stats = self.stats, Stats()
        return s

    def keep_stats(self, unwritten: Stats) -> None:
        """Counts a flush could not write, for the next one."""
        self.stats = unwritten.merge(self.stats)
