"""Polls per second through the tracker against the sandbox, beside a bare aiohttp client loop
against the same sandbox endpoint, in the same run. Loopback only; stops by itself.

    .venv/bin/python bench/poll_rate.py [--messages 20000] [--concurrency 32] [--rounds 2]
                                        [--delays-ms 0,5,20] [--dsn DSN]

The sandbox runs in its own process (Spark Sender's status call, one message per call). The
bare loop sends `--concurrency` status calls at a time through aiohttp's client and reads each
answer (the limit); the same loop through the tracker's own client (tracker.http.client) is
measured beside it and shown for comparison. The tracker is
`tracker run` in its own process with the same concurrency and no rate limit: every message is
made due at one moment and counted as polled when its result is written (poll_count,
observation, reducer, next poll): the rate runs from that moment to the last write. Rounds
alternate bare / tracker; the median round of each is shown.

Each delay in `--delays-ms` is one profile: the sandbox holds every answer that long (its
`answer_delay_s` knob), as a vendor's network and servers do. At 0 the sandbox answers at once
and both sides are bound by CPU: the bare loop's one aiohttp call against the tracker's call plus
its PostgreSQL write, with the sandbox and PostgreSQL on the same cores (docs/polling.md).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from datetime import datetime, timezone
from typing import NamedTuple
from pathlib import Path

from _polling import CpuMeter, Daemon, database, migrated, sandbox, send_sparksender, submit, write_config

import aiohttp
import asyncpg

from tracker import loop
from tracker.adapters.base import HttpRequest
from tracker.config_types import Config, VendorConfig
from tracker.http.client import HttpClient
from tracker.intake import take_in
from tracker.poller.engine import IDLE_MAX_S

KNOBS = {"time_scale": 0.01}


async def bare_loop(base: str, creds: dict, refs: list[str], concurrency: int) -> float:
    """Status calls for every ref, `concurrency` at a time; calls per second."""
    url = base + "/api/getStatus/"
    it = iter(refs)
    done = 0

    async def worker(s: aiohttp.ClientSession) -> None:
        nonlocal done
        for ref in it:
            params = {"user_id": creds["user_id"], "api_key": creds["api_key"], "msg_id": ref}
            async with s.get(url, params=params) as r:
                await r.read()
                done += r.status == 200
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as s:
        began = time.perf_counter()
        await asyncio.gather(*(worker(s) for _ in range(concurrency)))
        return done / (time.perf_counter() - began)


async def bare_own_loop(base: str, creds: dict, refs: list[str], concurrency: int) -> float:
    """The same calls through the tracker's own client (tracker.http.client) in a bare loop."""
    client = HttpClient(concurrency, 10.0)
    url = base + "/api/getStatus/"
    it = iter(refs)
    done = 0

    async def worker() -> None:
        nonlocal done
        for ref in it:
            params = {"user_id": creds["user_id"], "api_key": creds["api_key"], "msg_id": ref}
            done += (await client(HttpRequest("GET", url, params=params))).status == 200
    try:
        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done / (time.perf_counter() - began)
    finally:
        await client.close()


