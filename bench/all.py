"""Every performance figure beside its limit, measured in the same run on this machine: one table.

    .venv/bin/python bench/all.py [--quick] [--only NAME,...] [--dsn DSN]

Runs, one after another, each in a fresh database of one private PostgreSQL cluster (fsync on):

    postbacks  durable postbacks/s through `tracker run` (wrk on its own core) / a bare aiohttp
               handler reading and parsing the same body on the same event loop (bench/postbacks.py)
    events     postback -> LISTEN-woken consumer latency at 200 and 1,000 postbacks/s (bench/events.py)
    polls      CPU per status poll, tracker + PostgreSQL / the bare aiohttp client's per call; polls/s
               at 20 ms answer delay / the bare client's (bench/poll_rate.py)
    claims     claim time for a batch of 200 with 1,000,000 due / with 10,000 due; the rollup
               trigger's cost per poll (bench/claims.py)
    memory     `tracker run` RSS with 1,000,000 messages in flight / with 1,000 (bench/poll_memory.py)
    intake     messages/s taken in / bare set-based SQL writing the same rows (bench/intake.py)
    sinks      webhook events/s / a bare signed aiohttp client; postback -> webhook latency (bench/sinks.py)

--quick is a smoke run (a few minutes, smaller sizes: its figures are not the targets' sizes and
say so). Each bench can also be run alone, with more detail. Needs wrk (`apt-get install wrk`).
The machine's load average is printed before and after, and the CPU time the hypervisor gave
to other guests during each bench (steal, from /proc/stat): figures from a busy or shared
machine are low.
Each bench's own database is dropped when it is done; between benches it checkpoints and waits
(45 s at most) for the load to come back near where it began, so that one bench's aftermath
does not land in the next one's figures.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _wrk  # noqa: E402
import claims as claims_bench  # noqa: E402
import events as events_bench  # noqa: E402
import intake as intake_bench  # noqa: E402
import poll_memory  # noqa: E402
import poll_rate  # noqa: E402
import postbacks as postbacks_bench  # noqa: E402
import sinks as sinks_bench  # noqa: E402
from _polling import database  # noqa: E402

from tracker import loop  # noqa: E402

BENCHES = ("postbacks", "events", "polls", "claims", "memory", "intake", "sinks")


class Row:
    def __init__(self, figure: str, value: str, limit: str = "", ratio: float | None = None,
                 target: str = "", met: bool | None = None):
        self.figure, self.value, self.limit, self.ratio = figure, value, limit, ratio
        self.target, self.met = target, met


async def bench_postbacks(dsn, pg_pid, quick, rows, details):
    r = await postbacks_bench.measure(dsn, pg_pid, seconds=3 if quick else 10, rounds=1 if quick else 3,
                                      warmup=1 if quick else 2)
    details.append(postbacks_bench.report(r))
    rows.append(Row("postbacks: durable postbacks/s (200 after commit), wrk -c64",
                    f"{r['rate']:,.0f}/s", f"bare handler {r['bare_rate']:,.0f}/s", r["ratio"], ">= 0.6",
                    r["ratio"] >= 0.6))
    rows.append(Row("postbacks: tracker p99 (p50) latency", f"{r['p99']:.1f} ms ({r['p50']:.1f})",
                    f"bare {r['bare_p99']:.1f} ms ({r['bare_p50']:.1f})", None, "<= 25 ms",
                    r["p99"] <= 25))
    rows.append(Row("postbacks: CPU per request, tracker + PostgreSQL",
                    f"{r['cpu_tracker']:.0f} + {r['cpu_postgres']:.0f} us", f"bare {r['cpu_bare']:.0f} us",
                    (r["cpu_tracker"] + r["cpu_postgres"]) / r["cpu_bare"]))


async def bench_events(dsn, pg_pid, quick, rows, details):
    rs = await events_bench.measure(dsn, (200.0, 1000.0), seconds=3 if quick else 10, pg_pid=pg_pid)
    details.append(events_bench.report(rs))
    for r in rs:
        target = r["rate"] >= 1000
        rows.append(Row(f"events: postback -> consumer p99 (p50) at {r['achieved']:,.0f}/s",
                        f"{r['p99']:.1f} ms ({r['p50']:.1f})", "", None, "<= 25 ms" if target else "",
                        (r["p99"] <= 25 and r["seen"] == r["n"]) if target else None))
    w = rs[-1]  # its warm-up: the daemon's first seconds, shown, not judged
    rows.append(Row(f"events: the same in the first {w['warmup_s']:g} s after start, at {w['achieved']:,.0f}/s",
                    f"{w['warm'][1]:.1f} ms ({w['warm'][0]:.1f})"))
    last = rs[-1]["cpu_us"]  # at the highest rate: small batches, their costs per postback
    if last["postgres"] == last["postgres"]:  # NaN: not our cluster (--dsn)
        rows.append(Row(f"events: CPU per postback at {rs[-1]['achieved']:,.0f}/s, tracker + PostgreSQL",
                        f"{last['tracker']:.0f} + {last['postgres']:.0f} us"))


async def bench_polls(dsn, pg_pid, quick, rows, details):
    args = SimpleNamespace(messages=5000 if quick else 20000, concurrency=32, batch_size=200,
                           rounds=1 if quick else 2, delays_ms=[0.0, 20.0])
    r = await poll_rate.measure(args, dsn, pg_pid)
    details.append(poll_rate.report(r))
    for delay_ms, p in r["profiles"]:
        track, bare = poll_rate.cpu_total(p.track_cpu, "tracker"), poll_rate.cpu_total(p.bare_cpu, "bare")
        if delay_ms == 0:
            rows.append(Row("polls: CPU per poll, tracker + PostgreSQL (0 ms answers)",
                            f"{p.track_cpu['tracker']:.0f} + {p.track_cpu['postgres']:.0f} us",
                            f"bare client {bare:.0f} us/call", track / bare, "<= 1.5x", track / bare <= 1.5))
            own = poll_rate.cpu_total(p.own_cpu, "bare")
            rows.append(Row("polls: the same, against the tracker's own client in a bare loop", "",
                            f"bare own client {own:.0f} us/call", track / own))
            rows.append(Row("polls: polls/s at 0 ms answers", f"{p.tracked:,.0f}/s",
                            f"bare {p.bare:,.0f}/s", p.tracked / p.bare))
        else:
            ratio = p.tracked / p.bare
            rows.append(Row(f"polls: polls/s at {delay_ms:g} ms answers", f"{p.tracked:,.0f}/s",
                            f"bare {p.bare:,.0f}/s", ratio, ">= 0.95" if delay_ms == 20 else "",
                            ratio >= 0.95 if delay_ms == 20 else None))


async def bench_claims(dsn, pg_pid, quick, rows, details):
    r = await claims_bench.measure(dsn, 10_000, 100_000 if quick else 1_000_000, 20 if quick else 40)
    details.append(claims_bench.report(r))
    rows.append(Row(f"claims: batch of 200 with {r['large']:,} due", f"{r['large_ms']:.2f} ms",
                    f"{r['small']:,} due {r['small_ms']:.2f} ms", r["ratio"], "<= 1.5x", r["ratio"] <= 1.5))
    t = r["trigger"]
    rows.append(Row("claims: rollup trigger per poll (claim + write-back)", f"{t['trigger_us']:.1f} us",
                    f"of {t['on_us']:.1f} us", t["trigger_us"] / t["on_us"]))


async def bench_memory(dsn, pg_pid, quick, rows, details):
    args = SimpleNamespace(seconds=8.0 if quick else 20.0, later=100_000 if quick else 1_000_000)
    r = await poll_memory.measure(args, dsn)
    details.append(poll_memory.report(r))
    rows.append(Row(f"memory: RSS with {r['large']:,} in flight", f"{r['large_kib'] / 1024:.1f} MiB",
                    f"{r['small']:,}: {r['small_kib'] / 1024:.1f} MiB", r["ratio"], "<= 1.2x", r["ratio"] <= 1.2))


async def bench_intake(dsn, pg_pid, quick, rows, details):
    n = 20_000 if quick else 100_000
    out = []
    for kind, label in (("ref", "vendor_ref rows"), ("bulk", "engageSPARK bulk rows")):
        r = await intake_bench.measure(dsn, kind, n, 1000)
        ratio = r["tracker"] / r["bare"]
        out.append(f"  {label}: tracker {r['tracker']:,.0f} msg/s, bare SQL {r['bare']:,.0f} msg/s, ratio {ratio:.2f}")
        rows.append(Row(f"intake: {label}, {n:,} messages", f"{r['tracker']:,.0f} msg/s",
                        f"bare SQL {r['bare']:,.0f} msg/s", ratio, ">= 0.5", ratio >= 0.5))
    details.append("intake:\n" + "\n".join(out))


async def bench_sinks(dsn, pg_pid, quick, rows, details):
    args = SimpleNamespace(events=2000 if quick else 20_000, rounds=1 if quick else 3, concurrency=16,
                           rate=1000.0, seconds=3.0 if quick else 10.0, only=None)
    t, lat = await sinks_bench.measure(args, dsn, pg_pid)
    import statistics
    details.append("sinks: throughput rounds (bare / tracker): " + ", ".join(
        f"{b:.0f} / {x:.0f}" for b, x in zip(t["bare"], t["tracker"])))
    details.append(f"sinks: at {lat['achieved']:,.0f} postbacks/s, CPU per postback until the last webhook"
                   f" was in: {sinks_bench.cpu_line(lat['cpu_us'])} (the {os.cpu_count()} cores give"
                   f" {os.cpu_count() * 1e6 / lat['achieved']:,.0f} us per postback at that rate)")
    rows.append(Row("sinks: webhook events/s delivered", f"{statistics.median(t['tracker']):,.0f}/s",
                    f"bare client {statistics.median(t['bare']):,.0f}/s", t["ratio"], ">= 0.7", t["ratio"] >= 0.7))
    rows.append(Row("sinks: the same, against the tracker's own client in a bare loop", "",
                    f"bare own client {statistics.median(t['own']):,.0f}/s", t["own_ratio"]))
    rows.append(Row(f"sinks: postback -> webhook p99 (p50) at {lat['achieved']:,.0f}/s",
                    f"{lat['p99']:.0f} ms ({lat['p50']:.0f})", "", None))


RUNNERS = {"postbacks": bench_postbacks, "events": bench_events, "polls": bench_polls,
           "claims": bench_claims, "memory": bench_memory, "intake": bench_intake, "sinks": bench_sinks}


def table(rows: list[Row]) -> str:
    head = ("figure", "tracker", "limit, same run", "ratio", "target", "met")
    body = [(r.figure, r.value, r.limit, "" if r.ratio is None else f"{r.ratio:.2f}", r.target,
             "" if r.met is None else ("yes" if r.met else "NO")) for r in rows]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def cpu_times() -> list[int]:
    """The machine's CPU time so far by kind, from /proc/stat: user, nice, system, idle, iowait,
    irq, softirq, steal."""
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:9]]


def steal(before: list[int], after: list[int]) -> float:
    """Of the CPU time between two readings, the share the hypervisor gave to other guests:
    on a shared VM, what a bench's figures lost to its neighbours."""
    spent = [b - a for a, b in zip(before, after)]
    return spent[7] / max(sum(spent), 1)


