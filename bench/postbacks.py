"""Durable postbacks per second through the tracker's postback route, beside a bare aiohttp
handler, on this machine, in one run: the same client loop, the same concurrency, loopback only.

    .venv/bin/python bench/postbacks.py [--requests 20000] [--concurrency 64] [--dsn DSN]

The tracker runs as the daemon does (group commit, apply worker, real PostgreSQL: a private
embedded cluster with fsync on unless --dsn is given); every 200 it answers is a committed row,
checked at the end. The bare handler reads the body and answers 200, nothing more. The two are
measured in alternating rounds (--rounds), each of --requests requests or --seconds, whichever
comes first. Shown: the median round's rate, p50/p99 over all rounds, and as the ratio the
median of the rounds' ratios (each tracker round against the bare round just before it), which
holds up better on a shared machine.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402
import orjson  # noqa: E402
from aiohttp import web  # noqa: E402

from tracker import logging as tlog  # noqa: E402
from tracker.app import Tracker  # noqa: E402
from tracker.config_types import VENDORS, Config, DatabaseConfig, HttpConfig, VendorConfig  # noqa: E402
from tracker.db.embedded import EmbeddedPostgres  # noqa: E402

TOKEN = "bench-token-0123456789"
COUNT = "SELECT count(*) FROM tracker.postbacks"
UNPROCESSED = "SELECT count(*) FROM tracker.postbacks WHERE processed_at IS NULL"


def body(i: int) -> bytes:
    return orjson.dumps({"origin": "SMS_MT", "code": "N202", "sent-as": "SMS", "status": "Delivered",
                         "from": "00000", "to": f"1555{i:07d}", "tracking-id": f"bench{i:08d}",
                         "operator-id": "0001470", "operator-name": "AT&T",
                         "timestamp": "2024-05-01T12:00:00.000000+00:00"})


async def bare_server() -> tuple[web.AppRunner, str]:
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b'{"status":"ok"}', content_type="application/json")

    app = web.Application()
    app.router.add_post("/postbacks/{vendor}/{token}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}/postbacks/skycore/{TOKEN}"


async def load(session: aiohttp.ClientSession, url: str, start: int, n: int, concurrency: int,
               seconds: float) -> dict:
    """`n` POSTs (or until `seconds`) from `concurrency` workers; latencies of the 200s."""
    latencies: list[float] = []
    statuses: dict[int | str, int] = {}
    next_i = start
    deadline = time.perf_counter() + seconds
    headers = {"Content-Type": "application/json"}

    async def worker() -> None:
        nonlocal next_i
        while next_i < start + n and time.perf_counter() < deadline:
            i, next_i = next_i, next_i + 1
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=body(i), headers=headers) as r:
                    await r.read()
                    status: int | str = r.status
            except aiohttp.ClientError as e:
                status = type(e).__name__
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                latencies.append(time.perf_counter() - t0)

    began, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
    return {"ok": len(latencies), "rate": len(latencies) / elapsed, "latencies": latencies,
            "statuses": statuses, "cpu_s": cpu}


def summary(rounds: list[dict]) -> dict:
    """The median round's rate; latencies and CPU over all rounds."""
    lat = sorted(x for r in rounds for x in r["latencies"])
    statuses: dict = {}
    for r in rounds:
        for k, v in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")

    return {"rate": statistics.median(r["rate"] for r in rounds), "p50": pct(0.50),
            "p99": pct(0.99), "ok": len(lat), "statuses": statuses,
            "cpu_us": sum(r["cpu_s"] for r in rounds) / max(len(lat), 1) * 1e6}


def config(dsn: str) -> Config:
    vendors = {v: VendorConfig(name=v, postback_token=TOKEN if v == "skycore" else None) for v in VENDORS}
    return Config(database=DatabaseConfig(dsn=dsn, pool_min=4, pool_max=12),
                  http=HttpConfig(listen="127.0.0.1:0"), vendors=vendors)


