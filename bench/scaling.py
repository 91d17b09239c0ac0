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
import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _polling import Daemon, cpu_seconds, migrated, sandbox, write_config  # noqa: E402

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
import orjson  # noqa: E402

from tracker import loop  # noqa: E402
from tracker.db.embedded import EmbeddedPostgres  # noqa: E402
from tracker.sandbox import send_many  # noqa: E402

TOKEN = "bench-token-0123456789"
BENCH = "/* bench */ "  # the bench's own statements, left out of the counts


@contextlib.contextmanager
def cluster(name: str, stats: bool = True, port: int = 55432):
    """A private cluster with pg_stat_statements loaded; yields (EmbeddedPostgres, postmaster pid)."""
    tmp = tempfile.mkdtemp(prefix=f"tracker-bench-{name}-")
    os.chmod(tmp, 0o755)
    pg = EmbeddedPostgres(Path(tmp) / "pg", port=port)
    try:
        pg.start()
        if stats:
            for setting in ("shared_preload_libraries = 'pg_stat_statements'",):
                pg._cmd("psql", "-h", str(pg.socket_dir), "-p", str(pg.port), "-U", "tracker", "-d", "postgres",
                        "-c", f"ALTER SYSTEM SET {setting}")
            pg.stop()
            pg.start()
            pg._cmd("psql", "-h", str(pg.socket_dir), "-p", str(pg.port), "-U", "tracker", "-d", pg.database,
                    "-c", "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        pid = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
        yield pg, pid
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


class Meter:
    """WAL bytes, statements (not the bench's own) and PostgreSQL CPU between start() and stop()."""

    def __init__(self, conn: asyncpg.Connection, pg_pid: int):
        self.conn, self.pg_pid = conn, pg_pid

    async def start(self) -> None:
        await self.conn.execute("SELECT pg_stat_statements_reset()")
        self.lsn = await self.conn.fetchval(BENCH + "SELECT pg_current_wal_lsn()")
        self.cpu = cpu_seconds(self.pg_pid, True)

    async def stop(self) -> dict:
        cpu = cpu_seconds(self.pg_pid, True) - self.cpu
        wal = await self.conn.fetchval(BENCH + "SELECT pg_current_wal_lsn() - $1::pg_lsn", self.lsn)
        rows = await self.conn.fetch(
            BENCH + "SELECT calls, query, total_exec_time FROM pg_stat_statements"
            " WHERE query NOT LIKE '%/* bench */%' AND query NOT LIKE '%pg_stat_statements%'")
        return {"wal": float(wal), "statements": sum(r["calls"] for r in rows), "cpu_s": cpu,
                "by_query": sorted(((r["calls"], r["query"]) for r in rows), reverse=True)}


async def wait_for(conn: asyncpg.Connection, sql: str, *args, timeout: float = 300) -> None:
    began = time.monotonic()
    while not await conn.fetchval(BENCH + sql, *args):
        if time.monotonic() - began > timeout:
            raise RuntimeError(f"timed out waiting for: {sql}")
        await asyncio.sleep(0.2)


async def consume_all(conn: asyncpg.Connection, consumer: str) -> int:
    """One consumer reads every published event and acknowledges it, 1000 at a time."""
    n = 0
    while True:
        rows = await conn.fetch("SELECT event_id FROM tracker.read_events($1, 1000)", consumer)
        if not rows:
            return n
        n += len(rows)
        await conn.execute("SELECT tracker.ack_events($1, $2)", consumer, rows[-1]["event_id"])


def per_message(stage: dict, n: int) -> dict:
    return {"wal": stage["wal"] / n, "statements": stage["statements"] / n, "cpu_us": stage["cpu_s"] / n * 1e6}


async def life_postback(dsn: str, pg_pid: int, n: int, tmp: Path) -> dict:
    await migrated(dsn)
    conn = await asyncpg.connect(dsn)
    config = write_config(tmp / "life-postback.toml", dsn, {"skycore": {"postback_token": TOKEN}})
    daemon = Daemon(config, tmp / "life-postback.log").start()
    out = {}
    try:
        ready = next(orjson.loads(line) for line in (tmp / "life-postback.log").read_bytes().splitlines()
                     if b"tracker ready" in line)
        url = f"http://{ready['listen']}/postbacks/skycore/{TOKEN}"
        await asyncio.sleep(2)
        m = Meter(conn, pg_pid)
        await m.start()
        await conn.execute(
            "INSERT INTO tracker.submissions (vendor, client_ref, vendor_ref, recipient)"
            " SELECT 'skycore', 'c' || i, 'life' || lpad(i::text, 8, '0'), '1555' || lpad(i::text, 7, '0')"
            " FROM generate_series(0, $1 - 1) i", n)
        await wait_for(conn, "SELECT NOT EXISTS (SELECT 1 FROM tracker.submissions WHERE processed_at IS NULL)")
        await wait_for(conn, "SELECT NOT EXISTS (SELECT 1 FROM tracker.transitions WHERE pos IS NULL)")
        out["intake"] = per_message(await m.stop(), n)
        await m.start()
        headers = {"Content-Type": "application/json"}
        todo = iter(range(n))
        async with aiohttp.ClientSession() as s:
            async def worker() -> None:
                for i in todo:
                    body = orjson.dumps({"origin": "SMS_MT", "code": "N202", "status": "Delivered",
                                         "to": f"1555{i:07d}", "tracking-id": f"life{i:08d}",
                                         "operator-name": "AT&T",
                                         "timestamp": "2024-05-01T12:00:00.000000+00:00"})
                    async with s.post(url, data=body, headers=headers) as r:
                        await r.read()
                        assert r.status == 200, r.status
            await asyncio.gather(*(worker() for _ in range(32)))
        await wait_for(conn, "SELECT NOT EXISTS (SELECT 1 FROM tracker.postbacks WHERE processed_at IS NULL)")
        await wait_for(conn, "SELECT count(*) = $1 FROM tracker.messages WHERE state = 'delivered'", n)
        await wait_for(conn, "SELECT NOT EXISTS (SELECT 1 FROM tracker.transitions WHERE pos IS NULL)")
        stage = await m.stop()
        out["delivered"] = per_message(stage, n)
        out["delivered_top"] = stage["by_query"][:12]
        await m.start()
        read = await consume_all(conn, "bench-consumer")
        out["consumer"] = per_message(await m.stop(), read)
    finally:
        daemon.stop()
        await conn.close()
    out["total"] = {k: out["intake"][k] + out["delivered"][k] for k in out["intake"]}
    return out


KNOBS = {"time_scale": 0.01, "delivered": 1.0, "read": 0.0, "failed": 0.0, "expired": 0.0,
         "rejected": 0.0, "no_receipt": 0.0, "temp_failure": 0.0, "latency": "fixed",
         "latency_s": 500.0, "sent_after_s": 50.0}


async def life_poll(dsn: str, pg_pid: int, n: int, tmp: Path) -> dict:
    await migrated(dsn)
    conn = await asyncpg.connect(dsn)
    out = {}
    async with sandbox(KNOBS) as sb:
        vendor = sb["vendors"]["sparksender"]
        settings = {**vendor, "first_poll_s": 0.5, "max_poll_interval_s": 1.0, "tracking_window_s": 3600.0,
                    "rate_limit_per_s": 1e6, "concurrency": 32}
        daemon = Daemon(write_config(tmp / "life-poll.toml", dsn, {"sparksender": settings}),
                        tmp / "life-poll.log").start()
        try:
            calls = []
            async with aiohttp.ClientSession() as http:
                for k in range(0, n, 1000):
                    calls += await send_many({"sparksender": vendor}, "sparksender",
                                             [f"6391{i:08d}" for i in range(k, min(k + 1000, n))],
                                             bulk=True, session=http)
            m = Meter(conn, pg_pid)
            await m.start()
            await conn.executemany(
                "INSERT INTO tracker.submissions (vendor, request, response) VALUES ($1, $2::jsonb, $3::jsonb)",
                [(c.vendor, orjson.dumps(c.request).decode(), orjson.dumps(c.response).decode()) for c in calls])
            await wait_for(conn, "SELECT count(*) = $1 FROM tracker.messages WHERE state = 'delivered'", n,
                           timeout=600)
            await wait_for(conn, "SELECT NOT EXISTS (SELECT 1 FROM tracker.transitions WHERE pos IS NULL)")
            stage = await m.stop()
            polls = await conn.fetchval(BENCH + "SELECT sum(poll_count) FROM tracker.messages")
        finally:
            daemon.stop()
    await conn.close()
    out["delivered"] = per_message(stage, n)
    out["delivered_top"] = stage["by_query"][:12]
    out["polls_per_message"] = polls / n
    out["calls_per_message"] = len(calls) / n
    return out


# --- replicas ----------------------------------------------------------------------------------------


async def replicas(dsn: str, pg_pid: int, n: int, tmp: Path, counts=(1, 2, 3), delays=(20.0, 0.0)) -> list[dict]:
    from tracker.config_types import Config, VendorConfig
    from tracker.intake import take_in

    await migrated(dsn)
    results = []
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    try:
        async with sandbox({"time_scale": 0.01}) as sb:
            vendor = sb["vendors"]["sparksender"]
            calls = []
            async with aiohttp.ClientSession() as http:
                for k in range(0, n, 1000):
                    calls += await send_many({"sparksender": vendor}, "sparksender",
                                             [f"6392{i:08d}" for i in range(k, min(k + 1000, n))],
                                             bulk=True, session=http)
            await pool.executemany(
                "INSERT INTO tracker.submissions (vendor, request, response) VALUES ($1, $2::jsonb, $3::jsonb)",
                [(c.vendor, orjson.dumps(c.request).decode(), orjson.dumps(c.response).decode()) for c in calls])
            config = Config(vendors={"sparksender": VendorConfig(name="sparksender", first_poll_s=86400)})
            async with pool.acquire() as conn:
                while (await take_in(conn, config, 100)).rows:
                    pass
            settings = {**vendor, "first_poll_s": 3600.0, "max_poll_interval_s": 86400.0,
                        "tracking_window_s": 864000.0, "rate_limit_per_s": 1e6, "concurrency": 64,
                        "request_timeout_s": 10.0}
            for delay_ms in delays:
                async with aiohttp.ClientSession() as http:
                    async with http.post(sb["url"] + "/_sandbox/knobs", json={"answer_delay_s": delay_ms / 1000}) as r:
                        r.raise_for_status()
                for k in counts:
                    daemons = [Daemon(write_config(tmp / f"rep{k}-{j}.toml", dsn, {"sparksender": settings}),
                                      tmp / f"rep{k}-{j}.log") for j in range(k)]
                    try:
                        for d in daemons:
                            d.start()
                        await asyncio.sleep(16)  # replicas see each other (poll_stats, 15 s) and share limits
                        results.append({"delay_ms": delay_ms, "daemons": k,
                                        **await replica_round(pool, pg_pid, n, [d.proc.pid for d in daemons])})
                    finally:
                        for d in daemons:
                            d.stop()
    finally:
        await pool.close()
    return results


async def replica_round(pool: asyncpg.Pool, pg_pid: int, n: int, pids: list[int]) -> dict:
    await pool.execute(BENCH + "UPDATE tracker.messages SET next_poll_at = now() + interval '1 day'")
    await pool.execute("VACUUM tracker.messages")
    first_obs = await pool.fetchval(BENCH + "SELECT coalesce(max(id), 0) FROM tracker.observations")
    due = await pool.fetchval(BENCH + "WITH u AS (UPDATE tracker.messages SET next_poll_at = now() + interval '2 seconds'"
                              " RETURNING next_poll_at) SELECT max(next_poll_at) FROM u")
    await pool.execute("VACUUM tracker.messages")
    await pool.execute("SELECT pg_stat_statements_reset()")
    cpu0 = cpu_seconds(pg_pid, True), sum(cpu_seconds(p) for p in pids)
    while await pool.fetchval(BENCH + "SELECT count(DISTINCT message_id) < $1 FROM tracker.observations"
                              " WHERE id > $2 AND source = 'poll'", n, first_obs):
        await asyncio.sleep(0.25)
    cpu1 = cpu_seconds(pg_pid, True), sum(cpu_seconds(p) for p in pids)
    last = await pool.fetchval(BENCH + "SELECT max(received_at) FROM tracker.observations WHERE id > $1", first_obs)
    twice = await pool.fetchval(BENCH + "SELECT count(*) FROM (SELECT message_id FROM tracker.observations"
                                " WHERE id > $1 AND source = 'poll' GROUP BY 1 HAVING count(*) > 1) t", first_obs)
    claim = await pool.fetchrow(BENCH + "SELECT sum(calls) AS calls, sum(total_exec_time) / sum(calls) AS mean_ms,"
                                " sum(rows) AS rows FROM pg_stat_statements WHERE query LIKE '%WITH due AS MATERIALIZED%'")
    await pool.execute(BENCH + "UPDATE tracker.messages SET next_poll_at = now() + interval '1 day'")
    return {"rate": n / (last - due).total_seconds(), "twice": twice,
            "claims": claim["calls"], "claim_ms": claim["mean_ms"],
            "claimed_per_call": (claim["rows"] or 0) / max(claim["calls"] or 1, 1),
            "pg_us": (cpu1[0] - cpu0[0]) / n * 1e6, "tracker_us": (cpu1[1] - cpu0[1]) / n * 1e6}


# --- consumers: SQL readers against JetStream consumers ------------------------------------------------


async def consumers(n: int, tmp: Path, readers: int = 3) -> dict:
    """The outbox filled with n events; `tracker run` publishes them to NATS JetStream through a
    NATS sink; then `readers` JetStream consumers each read all of them (PostgreSQL untouched),
    against `readers` SQL consumers each reading them with read_events/ack_events."""
    import socket
    import subprocess

    import nats

    server = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not os.access(server, os.X_OK):
        return {"skipped": "nats-server is not installed (apt-get install nats-server)"}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = tmp / "nats"
    store.mkdir()
    proc = subprocess.Popen([server, "-js", "-sd", str(store), "-a", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"nats://127.0.0.1:{port}"
    out: dict = {"events": n, "readers": readers}
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            await asyncio.sleep(0.05)
        with cluster("consumers", stats=False, port=55462) as (pg, pg_pid):
            await migrated(pg.dsn)
            conn = await asyncpg.connect(pg.dsn)
            await conn.execute(
                "WITH m AS (INSERT INTO tracker.messages (vendor, vendor_ref, recipient)"
                "  SELECT 'sparksender', 'n' || i, '1555' || i FROM generate_series(1, $1) i RETURNING id)"
                " INSERT INTO tracker.transitions (message_id, from_state, to_state, source, occurred_at)"
                " SELECT id, 'submitted', 'delivered', 'poll', now() FROM m", n)
            config = write_config(tmp / "nats.toml", pg.dsn, {})
            with config.open("a") as f:
                f.write(f'[sinks]\npoll_interval_s = 1.0\nbatch_size = 1000\n[sinks.nats.bus]\n'
                        f'servers = ["{url}"]\nstream = "TRACKER_EVENTS"\nsubject_prefix = "tracker"\n'
                        f'create_stream = true\n')
            nc = await nats.connect(url)
            js = nc.jetstream()
            cpu0 = cpu_seconds(pg_pid, True), cpu_seconds(proc.pid)
            began = time.monotonic()
            daemon = Daemon(config, tmp / "nats.log").start()
            try:
                while True:
                    with contextlib.suppress(Exception):
                        if (await js.stream_info("TRACKER_EVENTS")).state.messages >= n:
                            break
                    if time.monotonic() - began > 300:
                        raise RuntimeError("the NATS sink did not publish every event")
                    await asyncio.sleep(0.05)
                took = time.monotonic() - began
                cpu1 = cpu_seconds(pg_pid, True), cpu_seconds(proc.pid), cpu_seconds(daemon.proc.pid)
            finally:
                daemon.stop()
            out["sink_rate"] = n / took
            out["sink_pg_us"] = (cpu1[0] - cpu0[0]) / n * 1e6
            out["sink_nats_us"] = (cpu1[1] - cpu0[1]) / n * 1e6
            out["sink_daemon_us"] = cpu1[2] / n * 1e6  # (its start included)
            # readers JetStream consumers, each reading every event
            cpu0 = cpu_seconds(pg_pid, True), cpu_seconds(proc.pid)
            began = time.monotonic()
            for k in range(readers):
                sub = await js.pull_subscribe("tracker.>", durable=f"reader{k}", stream="TRACKER_EVENTS")
                got = 0
                while got < n:
                    msgs = await sub.fetch(1000, timeout=10)
                    for m in msgs:
                        await m.ack()
                    got += len(msgs)
            took = time.monotonic() - began
            cpu1 = cpu_seconds(pg_pid, True), cpu_seconds(proc.pid)
            out["js_rate"] = n * readers / took
            out["js_pg_us"] = (cpu1[0] - cpu0[0]) / (n * readers) * 1e6
            out["js_nats_us"] = (cpu1[1] - cpu0[1]) / (n * readers) * 1e6
            await nc.close()
            # readers SQL consumers, each reading every event
            cpu0 = cpu_seconds(pg_pid, True)
            began = time.monotonic()
            for k in range(readers):
                await consume_all(conn, f"sql-reader-{k}")
            took = time.monotonic() - began
            out["sql_rate"] = n * readers / took
            out["sql_pg_us"] = (cpu_seconds(pg_pid, True) - cpu0) / (n * readers) * 1e6
            await conn.close()
    finally:
        proc.terminate()
        proc.wait(10)
    return out


# --- standby -----------------------------------------------------------------------------------------

VIEWS = ["message_status", "message_history", "delivery_summary", "delivery_latency", "stuck_messages",
         "vendor_health", "intake_problems", "postback_problems", "delivery_by_route", "vendor_comparison",
         "sink_status", "sink_failures", "retention_status"]
CALLS = {"read_events (its own transaction: READ ONLY)": "SELECT count(*) FROM tracker.read_events('standby', 100)",
         "ack_events": "SELECT tracker.ack_events('standby', (SELECT min(event_id) FROM tracker.transitions WHERE pos IS NOT NULL))",
         "fold_route_deltas": "SELECT tracker.fold_route_deltas()"}


async def standby(n: int) -> dict:
    from tracker.adapters.base import Observation
    from tracker.core.states import State
    from tracker.db import reducer
    from tracker.events import publish_pending

    out: dict = {}
    with cluster("primary", stats=False, port=55442) as (primary, _pid):
        hba = primary.data_dir / "pg_hba.conf"
        hba.write_text(hba.read_text() + "local replication tracker peer map=tracker\n")
        conn = await asyncpg.connect(primary.dsn)
        await conn.execute("SELECT pg_reload_conf()")
        await migrated(primary.dsn)
        await conn.execute(
            "INSERT INTO tracker.messages (vendor, vendor_ref, recipient, state, country)"
            " SELECT 'skycore', 'sb' || i, '1555' || i, 'sent', 'US' FROM generate_series(1, $1) i", n)
        pool = await asyncpg.create_pool(primary.dsn, min_size=1, max_size=2)
        async with pool.acquire() as c:
            await reducer.apply(c, "postback", [Observation(vendor="skycore", vendor_ref=f"sb{i}", recipient=None,
                                                            state=State.delivered, code="N202")
                                                for i in range(1, n + 1)])
        await publish_pending(pool)
        await pool.close()
        stdir = Path(tempfile.mkdtemp(prefix="tracker-bench-standby-"))
        os.chmod(stdir, 0o755)
        replica = EmbeddedPostgres(stdir / "pg", port=55443)
        try:
            replica._prepare_dirs()
            primary._cmd("pg_basebackup", "-D", str(replica.data_dir), "-R", "-X", "stream", "-c", "fast",
                         "-h", str(primary.socket_dir), "-p", str(primary.port), "-U", "tracker")
            replica.start()
            rconn = await asyncpg.connect(replica.dsn)
            out["in_recovery"] = await rconn.fetchval("SELECT pg_is_in_recovery()")
            # lag: a row written on the primary, timed until the standby shows it
            lags = []
            for i in range(20):
                ref = f"lag{i}"
                t0 = time.perf_counter()
                await conn.execute("INSERT INTO tracker.messages (vendor, vendor_ref) VALUES ('skycore', $1)", ref)
                while not await rconn.fetchval("SELECT EXISTS (SELECT 1 FROM tracker.messages WHERE vendor_ref = $1)", ref):
                    await asyncio.sleep(0.0005)
                lags.append((time.perf_counter() - t0) * 1000)
            lags.sort()
            out["lag_ms"] = (lags[len(lags) // 2], lags[-1])
            answers = {}
            for v in VIEWS:
                answers[v] = await attempt(rconn, f"SELECT count(*) FROM tracker.{v}")
            for name, sql in CALLS.items():
                answers[name] = await attempt(rconn, sql)
            out["answers"] = answers
            await rconn.close()
        finally:
            replica.stop()
            shutil.rmtree(stdir, ignore_errors=True)
        await conn.close()
    return out


async def attempt(conn: asyncpg.Connection, sql: str) -> str:
    t0 = time.perf_counter()
    try:
        value = await conn.fetchval(sql)
    except asyncpg.PostgresError as e:
        return f"refused: {type(e).__name__}: {str(e).splitlines()[0][:90]}"
    return f"ok ({value} rows, {(time.perf_counter() - t0) * 1000:.1f} ms)" if isinstance(value, int) else "ok"


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
