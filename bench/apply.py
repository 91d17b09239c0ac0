"""The postback applier alone: CPU per postback of the daemon's side and of PostgreSQL for
applying stored postbacks (tracker.postbacks.process.process_received: claim, observations,
locks, transitions, states), one connection, no HTTP and no contention. Loopback only.

    .venv/bin/python bench/apply.py [--postbacks 10000] [--batches 5,50] [--dsn DSN]

Each batch size is one run on fresh rows: as many Skycore messages in `sent`, one stored raw
postback each, then the `delivered` report of every one applied `--batch` postbacks at a time,
as the appliers do (5 is what 1,000 postbacks/s gives them, 50 what saturation gives).
The connection has the appliers' session settings (tracker.postbacks.SESSION_SETTINGS).
PostgreSQL's CPU is its backend's (from /proc), the daemon's side is this process's. Used to
compare two versions of the reducer side by side (docs/performance.md): run it from each
checkout in turn.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _polling import cpu_seconds, database, migrated  # noqa: E402

import asyncpg  # noqa: E402

from tracker import loop  # noqa: E402
from tracker.adapters.base import Observation  # noqa: E402
from tracker.core.states import State  # noqa: E402
from tracker.postbacks.process import Parsed, process_received  # noqa: E402

try:  # the appliers' session, as the daemon opens it (a checkout older than it: the default)
    from tracker.postbacks import SESSION_SETTINGS as SETTINGS  # noqa: E402
except ImportError:
    SETTINGS = {"synchronous_commit": "on"}

FILL = """
INSERT INTO tracker.messages (vendor, vendor_ref, recipient, state, submitted_at)
SELECT 'skycore', $1 || i, '1555' || lpad(i::text, 7, '0'), 'sent', now()
FROM generate_series(0, $2 - 1) i
"""
STORE = """
WITH p AS (
    INSERT INTO tracker.postbacks (vendor, method, content_type, query, body, source, received_at)
    SELECT 'skycore', 'POST', 'application/json', '', '{}'::bytea, '127.0.0.1', now()
    FROM generate_series(1, $1)
    RETURNING id
)
SELECT array_agg(id ORDER BY id) FROM p
"""


async def one_run(dsn: str, n: int, batch: int) -> dict[str, float]:
    conn = await asyncpg.connect(dsn, server_settings=SETTINGS)
    try:
        tag = f"ap{batch}x"
        await conn.execute(FILL, tag, n)
        ids = await conn.fetchval(STORE, n)
        await conn.execute("VACUUM ANALYZE")
        now = datetime.now(timezone.utc)
        items = [Parsed(pid, now, [Observation(
            vendor="skycore", vendor_ref=f"{tag}{i}", recipient=f"1555{i:07d}",
            state=State.delivered, code="N202", text="Delivered", event_at=now,
            raw={"code": "N202", "tracking-id": f"{tag}{i}"}, operator="op")])
            for i, pid in enumerate(ids)]
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        pg0, py0, t0 = cpu_seconds(backend), time.process_time(), time.perf_counter()
        for a in range(0, n, batch):
            await process_received(conn, None, items[a:a + batch])
        pg1, py1, t1 = cpu_seconds(backend), time.process_time(), time.perf_counter()
        done = await conn.fetchval("SELECT count(*) FROM tracker.messages"
                                   " WHERE vendor_ref LIKE $1 || '%' AND state = 'delivered'", tag)
        if done != n:
            raise RuntimeError(f"{n - done} postbacks not applied")
        return {"batch": batch, "wall": (t1 - t0) / n * 1e6, "daemon": (py1 - py0) / n * 1e6,
                "postgres": (pg1 - pg0) / n * 1e6}
    finally:
        await conn.close()


async def measure(dsn: str, n: int, batches: list[int]) -> list[dict[str, float]]:
    await migrated(dsn)
    return [await one_run(dsn, n, b) for b in batches]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--postbacks", type=int, default=10_000)
    p.add_argument("--batches", default="5,50", help="postbacks per apply, comma-separated")
    p.add_argument("--dsn", default=os.environ.get("TRACKER_BENCH_DSN"),
                   help="an existing, migratable database (default: a private embedded cluster)")
    args = p.parse_args()
    batches = [int(x) for x in args.batches.split(",") if x.strip()]
    with database(args.dsn) as (dsn, _pid):
        results = loop.run(measure(dsn, args.postbacks, batches))
    print(f"applier alone: {args.postbacks} Skycore postbacks per run, one connection, fsync on")
    for r in results:
        print(f"  batches of {r['batch']:4d}: {r['wall']:7.1f} us per postback in all;"
              f" CPU daemon {r['daemon']:6.1f} us + PostgreSQL {r['postgres']:6.1f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
