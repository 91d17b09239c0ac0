"""standby: a streaming standby of the primary: which views and functions answer there, and
how far behind it is."""
from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

import asyncpg

from _polling import migrated
from tracker.db.embedded import EmbeddedPostgres
from _scaling.common import cluster


VIEWS = ["message_status", "message_history", "delivery_summary", "delivery_latency", "stuck_messages",
         "vendor_health", "intake_problems", "postback_problems", "delivery_by_route", "vendor_comparison",
         "sink_status", "sink_failures", "retention_status"]
CALLS = {"read_events (its own transaction: READ ONLY)": "SELECT count(*) FROM tracker.read_events('standby', 100)",
         "ack_events": "SELECT tracker.ack_events('standby', (SELECT min(event_id) FROM tracker.transitions WHERE pos IS NOT NULL))",
         "fold_route_deltas": "SELECT tracker.fold_route_deltas()"}


async def standby(n: int) -> dict:
    from tracker.adapters.base import Observation
    from tracker.core.states import State
    from tracker.db import reducer
    from tracker.events import publish_pending

    out: dict = {}
    with cluster("primary", stats=False, port=55442) as (primary, _pid):
        hba = primary.data_dir / "pg_hba.conf"
        hba.write_text(hba.read_text() + "local replication tracker peer map=tracker\n")
        conn = await asyncpg.connect(primary.dsn)
        await conn.execute("SELECT pg_reload_conf()")
        await migrated(primary.dsn)
        await conn.execute(
            "INSERT INTO tracker.messages (vendor, vendor_ref, recipient, state, country)"
            " SELECT 'skycore', 'sb' || i, '1555' || i, 'sent', 'US' FROM generate_series(1, $1) i", n)
        pool = await asyncpg.create_pool(primary.dsn, min_size=1, max_size=2)
        async with pool.acquire() as c:
            await reducer.apply(c, "postback", [Observation(vendor="skycore", vendor_ref=f"sb{i}", recipient=None,
                                                            state=State.delivered, code="N202")
                                                for i in range(1, n + 1)])
        await publish_pending(pool)
        await pool.close()
        stdir = Path(tempfile.mkdtemp(prefix="tracker-bench-standby-"))
        os.chmod(stdir, 0o755)
        replica = EmbeddedPostgres(stdir / "pg", port=55443)
        try:
            replica._prepare_dirs()
            primary._cmd("pg_basebackup", "-D", str(replica.data_dir), "-R", "-X", "stream", "-c", "fast",
                         "-h", str(primary.socket_dir), "-p", str(primary.port), "-U", "tracker")
            replica.start()
            rconn = await asyncpg.connect(replica.dsn)
            out["in_recovery"] = await rconn.fetchval("SELECT pg_is_in_recovery()")
            # lag: a row written on the primary, timed until the standby shows it
            lags = []
            for i in range(20):
                ref = f"lag{i}"
                t0 = time.perf_counter()
                await conn.execute("INSERT INTO tracker.messages (vendor, vendor_ref) VALUES ('skycore', $1)", ref)
                while not await rconn.fetchval("SELECT EXISTS (SELECT 1 FROM tracker.messages WHERE vendor_ref = $1)", ref):
                    await asyncio.sleep(0.0005)
                lags.append((time.perf_counter() - t0) * 1000)
            lags.sort()
            out["lag_ms"] = (lags[len(lags) // 2], lags[-1])
            answers = {}
            for v in VIEWS:
                answers[v] = await attempt(rconn, f"SELECT count(*) FROM tracker.{v}")
            for name, sql in CALLS.items():
                answers[name] = await attempt(rconn, sql)
            out["answers"] = answers
            await rconn.close()
        finally:
            replica.stop()
            shutil.rmtree(stdir, ignore_errors=True)
        await conn.close()
    return out


async def attempt(conn: asyncpg.Connection, sql: str) -> str:
    t0 = time.perf_counter()
    try:
        value = await conn.fetchval(sql)
    except asyncpg.PostgresError as e:
        return f"refused: {type(e).__name__}: {str(e).splitlines()[0][:90]}"
    return f"ok ({value} rows, {(time.perf_counter() - t0) * 1000:.1f} ms)" if isinstance(value, int) else "ok"