async def tracker_round(pool: asyncpg.Pool, n: int, meter: CpuMeter) -> float:
    """Make every message due at one moment a little ahead (so that the tracker's idle loop,
    which looks for due work at least every IDLE_MAX_S, is awake for it, as a bare loop that
    starts at once is); polls per second from that moment to the last poll written. `meter`
    counts CPU from just before then until all are polled, not this bench's own bulk update
    (which is vacuumed away first: the autovacuum it would cause is not the tracker's)."""
    lead = IDLE_MAX_S * 1.5 + 3.0
    due = await pool.fetchval(
        "WITH u AS (UPDATE tracker.messages SET poll_count = 0,"
        " next_poll_at = now() + $1 * interval '1 second' RETURNING next_poll_at)"
        " SELECT max(next_poll_at) FROM u", lead)
    await pool.execute("VACUUM tracker.messages")
    ahead = (due - datetime.now(timezone.utc)).total_seconds()
    if ahead < IDLE_MAX_S * 1.2:
        print("warning: the messages fell due before this bench had set them all; "
              "this round's rate is understated")
    await asyncio.sleep(max(0.0, ahead - IDLE_MAX_S * 1.2))
    with meter:
        while await pool.fetchval("SELECT EXISTS (SELECT 1 FROM tracker.messages WHERE poll_count = 0)"):
            await asyncio.sleep(0.25)  # (this check may scan the table: not too often)
    # (received_at: taken as the last batch's write began; that write's few ms are not counted)
    last = await pool.fetchval(
        "SELECT max(received_at) FROM tracker.observations WHERE source = 'poll' AND received_at >= $1", due)
    if last is None:
        raise RuntimeError("the tracker wrote no poll in this round; see its log")
    await pool.execute("UPDATE tracker.messages SET next_poll_at = now() + interval '1 day'")
    return n / (last - due).total_seconds()


class Profile(NamedTuple):
    bares: list[float]
    tracks: list[float]
    bare: float  # medians
    tracked: float
    bare_cpu: dict[str, float]
    track_cpu: dict[str, float]
    own_cpu: dict[str, float]  # the tracker's own client in a bare loop


async def set_knobs(url: str, knobs: dict) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/_sandbox/knobs", json=knobs) as r:
            r.raise_for_status()


async def profile(args, pool: asyncpg.Pool, vendor: dict, creds: dict, refs: list[str],
                  pids: dict) -> Profile:
    """Rounds of bare loop and tracker, alternating, after a warm-up of the bare loop."""
    await bare_loop(vendor["base_url"], creds, refs[:2000], args.concurrency)
    bares, tracks, bare_cpu, track_cpu, own_cpu = [], [], [], [], []
    for _ in range(args.rounds):
        with CpuMeter(pids) as m:
            bares.append(await bare_loop(vendor["base_url"], creds, refs, args.concurrency))
        bare_cpu.append(m.per_call_us(len(refs)))
        with CpuMeter(pids) as m:
            await bare_own_loop(vendor["base_url"], creds, refs, args.concurrency)
        own_cpu.append(m.per_call_us(len(refs)))
        m = CpuMeter(pids)
        tracks.append(await tracker_round(pool, len(refs), m))
        track_cpu.append(m.per_call_us(len(refs)))
    median_cpu = lambda rounds: {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}  # noqa: E731
    return Profile(bares, tracks, statistics.median(bares), statistics.median(tracks),
                   median_cpu(bare_cpu), median_cpu(track_cpu), median_cpu(own_cpu))


def cpu_line(us: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.0f}" for k, v in us.items() if v == v)  # NaN: not measured


async def measure(args, dsn: str, pg_pid: int | None) -> dict:
    """Every profile of `args.delays_ms`; see report()."""
    await migrated(dsn)
    async with sandbox(KNOBS) as sb:
        vendor = sb["vendors"]["sparksender"]
        creds = {k: vendor[k] for k in ("user_id", "api_key")}
        calls = await send_sparksender(vendor, args.messages, "6391")
        refs = [item["msgId"] for c in calls for group in c.response["success"] for item in group]
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        try:
            await submit(pool, calls)
            config = Config(vendors={"sparksender": VendorConfig(name="sparksender", first_poll_s=86400)})
            async with pool.acquire() as conn:
                while (await take_in(conn, config, 100)).rows:
                    pass
                await conn.execute("UPDATE tracker.messages SET next_poll_at = now() + interval '1 day'")
            settings = {
                **vendor, "first_poll_s": 3600.0, "max_poll_interval_s": 86400.0,
                "tracking_window_s": 864000.0, "rate_limit_per_s": 1e6,
                "concurrency": args.concurrency, "batch_size": args.batch_size,
                "request_timeout_s": 10.0}
            tmp = Path(tempfile.mkdtemp(prefix="tracker-pollrate-"))
            try:
                daemon = Daemon(write_config(tmp / "tracker.toml", dsn, {"sparksender": settings}),
                                tmp / "tracker.log").start()
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            pids = {"client": (os.getpid(), False), "tracker": (daemon.proc.pid, False),
                    "sandbox": (sb["pid"], False), "postgres": (pg_pid, True)}
            try:
                profiles = []
                for delay_ms in args.delays_ms:
                    await set_knobs(sb["url"], {"answer_delay_s": delay_ms / 1000})
                    profiles.append((delay_ms, await profile(args, pool, vendor, creds, refs, pids)))
            finally:
                code = daemon.stop()
                shutil.rmtree(tmp, ignore_errors=True)
            errors = await pool.fetchval("SELECT coalesce(sum(polls_failed), 0) FROM tracker.poll_stats")
        finally:
            await pool.close()
    return {"messages": len(refs), "concurrency": args.concurrency, "batch": args.batch_size,
            "rounds": args.rounds, "profiles": profiles, "errors": errors, "code": code}


