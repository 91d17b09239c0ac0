"""The intake loops' log: a line a minute at most of what was taken in (a trickle of rows made a
line per batch), refused rows a warning at once. Pure: a clock of our own, no database."""
from __future__ import annotations

import structlog

from tracker.intake import IntakeResult
from tracker.intake.loops import SUMMARY_EVERY_S, _Summary


def test_batches_are_summed_into_a_line_a_minute_and_refusals_warned_at_once():
    now = [1000.0]
    summary = _Summary(clock=lambda: now[0])
    with structlog.testing.capture_logs() as logs:
        summary.add(IntakeResult(rows=2, messages=2))  # the first batch: said at once
        for _ in range(30):
            now[0] += 1
            summary.add(IntakeResult(rows=3, messages=4))
        now[0] += 1
        summary.add(IntakeResult(rows=5, messages=4, refused=1))
        now[0] = 1000.0 + SUMMARY_EVERY_S
        summary.add(IntakeResult(rows=1, messages=1))
    assert [(e["log_level"], e["event"]) for e in logs] == [
        ("info", "intake"),
        ("warning", "intake refused rows: their reasons are in tracker.intake_problems"),
        ("info", "intake")]
    assert (logs[0]["rows"], logs[0]["messages"], logs[0]["refused"]) == (2, 2, 0)
    assert (logs[1]["refused"], logs[1]["rows"]) == (1, 5)
    assert (logs[2]["rows"], logs[2]["messages"], logs[2]["refused"]) == (30 * 3 + 5 + 1, 30 * 4 + 4 + 1, 1)
