"""Durable postbacks per second through `tracker run`'s postback route, beside a bare aiohttp
handler, on this machine, in one run: `wrk` drives both from its own core, loopback only.

    .venv/bin/python bench/postbacks.py [--seconds 10] [--rounds 3] [--connections 64] [--dsn DSN]

The tracker runs as a daemon does (its own process; group commit, apply worker, publisher; real
PostgreSQL: a private embedded cluster with fsync on unless --dsn is given); every 200 it
answers is a committed row, checked at the end. The bare handler (bench/_bare.py, its own
process, the same event loop implementation) reads the body, parses it (orjson, the Skycore
shape) and answers 200. Each postback is a `delivered` report of its own message (made
beforehand, in `sent`), so every one is applied: an observation, a transition, a state.
Rounds alternate bare / tracker; shown: the median round of each, wrk's p50/p99 of the median
round, CPU per request of each process, and the ratio: the median of the rounds' ratios (each
tracker round against the bare round just before it), which holds up better on a shared machine.
Needs wrk (`apt-get install wrk`).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _wrk  # noqa: E402
from _polling import ROOT, PY, CpuMeter, Daemon, database, migrated, write_config  # noqa: E402

import asyncpg  # noqa: E402

from tracker import loop  # noqa: E402

TOKEN = "bench-token-0123456789"
PER_SECOND = 20_000  # message numbers set aside per second of load (more than either side makes)

MAKE_MESSAGES = """
INSERT INTO tracker.messages (vendor, vendor_ref, recipient, state, submitted_at)
SELECT 'skycore', 'bench' || lpad(i::text, 8, '0'), '1555' || lpad((i % 10000000)::text, 7, '0'),
       'sent', now() - interval '1 minute'
FROM generate_series($1::int, $2::int) i
ON CONFLICT DO NOTHING
"""


def body(i: int) -> bytes:
    """Postback number i (the body wrk sends, for Python clients: bench/retention.py)."""
    return (_wrk.BODY % (i % 10_000_000, i)).encode()


def config(dsn: str):
    """An in-process Tracker's configuration with Skycore's route (bench/retention.py)."""
    from tracker.config_types import VENDORS, Config, DatabaseConfig, HttpConfig, VendorConfig

    vendors = {v: VendorConfig(name=v, postback_token=TOKEN if v == "skycore" else None) for v in VENDORS}
    return Config(database=DatabaseConfig(dsn=dsn, pool_min=4, pool_max=12),
                  http=HttpConfig(listen="127.0.0.1:0"), vendors=vendors)


@contextlib.contextmanager
def bare_server():
    """bench/_bare.py in its own process; yields (url, pid)."""
    proc = subprocess.Popen([PY, str(ROOT / "bench" / "_bare.py")], stdout=subprocess.PIPE, text=True,
                            cwd=str(ROOT))
    try:
        base = proc.stdout.readline().strip()
        if not base:
            raise RuntimeError("the bare handler did not start")
        yield f"{base}/postbacks/skycore/{TOKEN}", proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.asynccontextmanager
async def tracker_daemon(dsn: str, tmp: Path, extra: str = ""):
    """`tracker run` with Skycore's postback route (other vendors off); yields (url, pid, log)."""
    config = write_config(tmp / "tracker.toml", dsn, {"skycore": {"postback_token": TOKEN}})
    if extra:
        with config.open("a") as f:
            f.write(extra)
    log = tmp / "tracker.log"
    daemon = Daemon(config, log).start()
    try:
        import orjson
        ready = next(orjson.loads(line) for line in log.read_bytes().splitlines()
                     if b"tracker ready" in line)
        yield f"http://{ready['listen']}/postbacks/skycore/{TOKEN}", daemon.proc.pid, log
    finally:
        if daemon.stop() != 0:
            print("warning: tracker run did not stop cleanly:\n" + log.read_text()[-2000:])


def phase(url: str, seconds: float, connections: int, first: int, pids: dict) -> dict:
    with CpuMeter(pids) as meter:
        r = _wrk.run(url, seconds, connections, first, int(seconds * PER_SECOND))
    r["cpu_us"] = meter.per_call_us(r["ok"])
    return r