def cpu_total(us: dict[str, float], side: str) -> float:
    """CPU per call of the side measured: the bare client's; the tracker's plus PostgreSQL's."""
    if side == "bare":
        return us["client"]
    return us["tracker"] + us["postgres"]


def report(r: dict) -> str:
    lines = [f"poll rate bench: loopback, {r['messages']} Spark Sender messages, concurrency "
             f"{r['concurrency']}, batch {r['batch']}, {r['rounds']} rounds, {os.cpu_count()} CPUs;"
             f" sandbox, tracker and this client each in its own process; each poll is written"
             f" through the reducer (observation, transition, state, next poll)"]
    for delay_ms, p in r["profiles"]:
        lines += [
            f"answer delay {delay_ms:g} ms: rounds (bare / tracker, per s) "
            + ", ".join(f"{b:.0f} / {t:.0f}" for b, t in zip(p.bares, p.tracks)),
            f"  bare aiohttp client loop {p.bare:8.0f} status calls/s  CPU us per call: {cpu_line(p.bare_cpu)}",
            f"  tracker (tracker run)    {p.tracked:8.0f} polls/s         CPU us per poll: {cpu_line(p.track_cpu)}",
            f"  ratio {p.tracked / p.bare:.2f}; CPU per poll, tracker + PostgreSQL"
            f" {cpu_total(p.track_cpu, 'tracker'):.0f} us = {cpu_total(p.track_cpu, 'tracker') / cpu_total(p.bare_cpu, 'bare'):.2f}x"
            f" the bare client's {cpu_total(p.bare_cpu, 'bare'):.0f} us per call (target <= 1.5x)",
            f"  the tracker's own client (tracker.http.client) in a bare loop: CPU us per call:"
            f" {cpu_line(p.own_cpu)}; the tracker + PostgreSQL are"
            f" {cpu_total(p.track_cpu, 'tracker') / cpu_total(p.own_cpu, 'bare'):.2f}x that"]
    lines.append(f"poll errors {r['errors']}; tracker exit code {r['code']}")
    return "\n".join(lines)


async def run(args, dsn: str, pg_pid: int | None) -> int:
    r = await measure(args, dsn, pg_pid)
    print(report(r))
    return 0 if r["code"] == 0 else 1


def delays(text: str) -> list[float]:
    out = [float(x) for x in text.split(",") if x.strip()]
    if not out or min(out) < 0:
        raise argparse.ArgumentTypeError("one or more delays in ms, each >= 0")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=20000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--delays-ms", type=delays, default=[0.0, 5.0, 20.0],
                   help="sandbox answer delays to measure at, comma-separated (default 0,5,20)")
    p.add_argument("--dsn", default=os.environ.get("TRACKER_BENCH_DSN"),
                   help="an existing, migratable database (default: a private embedded cluster)")
    args = p.parse_args()
    with database(args.dsn) as (dsn, pg_pid):
        return loop.run(run(args, dsn, pg_pid))


if __name__ == "__main__":
    raise SystemExit(main())
