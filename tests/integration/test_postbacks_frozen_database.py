"""A database that does not answer (a network partition, a storage stall: FreezingProxy) gets
every postback a 503 within the write's timeout, so that the vendor retries: it once got no
answer at all until the database came back (asyncpg's cancel of a statement, and the hand-back of
its connection, wait for the server). Nothing acknowledged is lost: every postback answered 200
is stored, and postbacks are answered 200 again once the database answers."""
from __future__ import annotations

import asyncio

import aiohttp
import orjson
import structlog

from tests.faults_support import FreezingProxy
from tests.polling_support import wait_until
from tests.postbacks_support import config_for, postback_url, running, session

JSON = {"Content-Type": "application/json"}


def delivered(ref: str) -> bytes:
    return orjson.dumps({"origin": "SMS_MT", "code": "N202", "status": "Delivered",
                         "to": "10000000001", "tracking-id": ref})


async def test_postbacks_are_answered_503_while_the_database_does_not_answer(db_dsn, pool):
    proxy = await FreezingProxy(db_dsn).start()
    try:
        async with running(config_for(proxy.dsn(db_dsn))) as (tr, base), session() as s:

            async def post(ref: str) -> int:
                async with s.post(postback_url(base, "skycore"), data=delivered(ref), headers=JSON,
                                  timeout=aiohttp.ClientTimeout(total=30)) as r:
                    return r.status

            assert await post("before") == 200
            proxy.flowing.clear()
            try:
                # A batch whose write is stuck, and batches waiting for a writer: all answered.
                answers = await asyncio.gather(*(post(f"frozen-{i}") for i in range(12)))
            finally:
                proxy.flowing.set()
            assert set(answers) == {503}, answers

            async def answered_again() -> bool:
                return await post("after") == 200

            await wait_until(answered_again, 30)
        stored = {r[0] for r in await pool.fetch("SELECT body FROM tracker.postbacks")}
        assert {delivered("before"), delivered("after")} <= stored  # the 200s, kept
    finally:
        await proxy.stop()


async def test_a_stop_while_the_database_does_not_answer_ends(db_dsn, monkeypatch):
    # Work stuck on the database (a postback's write, its cancel waiting for the server) held
    # the stop until the database came back, or until systemd's SIGKILL: past the stop's wait,
    # the database connections are closed and what was stuck on them fails (rolled back,
    # nothing answered 200 lost).
    import tracker.app as app_mod
    monkeypatch.setattr(app_mod, "STOP_DATABASE_WAIT_S", 2.0)
    proxy = await FreezingProxy(db_dsn).start()
    try:
        with structlog.testing.capture_logs() as logs:
            async with running(config_for(proxy.dsn(db_dsn))) as (tr, base), session() as s:
                proxy.flowing.clear()
                post = asyncio.ensure_future(s.post(postback_url(base, "skycore"), data=delivered("stuck"),
                                                    headers=JSON))
                await wait_until(lambda: _stuck(tr), 10, step=0.05)  # a write waits on the database
                stopping = asyncio.ensure_future(tr.stop())
                done, _ = await asyncio.wait({stopping}, timeout=60)
                assert done, "the stop did not end while the database did not answer"
                stopping.result()
                async with await post as r:
                    assert r.status == 503
    finally:
        await proxy.stop()
    assert [e for e in logs if e["event"] == "stop: the database did not answer; its connections closed"]


async def _stuck(tr) -> bool:
    from tracker.postbacks import Postbacks
    postbacks = next(c for c in tr.components if isinstance(c, Postbacks))
    return bool(postbacks.commit._writes)
