"""The appliers' in-memory backlog is bounded (worker.RECEIVED_MAX): a stored batch beyond it is
left to the sweep, which parses it again from its rows, and the first of them is said (a line a
minute). Unbounded, an apply that could not keep up held every parsed postback in memory."""
from __future__ import annotations

from datetime import datetime, timezone

import structlog

from tracker.config_types import Config
from tracker.postbacks import worker
from tracker.postbacks.process import Parsed


def parsed(n: int, first_id: int = 1) -> list[Parsed]:
    return [Parsed(i, datetime.now(timezone.utc), []) for i in range(first_id, first_id + n)]


def test_a_batch_past_the_cap_is_left_to_the_sweep_and_said(monkeypatch):
    monkeypatch.setattr(worker, "RECEIVED_MAX", 5)
    w = worker.ApplyWorker(None, Config(), None)
    w.take(parsed(3))
    with structlog.testing.capture_logs() as logs:
        w.take(parsed(3, 4))  # 6 > 5: left to the sweep
        w.take(parsed(2, 7))  # 5: taken
        w.take(parsed(1, 9))  # over again: no second line within the minute
    assert [p.id for p in w.received] == [1, 2, 3, 7, 8]
    assert [(e["event"], e["rows"], e["waiting"]) for e in logs] == [
        ("postbacks stored faster than they are applied: left to the sweep", 3, 3)]
