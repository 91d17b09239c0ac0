"""Past one daemon: the figures behind docs/scaling.md, on this machine. Loopback only; stops by
itself. Each part runs on its own private PostgreSQL cluster (fsync on).

    .venv/bin/python bench/scaling.py [--messages 10000] [--only life,replicas,consumers,standby]

life      What one message costs the primary over its life, from its submission row to `delivered`
          and its event published (and read and acknowledged by one consumer): WAL bytes, SQL
          statements (pg_stat_statements) and PostgreSQL CPU per message, through a Skycore
          postback, and through Spark Sender polls (sandbox, polled until delivered).
replicas  1, 2 and 3 `tracker run` on one database polling the same due messages (the sandbox
          answering after 20 ms, and at once): polls/s, CPU per poll, the claim statement's mean
          time, and messages polled twice in a round (must be 0).
consumers The outbox published to NATS JetStream by a NATS sink, then 3 JetStream consumers each
          reading every event, against 3 SQL consumers (read_events/ack_events): CPU per event read.
standby   A streaming standby of the primary (pg_basebackup): which views and functions answer
          there (read-only), and how far behind it is.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _scaling.common import cluster  # noqa: E402
from _scaling.consumers import consumers  # noqa: E402
from _scaling.life import life_poll, life_postback  # noqa: E402
from _scaling.replicas import replicas  # noqa: E402
from _scaling.standby import standby  # noqa: E402

from tracker import loop  # noqa: E402


# --- report ------------------------------------------------------------------------------------------


def report(r: dict) -> str:
    lines = []
    if "life" in r:
        p, q = r["life"]["postback"], r["life"]["poll"]
        lines.append(f"life of a message ({r['messages']:,} messages; WAL bytes, statements, PostgreSQL CPU per message):")
        for label, x in (("intake (submission row -> message, submit transition published)", p["intake"]),
                         ("Skycore postback -> delivered, event published", p["delivered"]),
                         ("  whole life via postback", p["total"]),
                         (f"Spark Sender: intake + {q['polls_per_message']:.2f} polls -> delivered, events published",
                          q["delivered"]),
                         ("one consumer reading and acknowledging, per event", p["consumer"])):
            lines.append(f"  {label:72} {x['wal']:7.1f} B  {x['statements']:5.3f} statements  {x['cpu_us']:5.1f} us")
        for name, top in (("postback", p["delivered_top"]), ("poll", q["delivered_top"])):
            lines.append(f"  most frequent statements ({name} path): " + "; ".join(
                f"{c}x {' '.join(qq.split())[:60]}" for c, qq in top[:6]))
    if "replicas" in r:
        lines.append("replicas on one database (the sandbox's Spark Sender; concurrency 64 for the whole"
                     " deployment, shared among the replicas):")
        for x in r["replicas"]:
            lines.append(f"  answers after {x['delay_ms']:4.0f} ms, {x['daemons']} daemon(s): {x['rate']:7.0f} polls/s,"
                         f" CPU per poll daemons {x['tracker_us']:.0f} us + PostgreSQL {x['pg_us']:.0f} us;"
                         f" claims {x['claims']}, mean {x['claim_ms']:.2f} ms, {x['claimed_per_call']:.0f} rows each;"
                         f" polled twice: {x['twice']}")
    if "consumers" in r:
        c = r["consumers"]
        if "skipped" in c:
            lines.append(f"consumers: {c['skipped']}")
        else:
            lines.append(f"consumers ({c['events']:,} events): the NATS sink published {c['sink_rate']:,.0f} events/s"
                         f" (PostgreSQL {c['sink_pg_us']:.1f} us, nats-server {c['sink_nats_us']:.1f} us,"
                         f" daemon {c['sink_daemon_us']:.1f} us of CPU per event)")
            lines.append(f"  {c['readers']} JetStream consumers, each reading every event: {c['js_rate']:,.0f} events/s"
                         f" in all, PostgreSQL {c['js_pg_us']:.1f} us, nats-server {c['js_nats_us']:.1f} us per event read")
            lines.append(f"  {c['readers']} SQL consumers (read_events/ack_events, 1000 at a time): {c['sql_rate']:,.0f}"
                         f" events/s in all, PostgreSQL {c['sql_pg_us']:.1f} us per event read")
    if "standby" in r:
        s = r["standby"]
        lines.append(f"standby (streaming, pg_basebackup; in recovery: {s['in_recovery']}): a row written on the"
                     f" primary seen there after median {s['lag_ms'][0]:.1f} ms, max {s['lag_ms'][1]:.1f} ms")
        for k, v in s["answers"].items():
            lines.append(f"  {k:45} {v}")
    return "\n".join(lines)


async def measure(parts: list[str], n: int) -> dict:
    out: dict = {"messages": n}
    tmp = Path(tempfile.mkdtemp(prefix="tracker-bench-scaling-"))
    try:
        if "life" in parts:
            with cluster("life") as (pg, pid):
                out["life"] = {"postback": await life_postback(pg.dsn, pid, n, tmp)}
            with cluster("life-poll") as (pg, pid):
                out["life"]["poll"] = await life_poll(pg.dsn, pid, n, tmp)
        if "replicas" in parts:
            with cluster("replicas") as (pg, pid):
                out["replicas"] = await replicas(pg.dsn, pid, 2 * n, tmp)
        if "consumers" in parts:
            out["consumers"] = await consumers(2 * n, tmp)
        if "standby" in parts:
            out["standby"] = await standby(n)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=10_000)
    p.add_argument("--only", default="life,replicas,consumers,standby")
    args = p.parse_args()
    parts = [x.strip() for x in args.only.split(",") if x.strip()]
    r = loop.run(measure(parts, args.messages))
    print(report(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