async def settle(server_dsn: str, floor: float, most_s: float = 45.0) -> None:
    """Before a bench: the previous one's dirty pages written (CHECKPOINT, so that its
    checkpoint does not land in the next one's figures) and the load average back near where
    it was when the run began (or most_s seconds)."""
    import asyncpg

    conn = await asyncpg.connect(server_dsn)
    try:
        await conn.execute("CHECKPOINT")
    except asyncpg.PostgresError:  # not ours to checkpoint (--dsn): wait only
        pass
    finally:
        await conn.close()
    deadline = time.monotonic() + most_s
    while float(load().split()[0]) > floor and time.monotonic() < deadline:
        await asyncio.sleep(1)


async def run_all(server_dsn: str, pg_pid: int | None, names: list[str], quick: bool):
    rows: list[Row] = []
    details: list[str] = []
    timings = {}
    floor = max(0.6, float(load().split()[0]) + 0.3)
    for i, name in enumerate(names):
        if i:
            await settle(server_dsn, floor, 3.0 if quick else 45.0)
        began, cpu = time.monotonic(), cpu_times()
        # claims and intake make (and drop) databases of their own
        own = (contextlib.nullcontext(server_dsn) if name in ("claims", "intake")
               else intake_bench.fresh_database(server_dsn))
        print(f"[{time.strftime('%H:%M:%S')}] {name} (load average {load()}) ...", file=sys.stderr, flush=True)
        async with own as dsn:
            await RUNNERS[name](dsn, pg_pid, quick, rows, details)
        timings[name] = (time.monotonic() - began, steal(cpu, cpu_times()))
    return rows, details, timings


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a smoke run: smaller sizes, shorter rounds")
    p.add_argument("--only", default=",".join(BENCHES), help="comma-separated: " + ", ".join(BENCHES))
    p.add_argument("--dsn", help="a server where the benches may create databases (default: a private cluster)")
    args = p.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in RUNNERS]
    if unknown:
        p.error(f"unknown bench {unknown}; choose from {', '.join(BENCHES)}")
    if "postbacks" in names:
        try:
            _wrk.wrk_path()
        except _wrk.WrkMissing as e:
            print(e, file=sys.stderr)
            return 2
    before = load()
    began = time.monotonic()
    with database(args.dsn) as (dsn, pg_pid):
        rows, details, timings = loop.run(run_all(dsn, pg_pid, names, args.quick))
    print("\n\n".join(details))
    print()
    print(f"bench/all.py{' --quick' if args.quick else ''}: {os.cpu_count()} CPUs, event loop {loop.name()},"
          f" PostgreSQL with fsync on; load average before {before}, after {load()};"
          f" {time.monotonic() - began:.0f} s (" + ", ".join(f"{k} {t:.0f} s, steal {st:.1%}"
                                                            for k, (t, st) in timings.items()) + ")")
    print()
    print(table(rows))
    return 0 if all(r.met is not False for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
