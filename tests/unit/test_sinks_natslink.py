"""The NATS sink's connection helpers (tracker.sinks.natslink), pure parts: the quiet log of
nats-py's error callback and the bound on a first connection."""
from __future__ import annotations

import pytest

from tracker.config_types import NatsSinkConfig
from tracker.sinks.checks import nats_credentials
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


@pytest.mark.parametrize("servers,bare,options", [
    (["nats://h:4222"], ["nats://h:4222"], {}),
    (["nats://u:p%40ss%2F1@h:4222", "nats://u:p%40ss%2F1@g:4222"], ["nats://h:4222", "nats://g:4222"],
     {"user": "u", "password": "p@ss/1"}),
    (["nats://t%3Aok@[::1]:4222"], ["nats://[::1]:4222"], {"token": "t:ok"}),
])
def test_the_servers_credentials_are_given_decoded_as_the_client_s_options(servers, bare, options):
    assert nats_credentials(servers) == (bare, options)


@pytest.mark.parametrize("servers", [
    ["nats://a:1@h:4222", "nats://b:2@g:4222"],
    ["nats://a:1@h:4222", "nats://g:4222"],  # a's password would go to g too (reviewer G)
])
def test_servers_naming_different_credentials_are_used_as_given(servers):
    assert nats_credentials(servers) is None