async def measure(dsn: str, pg_pid: int | None, seconds: float = 10.0, rounds: int = 3,
                  connections: int = 64, warmup: float = 2.0) -> dict:
    """The postback figures: bare and tracker rounds, ratio, latency, CPU per request."""
    _wrk.wrk_path()  # say how to install it before anything starts
    await migrated(dsn)
    block = int(seconds * PER_SECOND)
    total = block * (rounds + 1)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(MAKE_MESSAGES, 0, total)
        await conn.execute("VACUUM ANALYZE tracker.messages")
        settings = {r["name"]: r["setting"] for r in await conn.fetch(
            "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit')")}
        before = await conn.fetchval("SELECT count(*) FROM tracker.postbacks")
    finally:
        await conn.close()
    tmp = Path(tempfile.mkdtemp(prefix="tracker-bench-postbacks-"))
    bares, tracks = [], []
    with bare_server() as (bare_url, bare_pid):
        async with tracker_daemon(dsn, tmp) as (url, tracker_pid, _log):
            bare_pids = {"bare": (bare_pid, False)}
            pids = {"tracker": (tracker_pid, False), "postgres": (pg_pid, True)}
            await asyncio.to_thread(phase, bare_url, warmup, connections, 0, bare_pids)
            answered = (await asyncio.to_thread(phase, url, warmup, connections, 0, pids))["ok"]
            for r in range(rounds):
                first = (r + 1) * block
                bares.append(await asyncio.to_thread(phase, bare_url, seconds, connections, first, bare_pids))
                tracks.append(await asyncio.to_thread(phase, url, seconds, connections, first, pids))
                answered += tracks[-1]["ok"]
            conn = await asyncpg.connect(dsn)
            try:
                stored = await conn.fetchval("SELECT count(*) FROM tracker.postbacks") - before
                began = time.monotonic()
                while await conn.fetchval("SELECT count(*) FROM tracker.postbacks WHERE processed_at IS NULL"):
                    if time.monotonic() - began > 120:
                        break
                    await asyncio.sleep(0.05)
                drained = time.monotonic() - began
            finally:
                await conn.close()
    shutil.rmtree(tmp, ignore_errors=True)  # the daemon's config and log
    med = lambda rs: sorted(rs, key=lambda x: x["rate"])[len(rs) // 2]  # noqa: E731
    cpu = lambda rs, k: statistics.median(x["cpu_us"][k] for x in rs)  # noqa: E731
    b, t = med(bares), med(tracks)
    return {
        "loop": loop.name(), "connections": connections, "seconds": seconds, "rounds": rounds,
        "settings": settings, "bares": bares, "tracks": tracks,
        "bare_rate": b["rate"], "bare_p50": b["p50"], "bare_p99": b["p99"],
        "rate": t["rate"], "p50": t["p50"], "p99": t["p99"], "p99_worst": max(x["p99"] for x in tracks),
        "ratio": statistics.median(y["rate"] / x["rate"] for x, y in zip(bares, tracks)),
        "cpu_bare": cpu(bares, "bare"), "cpu_tracker": cpu(tracks, "tracker"),
        "cpu_postgres": cpu(tracks, "postgres"),
        "wrk_cores_bare": statistics.median(x["wrk_cores"] for x in bares),
        "wrk_cores": statistics.median(x["wrk_cores"] for x in tracks),
        "errors": sum(x["errors"] for x in tracks), "answered": answered, "stored": stored,
        "drained_s": drained,
    }


def report(r: dict) -> str:
    lines = [
        f"postbacks: wrk -t1 -c{r['connections']} on core {_wrk.WRK_CORE}, {r['rounds']} rounds of"
        f" {r['seconds']:g} s each side, loop {r['loop']}, fsync={r['settings'].get('fsync')}"
        f" synchronous_commit={r['settings'].get('synchronous_commit')}, {os.cpu_count()} CPUs",
        "  rounds (bare / tracker, per s): " + ", ".join(
            f"{x['rate']:.0f} / {y['rate']:.0f}" for x, y in zip(r["bares"], r["tracks"])),
        f"  bare aiohttp handler   {r['bare_rate']:8.0f} /s  p50 {r['bare_p50']:6.2f} ms  p99 {r['bare_p99']:6.2f} ms"
        f"  CPU {r['cpu_bare']:.0f} us/request",
        f"  tracker postback route {r['rate']:8.0f} /s  p50 {r['p50']:6.2f} ms  p99 {r['p99']:6.2f} ms"
        f"  CPU tracker {r['cpu_tracker']:.0f} + PostgreSQL {r['cpu_postgres']:.0f} us/request",
        f"  wrk used {r['wrk_cores_bare']:.2f} of its core against the bare handler,"
        f" {r['wrk_cores']:.2f} against the tracker",
        f"  ratio {r['ratio']:.2f} (target >= 0.6), tracker p99 {r['p99']:.1f} ms (target <= 25);"
        f" errors {r['errors']}; rows stored {r['stored']} of {r['answered']} answered 200;"
        f" all applied {r['drained_s']:.2f} s after the last answer",
    ]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0, help="per round and side")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--dsn", default=os.environ.get("TRACKER_BENCH_DSN"),
                   help="an existing, migratable database (default: a private embedded cluster, fsync on)")
    args = p.parse_args()
    try:
        _wrk.wrk_path()
    except _wrk.WrkMissing as e:
        print(e, file=sys.stderr)
        return 2
    with database(args.dsn) as (dsn, pg_pid):
        r = asyncio.run(measure(dsn, pg_pid, args.seconds, args.rounds, args.connections))
    print(report(r))
    return 0 if r["stored"] >= r["answered"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
