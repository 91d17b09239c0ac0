"""life: what one message costs the primary over its life, through a Skycore postback and
through Spark Sender polls."""
from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import asyncpg
import orjson

import _wrk  # (its STARTED: the postbacks' event time)
from _polling import Daemon, migrated, sandbox, send_sparksender, submit, write_config
from _scaling.common import BENCH, TOKEN, Meter, consume_all, per_message, wait_for


async def life_postback(dsn: str, pg_pid: int, n: int, tmp: Path) -> dict:
    await migrated(dsn)
    conn = await asyncpg.connect(dsn)
    config = write_config(tmp / "life-postback.toml", dsn, {"skycore": {"postback_token": TOKEN}})
    daemon = Daemon(config, tmp / "life-postback.log").start()
    out = {}
    try:
        ready = next(orjson.loads(line) for line in (tmp / "life-postback.log").read_bytes().splitlines()
                     if b"tracker ready" in line)
        url = f"http://{ready['listen']}/postbacks/skycore/{TOKEN}"
        await asyncio.sleep(2)
        m = Meter(conn, pg_pid)
        await m.start()
        await conn.execute(
            "INSERT INTO tracker.submissions (vendor, client_ref, vendor_ref, recipient)"
            " SELECT 'skycore', 'c' || i, 'life' || lpad(i::text, 8, '0'), '1555' || lpad(i::text, 7, '0')"
            " FROM generate_series(0, $1 - 1) i", n)
        await wait_for(conn, "SELECT NOT EXISTS (SELECT 1 FROM tracker.submissions WHERE processed_at IS NULL)")
        await wait_for(conn, "SELECT NOT EXISTS (SELECT 1 FROM tracker.transitions WHERE pos IS NULL)")
        out["intake"] = per_message(await m.stop(), n)
        await m.start()
        headers = {"Content-Type": "application/json"}
        todo = iter(range(n))
        async with aiohttp.ClientSession() as s:
            async def worker() -> None:
                for i in todo:
                    body = orjson.dumps({"origin": "SMS_MT", "code": "N202", "status": "Delivered",
                                         "to": f"1555{i:07d}", "tracking-id": f"life{i:08d}",
                                         "operator-name": "AT&T",
                                         "timestamp": _wrk.STARTED})
                    async with s.post(url, data=body, headers=headers) as r:
                        await r.read()
                        assert r.status == 200, r.status
            await asyncio.gather(*(worker() for _ in range(32)))
        await wait_for(conn, "SELECT NOT EXISTS (SELECT 1 FROM tracker.postbacks WHERE processed_at IS NULL)")
        await wait_for(conn, "SELECT count(*) = $1 FROM tracker.messages WHERE state = 'delivered'", n)
        await wait_for(conn, "SELECT NOT EXISTS (SELECT 1 FROM tracker.transitions WHERE pos IS NULL)")
        stage = await m.stop()
        out["delivered"] = per_message(stage, n)
        out["delivered_top"] = stage["by_query"][:12]
        await m.start()
        read = await consume_all(conn, "bench-consumer")
        out["consumer"] = per_message(await m.stop(), read)
    finally:
        daemon.stop()
        await conn.close()
    out["total"] = {k: out["intake"][k] + out["delivered"][k] for k in out["intake"]}
    return out


KNOBS = {"time_scale": 0.01, "delivered": 1.0, "read": 0.0, "failed": 0.0, "expired": 0.0,
         "rejected": 0.0, "no_receipt": 0.0, "temp_failure": 0.0, "telco_retry": 0.0, "latency": "fixed",
         "latency_s": 500.0, "sent_after_s": 50.0}


async def life_poll(dsn: str, pg_pid: int, n: int, tmp: Path) -> dict:
    await migrated(dsn)
    conn = await asyncpg.connect(dsn)
    out = {}
    async with sandbox(KNOBS) as sb:
        vendor = sb["vendors"]["sparksender"]
        settings = {**vendor, "first_poll_s": 0.5, "max_poll_interval_s": 1.0, "tracking_window_s": 3600.0,
                    "rate_limit_per_s": 1e6, "concurrency": 32}
        daemon = Daemon(write_config(tmp / "life-poll.toml", dsn, {"sparksender": settings}),
                        tmp / "life-poll.log").start()
        try:
            calls = await send_sparksender(vendor, n, "6391")
            m = Meter(conn, pg_pid)
            await m.start()
            await submit(conn, calls)
            await wait_for(conn, "SELECT count(*) = $1 FROM tracker.messages WHERE state = 'delivered'", n,
                           timeout=600)
            await wait_for(conn, "SELECT NOT EXISTS (SELECT 1 FROM tracker.transitions WHERE pos IS NULL)")
            stage = await m.stop()
            polls = await conn.fetchval(BENCH + "SELECT sum(poll_count) FROM tracker.messages")
        finally:
            daemon.stop()
    await conn.close()
    out["delivered"] = per_message(stage, n)
    out["delivered_top"] = stage["by_query"][:12]
    out["polls_per_message"] = polls / n
    out["calls_per_message"] = len(calls) / n
    return out
