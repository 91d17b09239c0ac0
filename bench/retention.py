"""Does a retention sweep slow postbacks down? Postback answer latency at a steady rate, with and
without a retention sweep removing old rows at the same time, in alternating rounds, in one run
(docs/retention.md).

    .venv/bin/python bench/retention.py [--rate 300] [--seconds 10] [--rounds 3] [--dsn DSN]

The daemon runs as in production (group commit, apply worker, upkeep sweeps; a private embedded
cluster with fsync on unless --dsn is given). Its database is first filled with old rows every
kind of retention removes (applied postbacks, reports and acknowledged events of final messages,
orphans, old final messages); then each round sends --rate postbacks per second for --seconds
(open loop: a request's latency counts from when it was due, so a stall is not hidden), once
alone and once while retention.sweep() removes rows with the configured batch size and pause.
Shown: p50/p99 of each phase over all rounds, their ratio (limit: p99 with retention at most
1.2 times p99 without), and the rows retention removed per second meanwhile.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp  # noqa: E402

from postbacks import TOKEN, body, config  # noqa: E402  (bench/postbacks.py)
from tracker import logging as tlog  # noqa: E402
from tracker import retention  # noqa: E402
from tracker.app import Tracker  # noqa: E402
from tracker.config_types import RetentionConfig  # noqa: E402
from tracker.db.embedded import EmbeddedPostgres  # noqa: E402

LIMIT = 1.2

# Old rows for every kind ($1: how many messages; postbacks and orphans in proportion).
FILL_OLD = [
    """INSERT INTO tracker.messages (vendor, vendor_ref, state, submitted_at, updated_at)
       SELECT 'sparksender', 'old' || g, 'delivered', now() - interval '120 days', now() - interval '119 days'
       FROM generate_series(1, $1) g""",
    """INSERT INTO tracker.observations (message_id, vendor, vendor_ref, source, state, code, raw, received_at)
       SELECT m.id, m.vendor, m.vendor_ref, 'poll', 'delivered', '1',
              jsonb_build_object('msg_id', m.vendor_ref, 'status', 1, 'padding', repeat('x', 200)),
              now() - interval '120 days'
       FROM tracker.messages m CROSS JOIN generate_series(1, 2) WHERE m.vendor_ref LIKE 'old%'""",
    """INSERT INTO tracker.transitions (message_id, from_state, to_state, source, occurred_at, recorded_at)
       SELECT id, 'submitted', 'delivered', 'poll', now() - interval '120 days', now() - interval '120 days'
       FROM tracker.messages WHERE vendor_ref LIKE 'old%'""",
    "SELECT tracker.publish_events(100000000)",
    """INSERT INTO tracker.consumers (consumer, acked_pos)
       SELECT 'bench', last_pos FROM tracker.event_publisher""",
    """INSERT INTO tracker.postbacks (vendor, method, content_type, body, received_at, processed_at)
       SELECT 'skycore', 'POST', 'application/json', convert_to(repeat('y', 300), 'UTF8'),
              now() - interval '30 days', now() - interval '30 days'
       FROM generate_series(1, $1 * 2)""",
    """INSERT INTO tracker.observations (vendor, vendor_ref, source, code, received_at)
       SELECT 'skycore', 'orphan' || g, 'postback', 'N201', now() - interval '30 days'
       FROM generate_series(1, $1 / 2) g""",
]


async def steady(session: aiohttp.ClientSession, url: str, first: int, rate: float, seconds: float) -> list[float]:
    """`rate` POSTs a second for `seconds`, each sent when due; latencies (s) of the 200s, from
    when each was due."""
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    failures = 0
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def one(i: int, due: float) -> None:
        nonlocal failures
        try:
            async with session.post(url, data=body(first + i), headers=headers) as r:
                await r.read()
                if r.status == 200:
                    latencies.append(loop.time() - due)
                else:
                    failures += 1
        except aiohttp.ClientError:
            failures += 1

    tasks = []
    for i in range(int(rate * seconds)):
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - loop.time()))
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    if failures:
        raise SystemExit(f"{failures} postbacks were not answered 200")
    return latencies


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p * len(s)))] * 1000


async def run(args, dsn: str) -> int:
    tlog.configure("warning", "console", cache=False)
    # The daemon's own retention sweep stays out of the way (the bench runs sweeps itself).
    cfg = dataclasses.replace(config(dsn), retention=RetentionConfig(interval_s=86400))
    # Sweeps with the default batch size and pause, each given 2 s so that the sweeper stops
    # with its round (the daemon's give 60 s every 5 minutes).
    sweep_cfg = RetentionConfig(run_budget_s=2.0)
    tracker = Tracker(cfg)
    await tracker.start()
    host, port = tracker.listen_addresses["listen"]
    url = f"http://{host}:{port}/postbacks/skycore/{TOKEN}"
    try:
        t0 = time.monotonic()
        async with tracker.pool.acquire() as conn:
            for sql in FILL_OLD:
                await (conn.execute(sql, args.old) if "$1" in sql else conn.execute(sql))
            await conn.execute("VACUUM ANALYZE")
            old_rows = await conn.fetchval(
                "SELECT (SELECT count(*) FROM tracker.observations) + (SELECT count(*) FROM tracker.postbacks)"
                " + (SELECT count(*) FROM tracker.transitions) + (SELECT count(*) FROM tracker.messages)")
        print(f"filled {old_rows:,} old rows in {time.monotonic() - t0:.0f} s", file=sys.stderr)
        alone: list[float] = []
        swept: list[float] = []
        removed, sweeping_s, ratios = 0, 0.0, []
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as s:
            await steady(s, url, 0, args.rate, 2)  # warm up
            for r in range(args.rounds):
                first = (r + 1) * 1_000_000
                a = await steady(s, url, first, args.rate, args.seconds)
                stop = asyncio.Event()

                async def sweeper() -> int:
                    n = 0
                    while not stop.is_set():
                        done = await retention.sweep(tracker.pool, sweep_cfg) or []
                        n += sum(x.removed + sum((x.also or {}).values()) for x in done)
                        if not any(x.removed for x in done):
                            print("retention ran out of rows before the round ended: use a larger --old",
                                  file=sys.stderr)
                            break
                    return n

                began = time.monotonic()
                sweeping = asyncio.create_task(sweeper())
                b = await steady(s, url, first + 500_000, args.rate, args.seconds)
                stop.set()
                n = await sweeping
                removed += n
                sweeping_s += time.monotonic() - began
                alone += a
                swept += b
                ratios.append(pct(b, 0.99) / pct(a, 0.99))
                print(f"round {r + 1}: p99 alone {pct(a, 0.99):.1f} ms, with retention {pct(b, 0.99):.1f} ms,"
                      f" {n:,} rows removed", file=sys.stderr)
        settings = {row["name"]: row["setting"] for row in await tracker.pool.fetch(
            "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'server_version')")}
    finally:
        await tracker.stop()
    ratio = pct(swept, 0.99) / pct(alone, 0.99)
    print(f"retention bench: {args.rate:.0f} postbacks/s for {args.seconds:.0f} s per phase, {args.rounds} rounds,"
          f" PostgreSQL {settings.get('server_version')} fsync={settings.get('fsync')}, {os.cpu_count()} CPUs;"
          f" retention batch {sweep_cfg.batch_size} rows, pause {sweep_cfg.pause_ms:g} ms")
    print(f"postbacks alone           p50 {pct(alone, 0.5):6.2f} ms   p99 {pct(alone, 0.99):6.2f} ms   ({len(alone)} answered)")
    print(f"with a retention sweep    p50 {pct(swept, 0.5):6.2f} ms   p99 {pct(swept, 0.99):6.2f} ms   ({len(swept)} answered)"
          f"   {removed / max(sweeping_s, 1e-9):,.0f} rows removed/s")
    print(f"p99 ratio {ratio:.2f} over all rounds (median of the rounds' ratios {statistics.median(ratios):.2f});"
          f" limit {LIMIT}")
    return 0 if ratio <= LIMIT else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=300.0, help="postbacks per second")
    p.add_argument("--seconds", type=float, default=10.0, help="per round and phase")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--old", type=int, default=600_000, help="old final messages to fill (other kinds in proportion)")
    p.add_argument("--dsn", default=os.environ.get("TRACKER_BENCH_DSN"),
                   help="an existing database (default: a private embedded cluster, fsync on)")
    args = p.parse_args()
    if args.dsn:
        return asyncio.run(run(args, args.dsn))
    tmp = tempfile.mkdtemp(prefix="tracker-bench-")
    os.chmod(tmp, 0o755)  # the cluster may run as the postgres user
    pg = EmbeddedPostgres(Path(tmp) / "pg")
    try:
        pg.start()
        return asyncio.run(run(args, pg.dsn))
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
