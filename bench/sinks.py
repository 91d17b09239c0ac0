"""Webhook sink throughput and latency, on this machine, in one run, loopback only.

    .venv/bin/python bench/sinks.py [--events 20000] [--rounds 3] [--concurrency 16]
                                    [--rate 1000] [--seconds 10] [--dsn DSN]

1. Throughput: events/s that `tracker run` delivers to a local receiver (the outbox filled
   beforehand, the daemon started on it: moving from the outbox, claiming, signing, POSTing,
   recording) beside a bare aiohttp client POSTing the same bodies, signed the same way, with
   the same concurrency, to the same receiver. Both rates are measured at the receiver (first to
   last arrival), in alternating rounds; the ratio is the median of the rounds' ratios
   (target >= 0.7). The same bare loop through the tracker's own client (tracker.http.client,
   which the sink uses) is measured beside them and shown for comparison.
2. Latency: Skycore postbacks at a steady --rate per second for --seconds, each a `delivered`
   report for a message in `sent`: from just before the postback is sent to the webhook's
   arrival at the receiver, p50/p99 (the postback's group commit, the apply worker, the
   publisher, the sink's fill and claim, the POST); and the CPU each process spent per postback
   until the last webhook was in (the daemon does both the postbacks and the webhooks, in one
   event loop).

The receiver (bench/_receiver.py) runs in its own process (answers 204, notes arrival times), as does `tracker run`
and PostgreSQL (a private embedded cluster, fsync on, unless --dsn). Everything started here is
stopped here.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
import orjson  # noqa: E402

from bench._polling import CpuMeter, Daemon, database, migrated, toml  # noqa: E402
from bench import _wrk  # noqa: E402  (its STARTED: the postbacks' event time)
from bench._post import Poster  # noqa: E402
from bench._receiver import ReceiverProc  # noqa: E402
from tracker.adapters.base import HttpRequest  # noqa: E402
from tracker.http.client import HttpClient  # noqa: E402
from tracker.sinks import signing  # noqa: E402
from tracker.sinks.event import encode_event  # noqa: E402

PY = sys.executable
SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
TOKEN = "bench-token-0123456789"


# --- the tracker side --------------------------------------------------------------------------------


def write_config(path: Path, dsn: str, url: str, concurrency: int, skycore: bool = False) -> Path:
    lines = ["[database]", f"dsn = {toml(dsn)}", "pool_min = 2", "pool_max = 10",
             "[http]", 'listen = "127.0.0.1:0"', "[log]", 'level = "info"', 'format = "json"',
             "[sinks]", "poll_interval_s = 1.0", "batch_size = 1000",
             "[sinks.webhooks.bench]", f"url = {toml(url)}", f"secrets = [{toml(SECRET)}]",
             f"concurrency = {concurrency}", "timeout_s = 10.0"]
    for name in ("sparksender", "engagespark", "skycore", "sparrow"):
        lines.append(f"[vendors.{name}]")
        lines += ([f"postback_token = {toml(TOKEN)}"] if skycore and name == "skycore" else ["enabled = false"])
    path.write_text("\n".join(lines) + "\n")
    return path


async def write_events(dsn: str, first: int, n: int) -> None:
    """n messages, one transition each, straight into the outbox (as the reducer writes them)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "WITH m AS (INSERT INTO tracker.messages (vendor, vendor_ref, recipient)"
            "  SELECT 'sparksender', 'e' || i, '1555' || i FROM generate_series($1::int, $2::int) i RETURNING id)"
            " INSERT INTO tracker.transitions (message_id, from_state, to_state, source, occurred_at)"
            " SELECT id, 'submitted', 'delivered', 'poll', now() FROM m", first, first + n - 1)
    finally:
        await conn.close()


def sample_bodies(n: int, first: int) -> list[bytes]:
    now = datetime.now(timezone.utc)
    return [encode_event({"event_id": first + i, "message_id": first + i, "vendor": "sparksender",
                          "vendor_ref": f"e{first + i}", "recipient": f"1555{first + i}", "client_ref": None,
                          "from_state": "submitted", "to_state": "delivered", "source": "poll",
                          "occurred_at": now, "recorded_at": now, "failure_code": None,
                          "failure_reason": None, "failure_permanent": None, "is_correction": False})
            for i in range(n)]


