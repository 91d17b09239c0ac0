"""tracker.messages locked by another session for long (an operator's LOCK TABLE or ALTER TABLE):
postbacks are still stored and answered 200; what waits for the table (intake here) gives up
after half of health.wedged_after_s (the main pool's lock_timeout), counted and named by
/readyz, and so never counts as wedged, which would hold back the watchdog (systemd killed every
replica at once, for a lock no restart takes); a daemon started meanwhile starts, its postback
connections left cold and logged (it failed with a traceback, restarted every 2 s); once the lock
goes, everything is taken in and applied."""
from __future__ import annotations

import asyncio
import dataclasses

import asyncpg
import structlog

from tests.polling_support import wait_until
from tests.postbacks_support import config_for, postback_url, readyz, running, session
from tracker.db.sessions import session_settings

WEDGED_AFTER_S = 2.0


def test_the_main_pool_waits_for_a_lock_half_the_time_that_makes_a_component_wedged():
    assert session_settings(120.0) == {"synchronous_commit": "on", "lock_timeout": "60000ms",
                                       "application_name": "tracker", "tcp_keepalives_idle": "30",
                                       "tcp_keepalives_interval": "10", "tcp_keepalives_count": "3",
                                       "tcp_user_timeout": "60000"}


async def test_a_long_table_lock_is_failing_not_wedged_and_a_daemon_still_starts(db_dsn):
    config = config_for(db_dsn)
    config = dataclasses.replace(config, health=dataclasses.replace(
        config.health, wedged_after_s=WEDGED_AFTER_S, failures_before_unready=1,
        restart_backoff_max_s=0.5))
    body = b'{"origin":"SMS_MT","code":"N202","status":"Delivered","to":"10000000001","tracking-id":"lk-0"}'
    holder = await asyncpg.connect(db_dsn)
    async with running(config) as (tr, base), session() as s:
        await tr.pool.execute("INSERT INTO tracker.messages (vendor, vendor_ref) VALUES ('skycore', 'lk-0')")
        lock = holder.transaction()
        await lock.start()
        try:
            await holder.execute("LOCK TABLE tracker.messages IN ACCESS EXCLUSIVE MODE")
            await tr.pool.execute("INSERT INTO tracker.submissions (vendor, vendor_ref, recipient)"
                                  " VALUES ('skycore', 'lk-1', '+15005550006')")
            async with s.post(postback_url(base, "skycore"), data=body,
                              headers={"Content-Type": "application/json"}) as r:
                assert r.status == 200  # stored; its apply waits for the lock

            async def lock_named() -> bool:
                status, ready = await readyz(s, base)
                return status == 503 and any("LockNotAvailableError" in p["reason"]
                                             for p in ready.get("problems", []))

            await wait_until(lock_named, 20, step=0.1)
            for _ in range(30):  # sampled over 3 x wedged_after_s: failing, never wedged
                assert not tr.supervisor.wedged()
                await asyncio.sleep(0.2)
            with structlog.testing.capture_logs() as logs:
                async with running(config) as (second, _):
                    assert second.listen_addresses["listen"]
            assert any(e["event"].startswith("postback connection not warmed") for e in logs)
        finally:
            await lock.rollback()
            await holder.close()

        async def all_in() -> bool:
            return (await tr.pool.fetchval("SELECT count(*) FROM tracker.messages WHERE state = 'delivered'") == 1
                    and await tr.pool.fetchval("SELECT count(*) FROM tracker.messages WHERE vendor_ref = 'lk-1'") == 1)

        await wait_until(all_in, 20)
        await wait_until(lambda: _ready(s, base), 20, step=0.1)


async def _ready(s, base) -> bool:
    return (await readyz(s, base))[0] == 200
