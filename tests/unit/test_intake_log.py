"""The intake loops' log: a line a minute at most of what was taken in (a trickle of rows made a
line per batch), a warning when rows were refused meanwhile; what is pending is said once intake
goes quiet and at a stop. Pure: a clock of our own, no database."""
from __future__ import annotations

import structlog

from tracker.intake import IntakeResult
from tracker.intake.loops import SUMMARY_EVERY_S, _Summary

REFUSED = "intake: rows refused, their reasons in tracker.intake_problems"


def said(logs) -> list[tuple]:
    return [(e["log_level"], e["event"], e["rows"], e["messages"], e["refused"]) for e in logs]


def test_batches_are_summed_into_a_line_a_minute_a_warning_when_rows_were_refused():
    now = [1000.0]
    summary = _Summary(clock=lambda: now[0])
    with structlog.testing.capture_logs() as logs:
        summary.add(IntakeResult(rows=2, messages=2))  # the first batch: said at once
        for _ in range(30):  # a trickle: one row each 1 s, a bad one among them
            now[0] += 1
            summary.add(IntakeResult(rows=3, messages=4))
        now[0] += 1
        summary.add(IntakeResult(rows=5, messages=4, refused=1))
        now[0] = 1000.0 + SUMMARY_EVERY_S
        summary.add(IntakeResult(rows=1, messages=1))
        now[0] += 1
        summary.add(IntakeResult(rows=1, messages=1))
    assert said(logs) == [("info", "intake", 2, 2, 0),
                          ("warning", REFUSED, 30 * 3 + 5 + 1, 30 * 4 + 4 + 1, 1)]


def test_what_is_pending_is_said_once_intake_is_quiet_and_at_a_stop():
    now = [1000.0]
    summary = _Summary(clock=lambda: now[0])
    with structlog.testing.capture_logs() as logs:
        summary.add(IntakeResult(rows=1, messages=1))
        now[0] += 5
        summary.add(IntakeResult(rows=50_000, messages=50_000))  # within the minute: pending
        for _ in range(24):  # then quiet: a look every 5 s finds nothing
            now[0] += 5
            summary.add(IntakeResult())
        assert said(logs) == [("info", "intake", 1, 1, 0), ("info", "intake", 50_000, 50_000, 0)]
        summary.add(IntakeResult(rows=7, messages=7))  # after a quiet minute: at once
        summary.add(IntakeResult(rows=2, messages=2))
        summary.flush()  # the stop
    assert said(logs)[2:] == [("info", "intake", 7, 7, 0), ("info", "intake", 2, 2, 0)]
