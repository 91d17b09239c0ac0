"""What each signal does to the daemon (tracker.run.signalled): SIGTERM and SIGINT stop it; SIGHUP
stops a run whose terminal hung up, and under systemd (no terminal) is logged and changes
nothing (unhandled, it killed the daemon on the spot and left its embedded cluster running); a
signal during a stop is logged, not dropped in silence."""
from __future__ import annotations

import signal

import pytest
import structlog

from tracker.app import Tracker
from tracker.config_types import Config
from tracker.run import signalled


@pytest.fixture
def tracker():
    return Tracker(Config())


def events(logs):
    return [(e["event"], e.get("signal")) for e in logs]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_stop_once_and_say_so(tracker, sig):
    with structlog.testing.capture_logs() as logs:
        signalled(tracker, sig, False)
        assert tracker.stopping.is_set()
        signalled(tracker, signal.SIGTERM, False)  # a second one while stopping
    assert events(logs) == [("stop asked", sig.name),
                            ("stop already under way: still waiting for what is in flight", "SIGTERM")]


def test_sighup_without_a_terminal_changes_nothing_and_is_logged(tracker):
    with structlog.testing.capture_logs() as logs:
        signalled(tracker, signal.SIGHUP, False)
    assert not tracker.stopping.is_set()
    assert logs[0]["log_level"] == "warning" and logs[0]["event"].startswith("SIGHUP ignored")


def test_sighup_from_a_terminal_that_hung_up_stops(tracker):
    with structlog.testing.capture_logs() as logs:
        signalled(tracker, signal.SIGHUP, True)
    assert tracker.stopping.is_set()
    assert events(logs) == [("stop asked", "SIGHUP")]


async def test_a_second_signal_during_the_drain_ends_it_at_once():
    # Ctrl-C twice, or a second SIGTERM: the operator does not want to wait out http.drain_s
    import asyncio
    import dataclasses

    config = Config()
    tracker = Tracker(dataclasses.replace(config, http=dataclasses.replace(config.http, drain_s=30.0)))
    with structlog.testing.capture_logs() as logs:
        signalled(tracker, signal.SIGTERM, False)
        draining = asyncio.create_task(tracker.drain.run())
        while not tracker.drain.under_way:
            await asyncio.sleep(0)
        signalled(tracker, signal.SIGINT, False)
        await asyncio.wait_for(draining, 5)  # not the 30 s
    assert [e["event"] for e in logs] == [
        "stop asked", "draining: /readyz answers 503 and requests are still answered",
        "drain cut short: stopping now"]
