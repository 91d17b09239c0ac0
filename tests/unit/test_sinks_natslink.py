"""The NATS sink's connection helpers (tracker.sinks.natslink), pure parts: the quiet log of
nats-py's error callback and the bound on a first connection."""
from __future__ import annotations

from tracker.config_types import NatsSinkConfig
from tracker.sinks.natslink import ATTEMPT_STEPS, RECONNECT_WAIT_S, Quiet, connect_bound_s


def test_quiet_logs_once_per_period_and_counts_what_it_left_out():
    now = [100.0]
    q = Quiet(30.0, clock=lambda: now[0])
    assert q.allow() == (True, 0)  # the first is logged at once
    for _ in range(59):  # nats-py's twice a second, for half a minute
        now[0] += 0.5
        assert q.allow() == (False, 0)
    now[0] += 0.5
    assert q.allow() == (True, 59)  # the next line says how many were left out
    now[0] += 29.9
    assert q.allow() == (False, 0)
    now[0] += 1.0
    assert q.allow() == (True, 1)


def test_the_first_connection_is_bounded_by_the_sinks_settings():
    one = NatsSinkConfig(name="a", servers=("nats://127.0.0.1:4222",), timeout_s=2.0)
    two = NatsSinkConfig(name="b", servers=("nats://h1:4222", "nats://h2:4222"), timeout_s=0.2)
    assert connect_bound_s(one) == ATTEMPT_STEPS * 2 + RECONNECT_WAIT_S
    assert connect_bound_s(two) == 2 * (ATTEMPT_STEPS * 1 + RECONNECT_WAIT_S)  # at least 1 s each
