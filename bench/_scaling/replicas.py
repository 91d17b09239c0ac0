"""replicas: 1, 2 and 3 daemons on one database polling the same due messages."""
from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import asyncpg

from _polling import Daemon, cpu_seconds, migrated, sandbox, send_sparksender, submit, write_config
from _scaling.common import BENCH


async def replicas(dsn: str, pg_pid: int, n: int, tmp: Path, counts=(1, 2, 3), delays=(20.0, 0.0)) -> list[dict]:
    from tracker.config_types import Config, VendorConfig
    from tracker.intake import take_in

    await migrated(dsn)
    results = []
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    try:
        async with sandbox({"time_scale": 0.01}) as sb:
            vendor = sb["vendors"]["sparksender"]
            await submit(pool, await send_sparksender(vendor, n, "6392"))
            config = Config(vendors={"sparksender": VendorConfig(name="sparksender", first_poll_s=86400)})
            async with pool.acquire() as conn:
                while (await take_in(conn, config, 100)).rows:
                    pass
            settings = {**vendor, "first_poll_s": 3600.0, "max_poll_interval_s": 86400.0,
                        "tracking_window_s": 864000.0, "rate_limit_per_s": 1e6, "concurrency": 64,
                        "request_timeout_s": 10.0}
            for delay_ms in delays:
                async with aiohttp.ClientSession() as http:
                    async with http.post(sb["url"] + "/_sandbox/knobs", json={"answer_delay_s": delay_ms / 1000}) as r:
                        r.raise_for_status()
                for k in counts:
                    daemons = [Daemon(write_config(tmp / f"rep{k}-{j}.toml", dsn, {"sparksender": settings}),
                                      tmp / f"rep{k}-{j}.log") for j in range(k)]
                    try:
                        for d in daemons:
                            d.start()
                        await asyncio.sleep(16)  # replicas see each other (poll_stats, 15 s) and share limits
                        results.append({"delay_ms": delay_ms, "daemons": k,
                                        **await replica_round(pool, pg_pid, n, [d.proc.pid for d in daemons])})
                    finally:
                        for d in daemons:
                            d.stop()
    finally:
        await pool.close()
    return results


async def replica_round(pool: asyncpg.Pool, pg_pid: int, n: int, pids: list[int]) -> dict:
    await pool.execute(BENCH + "UPDATE tracker.messages SET next_poll_at = now() + interval '1 day'")
    await pool.execute("VACUUM tracker.messages")
    first_obs = await pool.fetchval(BENCH + "SELECT coalesce(max(id), 0) FROM tracker.observations")
    due = await pool.fetchval(BENCH + "WITH u AS (UPDATE tracker.messages SET next_poll_at = now() + interval '2 seconds'"
                              " RETURNING next_poll_at) SELECT max(next_poll_at) FROM u")
    await pool.execute("VACUUM tracker.messages")
    await pool.execute("SELECT pg_stat_statements_reset()")
    cpu0 = cpu_seconds(pg_pid, True), sum(cpu_seconds(p) for p in pids)
    while await pool.fetchval(BENCH + "SELECT count(DISTINCT message_id) < $1 FROM tracker.observations"
                              " WHERE id > $2 AND source = 'poll'", n, first_obs):
        await asyncio.sleep(0.25)
    cpu1 = cpu_seconds(pg_pid, True), sum(cpu_seconds(p) for p in pids)
    last = await pool.fetchval(BENCH + "SELECT max(received_at) FROM tracker.observations WHERE id > $1", first_obs)
    twice = await pool.fetchval(BENCH + "SELECT count(*) FROM (SELECT message_id FROM tracker.observations"
                                " WHERE id > $1 AND source = 'poll' GROUP BY 1 HAVING count(*) > 1) t", first_obs)
    claim = await pool.fetchrow(BENCH + "SELECT sum(calls) AS calls, sum(total_exec_time) / sum(calls) AS mean_ms,"
                                " sum(rows) AS rows FROM pg_stat_statements WHERE query LIKE '%WITH due AS MATERIALIZED%'")
    await pool.execute(BENCH + "UPDATE tracker.messages SET next_poll_at = now() + interval '1 day'")
    return {"rate": n / (last - due).total_seconds(), "twice": twice,
            "claims": claim["calls"], "claim_ms": claim["mean_ms"],
            "claimed_per_call": (claim["rows"] or 0) / max(claim["calls"] or 1, 1),
            "pg_us": (cpu1[0] - cpu0[0]) / n * 1e6, "tracker_us": (cpu1[1] - cpu0[1]) / n * 1e6}
