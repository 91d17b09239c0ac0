"""The daemon's memory does not grow with the messages waiting in the table: `tracker run`'s
RSS with 1,000 and with 1,000,000 messages due later, while it polls a few hundred live ones
against the sandbox. Loopback only; stops by itself.

    .venv/bin/python bench/poll_memory.py [--seconds 20] [--later 1000000] [--dsn DSN]

Each phase starts a fresh `tracker run` (its own process), sends 300 messages through the
sandbox (its own process) for it to take in and poll until they end, and samples its RSS every
half second for `--seconds`; the last sample and the peak are reported.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

from _polling import Daemon, database, migrated, sandbox, submit, write_config

import aiohttp
import asyncpg

from tracker.sandbox import send_many

KNOBS = {"time_scale": 0.01, "latency_max_s": 300.0, "deadline_s": 500.0}
POLLS = {"first_poll_s": 0.5, "max_poll_interval_s": 2.0, "tracking_window_s": 10.0,
         "deadline_margin_s": 1.0, "rate_limit_per_s": 200.0, "concurrency": 8}
VENDORS = ("sparksender", "engagespark", "sparrow")

# Messages taken in long ago and due later: next poll tomorrow, window open two more days.
INSERT_LATER = """
INSERT INTO tracker.messages (vendor, vendor_ref, recipient_key, recipient, state, submitted_at,
                              window_ends_at, next_poll_at)
SELECT v.vendor, 'later-' || i, CASE WHEN v.vendor = 'sparrow' THEN r ELSE '' END, r, 'accepted',
       now() - interval '1 hour', now() + interval '2 days',
       now() + interval '1 day' + (i % 86400) * interval '1 second'
FROM generate_series($1::int, $2::int) AS i,
     LATERAL (SELECT (ARRAY['sparksender', 'engagespark', 'sparrow', 'skycore'])[1 + i % 4] AS vendor,
                     '63' || lpad(i::text, 10, '0') AS r) v
"""


POLLED = "SELECT count(*) FROM tracker.messages WHERE vendor_ref NOT LIKE 'later-%' AND poll_count > 0"


async def phase(pool: asyncpg.Pool, sb: dict, config: Path, log: Path, seconds: float,
                offset: int) -> tuple[int, int]:
    daemon = Daemon(config, log).start()
    try:
        calls = []
        async with aiohttp.ClientSession() as http:
            for i, vendor in enumerate(VENDORS):
                numbers = [f"639{i}{offset + k:08d}" for k in range(100)]
                calls += await send_many(sb["vendors"], vendor, numbers, bulk=True, session=http)
        await submit(pool, calls)
        samples = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await asyncio.sleep(0.5)
            samples.append(daemon.rss_kib())
        return samples[-1], max(samples + [daemon.peak_kib()])
    finally:
        if daemon.stop() != 0:
            raise RuntimeError("tracker run did not stop cleanly:\n" + log.read_text()[-3000:])


async def measure(args, dsn: str) -> dict:
    await migrated(dsn)
    tmp = Path(tempfile.mkdtemp(prefix="tracker-pollmem-"))
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        async with sandbox(KNOBS) as sb:
            config = write_config(tmp / "tracker.toml", dsn,
                                  {v: {**sb["vendors"][v], **POLLS} for v in VENDORS})
            results = []
            have = 0
            for i, want in enumerate((1000, args.later)):
                began = time.monotonic()
                await pool.execute(INSERT_LATER, have + 1, want)
                await pool.execute("VACUUM ANALYZE tracker.messages")
                have = want
                filled = time.monotonic() - began
                polled = await pool.fetchval(POLLED)
                rss, peak = await phase(pool, sb, config, tmp / f"tracker-{i}.log", args.seconds,
                                        offset=i * 1000)
                total = await pool.fetchval("SELECT count(*) FROM tracker.messages")
                polled = await pool.fetchval(POLLED) - polled
                results.append((want, total, rss, peak, polled, filled))
    finally:
        await pool.close()
        shutil.rmtree(tmp, ignore_errors=True)
    (_, _, small, small_peak, *_), (_, _, big, big_peak, *_) = results
    return {"seconds": args.seconds, "results": results, "small_kib": small, "large_kib": big,
            "small": results[0][0], "large": results[1][0],
            "ratio": big / small, "peak_ratio": big_peak / small_peak}


def report(r: dict) -> str:
    lines = [f"poll memory bench: `tracker run` RSS while polling 300 live messages for "
             f"{r['seconds']:.0f} s, with messages due later in the table; {os.cpu_count()} CPUs"]
    for later, total, rss, peak, polled, filled in r["results"]:
        lines.append(f"{later:>9,} due later ({total:,} rows): RSS {rss / 1024:6.1f} MiB, peak {peak / 1024:6.1f} MiB"
                     f"  ({polled} live messages taken in and polled; rows added in {filled:.0f} s)")
    lines.append(f"RSS ratio {r['ratio']:.2f} (peak {r['peak_ratio']:.2f}); target <= 1.2: "
                 f"{'yes' if r['ratio'] <= 1.2 else 'NO'}")
    return "\n".join(lines)


async def run(args, dsn: str) -> int:
    r = await measure(args, dsn)
    print(report(r))
    return 0 if r["ratio"] <= 1.2 else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--later", type=int, default=1_000_000)
    p.add_argument("--dsn", default=os.environ.get("TRACKER_BENCH_DSN"),
                   help="an existing, empty or tracker-only database (default: a private embedded cluster)")
    args = p.parse_args()
    with database(args.dsn) as (dsn, _):
        return asyncio.run(run(args, dsn))


if __name__ == "__main__":
    raise SystemExit(main())