def line(name: str, r: dict) -> str:
    other = {k: v for k, v in r["statuses"].items() if k != 200}
    return (f"{name:<24} {r['rate']:8.0f} /s   p50 {r['p50']:6.2f} ms   p99 {r['p99']:6.2f} ms"
            f"   {r['cpu_us']:4.0f} us CPU/request (this process)"
            f"   ({r['ok']} answered 200{f', others {other}' if other else ''})")


async def run(args, dsn: str) -> int:
    tlog.configure("warning", "console", cache=False)
    tracker = Tracker(config(dsn))
    await tracker.start()
    bare, bare_url = await bare_server()
    host, port = tracker.listen_addresses["listen"]
    url = f"http://{host}:{port}/postbacks/skycore/{TOKEN}"
    try:
        async with tracker.pool.acquire() as conn:  # the messages the postbacks are about
            await conn.execute(
                "INSERT INTO tracker.messages (vendor, vendor_ref, state)"
                " SELECT 'skycore', 'bench' || lpad(i::text, 8, '0'), 'sent'"
                " FROM generate_series(0, $1) i", args.rounds * args.requests + 2000)
            settings = {r["name"]: r["setting"] for r in await conn.fetch(
                "SELECT name, setting FROM pg_settings WHERE name IN"
                " ('fsync', 'synchronous_commit', 'server_version')")}
        connector = aiohttp.TCPConnector(limit=args.concurrency)
        bares, tracks, answered = [], [], 0
        async with aiohttp.ClientSession(connector=connector) as s:
            await load(s, bare_url, 0, 1000, args.concurrency, 10)  # warm up both
            await load(s, url, 0, 1000, args.concurrency, 10)
            before = await tracker.pool.fetchval(COUNT)
            for r in range(args.rounds):
                first = 1000 + r * args.requests
                bares.append(await load(s, bare_url, first, args.requests, args.concurrency, args.seconds))
                tracks.append(await load(s, url, first, args.requests, args.concurrency, args.seconds))
                answered += tracks[-1]["ok"]
        stored = await tracker.pool.fetchval(COUNT) - before
        drain = time.perf_counter()
        while await tracker.pool.fetchval(UNPROCESSED):
            await asyncio.sleep(0.05)
        drain = time.perf_counter() - drain
        b, t = summary(bares), summary(tracks)
        # each tracker round against the bare round just before it: steadier on a shared machine
        ratio = statistics.median(y["rate"] / x["rate"] for x, y in zip(bares, tracks))
        commit = next(c for c in tracker.components if type(c).__name__ == "Postbacks").commit
    finally:
        await bare.cleanup()
        await tracker.stop()
    print(f"postbacks bench: loopback, concurrency {args.concurrency}, {args.rounds} rounds of up to"
          f" {args.requests} requests or {args.seconds:.0f} s each, one client loop;"
          f" PostgreSQL {settings.get('server_version')}"
          f" fsync={settings.get('fsync')} synchronous_commit={settings.get('synchronous_commit')},"
          f" {os.cpu_count()} CPUs")
    print("rounds (bare / tracker /s): " + ", ".join(
        f"{x['rate']:.0f} / {y['rate']:.0f}" for x, y in zip(bares, tracks)))
    print(line("bare aiohttp handler", b))
    print(line("tracker postback route", t))
    print(f"ratio {ratio:.2f} (median of the rounds' ratios; target >= 0.5); tracker p99 {t['p99']:.1f} ms (target < 50 ms);"
          f" group commits {commit.batches}, mean batch {commit.rows / max(commit.batches, 1):.1f};"
          f" rows stored {stored} of {answered} answered 200; the worker had applied all"
          f" {drain:.2f} s after the last answer")
    return 0 if stored >= answered else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=5000, help="per round and phase")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--seconds", type=float, default=20.0, help="cap per round and phase")
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