async def bare(session: aiohttp.ClientSession, url: str, bodies: list[bytes], concurrency: int,
               first: int) -> None:
    keys = [signing.parse_secret(SECRET)]
    todo = iter(enumerate(bodies))

    async def worker() -> None:
        for i, body in todo:
            headers = signing.headers(keys, str(first + i), int(time.time()), body)
            async with session.post(url, data=body, headers=headers, allow_redirects=False) as r:
                await r.read()
                assert r.status == 204

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def bare_own(url: str, bodies: list[bytes], concurrency: int, first: int) -> None:
    """The same through the tracker's own client (tracker.http.client), bare."""
    keys = [signing.parse_secret(SECRET)]
    todo = iter(enumerate(bodies))

    async def worker(http: HttpClient) -> None:
        for i, body in todo:
            headers = signing.headers(keys, str(first + i), int(time.time()), body)
            assert (await http(HttpRequest("POST", url, headers=headers, content=body))).status == 204

    async with HttpClient(concurrency, 10.0) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))


def rate(stats: dict) -> float:
    return (stats["count"] - 1) / max(stats["last"] - stats["first"], 1e-9)


async def throughput(args, dsn: str, tmp: Path, rx: ReceiverProc, session) -> dict:
    config = write_config(tmp / "throughput.toml", dsn, rx.url, args.concurrency)
    bares, owns, tracks = [], [], []
    for r in range(args.rounds):
        first = 1 + r * args.events
        await rx.reset(session)
        await bare(session, rx.url, sample_bodies(args.events, first), args.concurrency, first)
        bares.append(rate(await rx.until(session, args.events, 60)))
        await rx.reset(session)
        await bare_own(rx.url, sample_bodies(args.events, first), args.concurrency, first)
        owns.append(rate(await rx.until(session, args.events, 60)))
        await rx.reset(session)
        await write_events(dsn, first, args.events)
        daemon = Daemon(config, tmp / f"daemon-{r}.log").start()
        try:
            tracks.append(rate(await rx.until(session, args.events, 300)))
        finally:
            daemon.stop()
    ratios = [t / b for b, t in zip(bares, tracks)]
    return {"bare": bares, "own": owns, "tracker": tracks, "ratio": statistics.median(ratios),
            "own_ratio": statistics.median(t / o for o, t in zip(owns, tracks))}


def postback(ref: str) -> bytes:
    return orjson.dumps({"origin": "SMS_MT", "code": "N202", "sent-as": "SMS", "status": "Delivered",
                         "from": "00000", "to": "15550000000", "tracking-id": ref,
                         "timestamp": _wrk.STARTED})


async def latency(args, dsn: str, pg_pid: int | None, tmp: Path, rx: ReceiverProc, session) -> dict:
    n = int(args.rate * args.seconds)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("INSERT INTO tracker.messages (vendor, vendor_ref, state)"
                           " SELECT 'skycore', 'lat' || lpad(i::text, 8, '0'), 'sent'"
                           " FROM generate_series(0, $1) i", n)
    finally:
        await conn.close()
    log = tmp / "latency.log"
    daemon = Daemon(write_config(tmp / "latency.toml", dsn, rx.url, args.concurrency, skycore=True), log).start()
    try:
        await rx.until(session, 0, 1)
        ready = next(json.loads(line) for line in log.read_text().splitlines() if "tracker ready" in line)
        url = f"http://{ready['listen']}/postbacks/skycore/{TOKEN}"
        await asyncio.sleep(3)  # the throughput rounds' events, if any, are out of the way
        await rx.reset(session)
        sent: dict[str, float] = {}
        statuses: dict[int, int] = {}
        # CPU until the last webhook is in
        with CpuMeter({"tracker": (daemon.proc.pid, False), "postgres": (pg_pid, True),
                       "receiver": (rx.proc.pid, False), "generator": (os.getpid(), False)}) as meter:
            start = time.monotonic()

            async with Poster(url) as poster:
                async def one(i: int) -> None:
                    ref = f"lat{i:08d}"
                    sent[ref] = time.time()
                    status = await poster.post(postback(ref))
                    statuses[status] = statuses.get(status, 0) + 1

                tasks = []
                for i in range(n):  # a steady rate: request i leaves at start + i / rate
                    delay = start + i / args.rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    tasks.append(asyncio.create_task(one(i)))
                await asyncio.gather(*tasks)
            achieved = n / (time.monotonic() - start)
            await rx.until(session, n, 120)
        stats = await rx.stats(session, refs=True)
        conn = await asyncpg.connect(dsn)
        try:  # when each transition was recorded: the tracker's part and the sink's part
            recorded = {r["vendor_ref"]: r["at"] for r in await conn.fetch(
                "SELECT m.vendor_ref, extract(epoch FROM t.recorded_at)::float8 AS at"
                " FROM tracker.transitions t JOIN tracker.messages m ON m.id = t.message_id"
                " WHERE m.vendor = 'skycore' AND m.vendor_ref LIKE 'lat%'")}
        finally:
            await conn.close()
    finally:
        daemon.stop()
    got = stats["refs"]
    lat = sorted((got[ref] - t) * 1000 for ref, t in sent.items() if ref in got)
    ingest = sorted((recorded[ref] - t) * 1000 for ref, t in sent.items() if ref in recorded)
    sink = sorted((got[ref] - recorded[ref]) * 1000 for ref in sent if ref in got and ref in recorded)
    pct = lambda xs, p: xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")  # noqa: E731
    return {"n": n, "achieved": achieved, "statuses": statuses, "p50": pct(lat, 0.5), "p99": pct(lat, 0.99),
            "max": lat[-1], "delivered": len(lat), "ingest": (pct(ingest, 0.5), pct(ingest, 0.99)),
            "sink": (pct(sink, 0.5), pct(sink, 0.99)), "cpu_us": meter.per_call_us(n)}


