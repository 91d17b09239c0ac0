"""A database connection that goes silent and stays so (a NAT table flushed, a failover that
dropped packets): its socket open, nothing passing, new connections working. It was never
noticed: /readyz hung, then said ready; the postback writers waited on it for good (every
postback answered 503 until the watchdog killed the daemon); a LISTEN connection slept on, and
intake and the sinks fell back to their sweeps until a restart. Through a proxy that silences
the connections open at a moment (tests/faults_support.py), over real PostgreSQL."""
from __future__ import annotations

import asyncio
import socket
import time
from types import SimpleNamespace

import asyncpg
import pytest
import structlog

from tests.faults_support import FreezingProxy
from tests.polling_support import wait_until
from tracker.config_types import Config
from tracker.db import sessions
from tracker.db import listen as listen_mod
from tracker.http import ops
from tracker.http.drain import Drain
from tracker.supervisor import Supervisor


async def proxied_pool(db_dsn: str, **kw) -> tuple[FreezingProxy, asyncpg.Pool]:
    proxy = await FreezingProxy(db_dsn).start()
    pool = await asyncpg.create_pool(proxy.dsn(db_dsn), init=sessions.init, **kw)
    return proxy, pool


async def test_every_connection_over_tcp_probes_its_peer(db_dsn):
    proxy, pool = await proxied_pool(db_dsn, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            sock = conn._transport.get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 10
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 60_000
    finally:
        await pool.close()
        await proxy.stop()


async def test_readyz_answers_within_its_timeout_on_a_silent_connection_and_the_next_one_is_new(db_dsn):
    proxy, pool = await proxied_pool(db_dsn, min_size=1, max_size=2)
    config = Config()
    tracker = SimpleNamespace(config=config, pool=pool, heads=ops.HeadClock(),
                              supervisor=Supervisor(config.health), drain=Drain(0), embedded=None)
    try:
        assert await asyncio.wait_for(ops.readiness(tracker), 10) == []
        proxy.silence_open_connections()
        began = time.monotonic()
        problems = await asyncio.wait_for(ops.readiness(tracker), 30)  # hung for good before
        assert time.monotonic() - began < 2 * ops.READY_TIMEOUT_S + 1
        assert [(p.component, p.reason) for p in problems] == [("database", "did not answer within 2 s")]
        assert await asyncio.wait_for(ops.readiness(tracker), 10) == []  # a new connection
    finally:
        pool.terminate()
        await proxy.stop()


async def test_a_listener_on_a_silent_connection_is_noticed_and_listens_again(db_dsn, monkeypatch):
    monkeypatch.setattr(listen_mod, "PING_EVERY_S", 0.3)
    monkeypatch.setattr(listen_mod, "PING_TIMEOUT_S", 0.5)
    proxy, pool = await proxied_pool(db_dsn, min_size=1, max_size=2)
    woken = []
    stop = asyncio.Event()
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(listen_mod.listen(lambda: pool, "test_silent", lambda: woken.append(1),
                                                     stop.is_set, check_s=0.05))
        try:
            async def listening() -> bool:
                return bool(woken)
            await wait_until(listening, 10, step=0.05)
            proxy.silence_open_connections()

            async def lost() -> bool:
                return any(e["event"] == "listener lost; reconnecting" for e in logs)
            await wait_until(lost, 10, step=0.05)
            [said] = [e for e in logs if e["event"] == "listener lost; reconnecting"]
            assert (said["error"], said["reason"]) == ("ListenerSilent", "no answer to a ping within 0.5 s")
            heard = len(woken)
            direct = await asyncpg.connect(db_dsn)
            try:
                async def notified() -> bool:  # listening again, on a new connection
                    await direct.execute("NOTIFY test_silent")
                    return len(woken) > heard + 1
                await wait_until(notified, 10, step=0.2)
            finally:
                await direct.close()
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            pool.terminate()
            await proxy.stop()


async def test_the_backlog_sweep_says_a_silent_database_is_down_within_its_bound(db_dsn):
    """The sweep's look had no bound: a database gone silent read as up for 90 s, unless
    something happened to ask /readyz (its ops listener is kept off the load balancer)."""
    from tracker import metrics

    proxy, pool = await proxied_pool(db_dsn, min_size=1, max_size=1)
    heads = ops.HeadClock()
    try:
        await ops.count_backlog(pool, heads)
        assert metrics.database_up._value.get() == 1
        proxy.silence_open_connections()
        started = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError):  # the outer bound: a regression fails, never hangs
            async with asyncio.timeout(2 * ops.READY_TIMEOUT_S + 5):
                await ops.count_backlog(pool, heads)
        # (the look, then the connection handed back, each bounded by it)
        assert asyncio.get_running_loop().time() - started < 2 * ops.READY_TIMEOUT_S + 1
        assert metrics.database_up._value.get() == 0
    finally:
        pool.terminate()
        await proxy.stop()
