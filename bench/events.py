"""Postback to consumer latency: how soon a transition caused by a postback is seen by a consumer
that LISTENs on `tracker_events` and reads with tracker.read_events (the contract's consumer).

    .venv/bin/python bench/events.py [--rates 200,1000] [--seconds 10] [--dsn DSN]

`tracker run` (its own process, Skycore's postback route, a private PostgreSQL with fsync on
unless --dsn) gets Skycore `delivered` postbacks at a steady rate, each about its own message
(in `sent`); the consumer (its own process) is woken by the notification, reads every event
after its position, acknowledges, and notes when it saw each one (its acknowledgements commit without waiting for the WAL
flush: a consumer's choice, at least once either way). From just before a postback
leaves to the moment its event is read: p50/p99/max, and where the time goes: the postback's
answer (group commit), answered -> transition recorded (the apply worker; recorded_at is its
transaction's start), recorded -> read (the apply's commit, the publisher, the notification and
the consumer's read), and the CPU each process spent per postback while the load ran (the
daemon; PostgreSQL, the consumer's backend included; this load generator; the consumer): at
moderate rates batches are small, and most of that is paid per batch. Each rate is its own run
of the daemon on fresh messages. The load runs WARMUP_S at the same rate before the measured
seconds: a daemon and a consumer just started make their connections and first plans in their
first batches (the first 250 ms held the slowest events, 65-98 ms), which a daemon that has run
for a while does not. Those first postbacks are reported on a line of their own, not left out
unseen.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _polling import PY, ROOT, CpuMeter, database, migrated  # noqa: E402
from _post import Poster  # noqa: E402
import _wrk  # noqa: E402  (its STARTED: the postbacks' event time)

import asyncpg  # noqa: E402
import orjson  # noqa: E402

from tracker import loop  # noqa: E402

from postbacks import tracker_daemon  # noqa: E402

CONSUMER = "bench-latency"
WARMUP_S = 2.0  # at the measured rate, before the measured seconds: reported apart
READ_MAX = 1000  # events a read asks for


# --- the consumer (its own process: `bench/events.py consumer DSN N TIMEOUT OUT`) ------------------


async def consume(dsn: str, n: int, timeout: float) -> dict:
    """Read events as a LISTEN-woken consumer until n were seen; {vendor_ref: seen at}."""
    # Its acknowledgements need not wait for the WAL flush: one lost in a crash means events
    # read again (at least once), which a consumer deduplicates by event_id anyway.
    conn = await asyncpg.connect(dsn, server_settings={"synchronous_commit": "off"})
    woken = asyncio.Event()
    await conn.add_listener("tracker_events", lambda *_: woken.set())
    seen: dict[str, float] = {}
    reads = 0
    print("listening", flush=True)
    deadline = time.monotonic() + timeout
    while len(seen) < n and time.monotonic() < deadline:
        try:
            await asyncio.wait_for(woken.wait(), 1.0)
        except TimeoutError:
            pass
        woken.clear()  # before reading: a notification from now on means another read
        while True:
            rows = await conn.fetch("SELECT event_id, vendor_ref FROM tracker.read_events($1, $2)", CONSUMER, READ_MAX)
            reads += 1
            if not rows:
                break
            now = time.time()
            for r in rows:
                seen.setdefault(r["vendor_ref"], now)
            await conn.fetchval("SELECT tracker.ack_events($1, $2)", CONSUMER, rows[-1]["event_id"])
            if len(rows) < READ_MAX:  # caught up: what is published after this read notifies again
                break
    await conn.close()
    return {"seen": seen, "reads": reads}


def consumer_main(dsn: str, n: int, timeout: float, path: str) -> None:
    """What it saw goes to a file: through the stdout pipe, a result over 64 KiB written while
    the load was still finishing arrived cut at 64 KiB on a busy machine."""
    out = loop.run(consume(dsn, n, timeout))
    Path(path).write_bytes(orjson.dumps(out))


# --- the load ------------------------------------------------------------------------------------


def body(ref: str, i: int) -> bytes:
    return orjson.dumps({"origin": "SMS_MT", "code": "N202", "sent-as": "SMS", "status": "Delivered",
                         "from": "00000", "to": f"1555{i % 10_000_000:07d}", "tracking-id": ref,
                         "timestamp": _wrk.STARTED})


def pct(xs: list[float], p: float) -> float:
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")


async def one_rate(dsn: str, rate: float, seconds: float, tag: str, pg_pid: int | None = None,
                   warmup_s: float = WARMUP_S) -> dict:
    first = int(rate * warmup_s)  # postbacks 0 .. first - 1: the warm-up
    n = first + int(rate * seconds)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO tracker.messages (vendor, vendor_ref, recipient, state)"
            " SELECT 'skycore', $1 || lpad(i::text, 8, '0'), '1555' || lpad(i::text, 7, '0'), 'sent'"
            " FROM generate_series(0, $2 - 1) i", tag, n)
        await conn.execute("VACUUM ANALYZE tracker.messages")
        # the consumer starts after everything before this run
        last = await conn.fetchval("SELECT max(event_id) FROM tracker.transitions WHERE pos IS NOT NULL")
        if last:
            await conn.execute("SELECT tracker.ack_events($1, $2)", CONSUMER, last)
    finally:
        await conn.close()
    tmp = Path(tempfile.mkdtemp(prefix="tracker-bench-events-"))
    async with tracker_daemon(dsn, tmp) as (url, tracker_pid, _log):
        result = tmp / "consumer.json"
        consumer = subprocess.Popen([PY, __file__, "consumer", dsn, str(n), str(seconds + 60),
                                     str(result)], stdout=subprocess.PIPE, text=True, cwd=str(ROOT))
        try:
            assert consumer.stdout.readline().strip() == "listening"
            sent: dict[str, float] = {}
            answered: dict[str, float] = {}
            statuses: dict[int, int] = {}
            async with Poster(url) as poster:
                async def post(i: int) -> None:
                    ref = f"{tag}{i:08d}"
                    data = body(ref, i)
                    sent[ref] = time.time()
                    status = await poster.post(data)
                    answered[ref] = time.time()
                    statuses[status] = statuses.get(status, 0) + 1

                await post(n)  # a first request opens a connection (not measured: no message)
                # CPU of each process while the load runs, per postback (PostgreSQL: every
                # backend, the consumer's too; NaN when the cluster is not ours: --dsn)
                pids = {"tracker": (tracker_pid, False), "postgres": (pg_pid, True),
                        "generator": (os.getpid(), False), "consumer": (consumer.pid, False)}
                with CpuMeter(pids) as meter:
                    tasks = []
                    start = time.monotonic()
                    for i in range(n):  # a steady rate: request i leaves at start + i / rate
                        delay = start + i / rate - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        tasks.append(asyncio.create_task(post(i)))
                    await asyncio.gather(*tasks)
                    achieved = n / (time.monotonic() - start)
                cpu_us = meter.per_call_us(n)
            await asyncio.to_thread(consumer.communicate, timeout=seconds + 90)
        finally:
            if consumer.poll() is None:
                consumer.kill()
                consumer.wait()
    if consumer.returncode != 0:
        raise RuntimeError(f"the consumer failed (exit {consumer.returncode}); see its stderr above")
    got = orjson.loads(result.read_bytes())
    shutil.rmtree(tmp, ignore_errors=True)  # the daemon's config and log, the consumer's result
    seen = got["seen"]
    conn = await asyncpg.connect(dsn)
    try:
        recorded = {r["vendor_ref"]: r["at"] for r in await conn.fetch(
            "SELECT m.vendor_ref, extract(epoch FROM t.recorded_at)::float8 AS at"
            " FROM tracker.transitions t JOIN tracker.messages m ON m.id = t.message_id"
            " WHERE m.vendor = 'skycore' AND m.vendor_ref LIKE $1 || '%'", tag)}
    finally:
        await conn.close()
    ms = lambda a, b, keys: sorted((b[k] - a[k]) * 1000 for k in keys if k in a and k in b)  # noqa: E731
    warm = [f"{tag}{i:08d}" for i in range(first)]
    measured = [f"{tag}{i:08d}" for i in range(first, n)]
    total, cold = ms(sent, seen, measured), ms(sent, seen, warm)
    return {"rate": rate, "achieved": achieved, "n": n, "seen": len(seen), "statuses": statuses,
            "reads": got["reads"], "cpu_us": cpu_us, "measured": len(measured),
            "p50": pct(total, 0.5), "p99": pct(total, 0.99), "max": total[-1] if total else float("nan"),
            "warmup_s": warmup_s, "warm": [pct(cold, 0.5), pct(cold, 0.99), cold[-1] if cold else float("nan")],
            "answer": [pct(x, q) for x in [ms(sent, answered, measured)] for q in (0.5, 0.99)],
            "apply": [pct(x, q) for x in [ms(answered, recorded, measured)] for q in (0.5, 0.99)],
            "publish": [pct(x, q) for x in [ms(recorded, seen, measured)] for q in (0.5, 0.99)]}


async def measure(dsn: str, rates=(200.0, 1000.0), seconds: float = 10.0,
                  pg_pid: int | None = None) -> list[dict]:
    await migrated(dsn)
    return [await one_rate(dsn, rate, seconds, f"ev{k}x", pg_pid) for k, rate in enumerate(rates)]


def report(results: list[dict]) -> str:
    lines = ["events: postback -> LISTEN-woken consumer (read_events), tracker run and the consumer"
             " each in its own process"]
    for r in results:
        lines.append(
            f"  {r['rate']:5.0f} postbacks/s (achieved {r['achieved']:.0f}, {r['n']} postbacks, answers"
            f" {r['statuses']}, {r['seen']} events read in {r['reads']} reads)")
        lines.append(
            f"        the first {r['warmup_s']:g} s after the daemon started (warm-up): p50 {r['warm'][0]:.1f} ms,"
            f" p99 {r['warm'][1]:.1f} ms, max {r['warm'][2]:.1f} ms")
        lines.append(
            f"        the {r['measured']} postbacks after it: p50 {r['p50']:.1f} ms,"
            f" p99 {r['p99']:.1f} ms, max {r['max']:.1f} ms")
        lines.append(
            f"        of which p50/p99: answer {r['answer'][0]:.1f}/{r['answer'][1]:.1f} ms,"
            f" answered -> recorded {r['apply'][0]:.1f}/{r['apply'][1]:.1f} ms,"
            f" recorded -> read {r['publish'][0]:.1f}/{r['publish'][1]:.1f} ms")
        lines.append("        CPU per postback while the load ran (warm-up included): " + ", ".join(
            f"{k} {v:.0f} us" for k, v in r["cpu_us"].items() if v == v))  # NaN: not ours
    return "\n".join(lines)


def main() -> int:
    if sys.argv[1:2] == ["consumer"]:
        consumer_main(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rates", default="200,1000", help="postbacks per second, comma-separated")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--dsn", default=os.environ.get("TRACKER_BENCH_DSN"),
                   help="an existing, migratable database (default: a private embedded cluster)")
    args = p.parse_args()
    rates = [float(x) for x in args.rates.split(",") if x.strip()]
    with database(args.dsn) as (dsn, pg_pid):
        results = loop.run(measure(dsn, rates, args.seconds, pg_pid))
    print(report(results))
    return 0 if all(r["seen"] == r["n"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