async def measure(args, dsn: str, pg_pid: int | None = None) -> tuple[dict | None, dict | None]:
    """(throughput, latency), each None when --only leaves it out."""
    await migrated(dsn)
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"tracker-bench-sinks-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        with ReceiverProc() as rx:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=max(args.concurrency, 256))) as s:
                t = await throughput(args, dsn, tmp, rx, s) if args.only != "latency" else None
                lat = await latency(args, dsn, pg_pid, tmp, rx, s) if args.only != "throughput" else None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the daemons' configs and logs
    return t, lat


async def run(args, dsn: str, pg_pid: int | None) -> int:
    t, lat = await measure(args, dsn, pg_pid)
    print(f"sinks bench: loopback, {os.cpu_count()} CPUs; receiver, tracker run and PostgreSQL each in "
          f"their own process; concurrency {args.concurrency}; {args.rounds} rounds of {args.events} events")
    if t:
        print_throughput(t)
    if lat:
        print(f"latency postback -> webhook at {lat['achieved']:.0f} postbacks/s for {args.seconds:g} s "
              f"({lat['n']} postbacks, answers {lat['statuses']}, {lat['delivered']} webhooks): "
              f"p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, max {lat['max']:.1f} ms")
        print(f"  of which postback sent -> transition recorded: p50 {lat['ingest'][0]:.1f} ms, p99 "
              f"{lat['ingest'][1]:.1f} ms; recorded -> webhook received: p50 {lat['sink'][0]:.1f} ms, "
              f"p99 {lat['sink'][1]:.1f} ms")
        print("  CPU per postback until the last webhook was in: " + cpu_line(lat["cpu_us"]))
    return 0 if lat is None or lat["delivered"] == lat["n"] else 1


def cpu_line(cpu_us: dict[str, float]) -> str:
    """CPU per postback, by process."""
    return ", ".join(f"{k} {v:.0f} us" for k, v in cpu_us.items())


def print_throughput(t: dict) -> None:
    print("rounds (bare client / tracker sink, events/s): " + ", ".join(
        f"{b:.0f} / {x:.0f}" for b, x in zip(t["bare"], t["tracker"])))
    print(f"throughput: tracker {statistics.median(t['tracker']):.0f} events/s, bare aiohttp client "
          f"{statistics.median(t['bare']):.0f} /s, ratio {t['ratio']:.2f} (median of the rounds'; target >= 0.7)")
    print(f"  the tracker's own client (tracker.http.client) bare: {statistics.median(t['own']):.0f} /s "
          f"(rounds {', '.join(f'{o:.0f}' for o in t['own'])}); the tracker's ratio to it {t['own_ratio']:.2f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=20_000,  # rounds of seconds, not one second
                   help="events per throughput round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=16, help="the sink's and the bare client's")
    p.add_argument("--rate", type=float, default=1000.0, help="postbacks per second (latency)")
    p.add_argument("--seconds", type=float, default=10.0, help="how long the steady load lasts")
    p.add_argument("--only", choices=("throughput", "latency"), help="run one part only")
    p.add_argument("--dsn", default=os.environ.get("TRACKER_BENCH_DSN"),
                   help="an existing database (default: a private embedded cluster, fsync on)")
    args = p.parse_args()
    with database(args.dsn) as (dsn, pg_pid):
        return asyncio.run(run(args, dsn, pg_pid))


if __name__ == "__main__":
    raise SystemExit(main())
