"""Intake at campaign scale: how fast submission rows become tracked messages.

For each kind of row (Spark Sender `vendor_ref` rows; raw engageSPARK bulk responses of 100
messages each) it inserts N messages' worth of rows into tracker.submissions, in one
transaction, while `tracker run` is running, and times from that commit until every row is
processed (the insert itself is the sender's work, and the limit's clock starts with its rows
already in place too). Beside it, in the same run and cluster, the
limit: bare set-based SQL writing the same rows (messages, observations, transitions, submission
outcomes: one statement each per batch of the same size). Then the `vendor_ref` rate again with
100,000 old orphan reports present, and a Sparrow compose row with 100,000 valid and one with
100,000 invalid recipients, taken in while /healthz is asked every 10 ms: the worst answer time
and the daemon's peak memory.

    .venv/bin/python bench/intake.py [--messages 100000] [--batch 1000] [--dsn DSN]
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import orjson

from _polling import Daemon, database, migrated, write_config  # noqa: E402 (sets sys.path)

import asyncpg  # noqa: E402

from urllib.parse import urlsplit, urlunsplit  # noqa: E402

VENDORS = {"sparksender": {}, "engagespark": {}, "skycore": {}, "sparrow": {}}  # enabled, not polled
BULK = 100  # messages per engageSPARK bulk response


def dsn_with_db(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + database))


@contextlib.asynccontextmanager
async def fresh_database(server_dsn: str) -> AsyncIterator[str]:
    """A new database with the tracker's schema (its DSN), dropped when the bench is done with
    it: left behind, its tables were vacuumed while the next bench ran (docs/performance.md,
    "The previous bench's vacuum")."""
    name = "bench_" + uuid.uuid4().hex[:8]
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    try:
        dsn = dsn_with_db(server_dsn, name)
        await migrated(dsn)
        yield dsn
    finally:
        admin = await asyncpg.connect(server_dsn)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await admin.close()


@contextlib.asynccontextmanager
async def tracker_on(dsn: str) -> AsyncIterator[tuple[asyncpg.Connection, Path, Daemon]]:
    """A connection to `dsn`, and `tracker run` on it (its config written, not started: a bench
    may add to the config first), both closed and the scratch directory removed when done."""
    conn = await asyncpg.connect(dsn)
    with tempfile.TemporaryDirectory(prefix="tracker-bench-intake-") as tmp:
        config = write_config(Path(tmp) / "tracker.toml", dsn, VENDORS)
        daemon = Daemon(config, Path(tmp) / "daemon.log")
        try:
            yield conn, config, daemon
        finally:
            daemon.stop()
            await conn.close()


async def insert_ref_rows(conn, first: int, n: int) -> None:
    await conn.execute(
        "INSERT INTO tracker.submissions (vendor, client_ref, vendor_ref, recipient)"
        " SELECT 'sparksender', 'c' || g, g::text, '9471' || lpad(g::text, 8, '0')"
        " FROM generate_series($1::int, $1::int + $2::int - 1) g", first, n)


DEADLINE = (datetime.now(timezone.utc) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def bulk_row(i: int) -> tuple[str, str]:
    response = {"messages": [{"id": f"E{i}-{j}"} for j in range(BULK)], "deliveryDeadline": DEADLINE}
    request = {"messages": [{"to": f"63917{i:05d}{j:02d}"} for j in range(BULK)]}
    return orjson.dumps(response).decode(), orjson.dumps(request).decode()


async def insert_bulk_rows(conn, first: int, n: int) -> None:
    await conn.executemany(
        "INSERT INTO tracker.submissions (vendor, response, request) VALUES ('engagespark', $1::jsonb, $2::jsonb)",
        [bulk_row(i) for i in range(first, first + n)])


async def insert_orphans(conn, n: int) -> None:
    await conn.execute(
        "INSERT INTO tracker.observations (vendor, vendor_ref, source, state, code, received_at)"
        " SELECT 'skycore', 'ORPHAN' || g, 'postback', 'delivered', 'N202', now() - interval '2 days'"
        " FROM generate_series(1, $1) g", n)
    await conn.execute("VACUUM ANALYZE tracker.observations")  # settled, as orphans gathered over time are


async def until_taken_in(conn, began: float, timeout: float = 600) -> float:
    while await conn.fetchval("SELECT EXISTS (SELECT 1 FROM tracker.submissions WHERE processed_at IS NULL)"):
        if time.monotonic() - began > timeout:
            raise RuntimeError("intake did not finish")
        await asyncio.sleep(0.02)
    return time.monotonic() - began


# --- the limit: bare set-based SQL, one statement per table per batch ---------------------------

BARE_REF_MESSAGES = """
INSERT INTO tracker.messages (vendor, vendor_ref, recipient, client_ref, submission_id, submitted_at,
                              window_ends_at, next_poll_at, last_report_at)
SELECT vendor, vendor_ref, recipient, client_ref, id, submitted_at, submitted_at + interval '2 days',
       submitted_at + interval '30 seconds', now()
FROM tracker.submissions WHERE id BETWEEN $1 AND $2
RETURNING id
"""
BARE_BULK_MESSAGES = """
INSERT INTO tracker.messages (vendor, vendor_ref, recipient, client_ref, submission_id, submitted_at,
                              vendor_deadline, window_ends_at, next_poll_at, state, last_report_at)
SELECT s.vendor, m.value->>'id', (s.request->'messages'->(m.n::int - 1))->>'to', s.client_ref, s.id,
       s.submitted_at, (s.response->>'deliveryDeadline')::timestamptz,
       (s.response->>'deliveryDeadline')::timestamptz + interval '1 hour',
       s.submitted_at + interval '30 seconds', 'accepted', now()
FROM tracker.submissions s, jsonb_array_elements(s.response->'messages') WITH ORDINALITY AS m(value, n)
WHERE s.id BETWEEN $1 AND $2
RETURNING id
"""
BARE_OBSERVATIONS = """
INSERT INTO tracker.observations (message_id, vendor, vendor_ref, source, state, code, event_at, raw)
SELECT id, vendor, vendor_ref, 'submit', state, state::text, submitted_at,
       CASE WHEN vendor = 'engagespark' THEN jsonb_build_object('id', vendor_ref) END
FROM tracker.messages WHERE id = ANY($1::bigint[])
RETURNING id, message_id
"""
BARE_TRANSITIONS = """
INSERT INTO tracker.transitions (message_id, from_state, to_state, source, occurred_at, observation_id)
SELECT m.id, 'submitted', m.state, 'submit', now(), o.id
FROM tracker.messages m JOIN unnest($1::bigint[], $2::bigint[]) AS o(id, message_id) ON o.message_id = m.id
WHERE m.id = ANY($2::bigint[]) AND m.state > 'submitted'
"""
BARE_FINISH = """
UPDATE tracker.submissions SET processed_at = now(), message_count = $3
WHERE id BETWEEN $1 AND $2
"""


async def bare(conn, first_id: int, last_id: int, batch: int, bulk: bool) -> None:
    for a in range(first_id, last_id + 1, batch):
        b = min(a + batch - 1, last_id)
        async with conn.transaction():
            ids = [r[0] for r in await conn.fetch(BARE_BULK_MESSAGES if bulk else BARE_REF_MESSAGES, a, b)]
            obs = await conn.fetch(BARE_OBSERVATIONS, ids)
            await conn.execute(BARE_TRANSITIONS, [r[0] for r in obs], [r[1] for r in obs])
            await conn.execute(BARE_FINISH, a, b, BULK if bulk else 1)


async def measure(server_dsn: str, kind: str, messages: int, batch: int, orphans: int = 0) -> dict:
    """Messages/s of `tracker run` and of bare SQL for `messages` messages of one kind."""
    bulk = kind == "bulk"
    rows = messages // BULK if bulk else messages
    insert = insert_bulk_rows if bulk else insert_ref_rows
    out = {}
    # The limit first, on its own fresh database: rows inserted, then written by bare SQL.
    async with fresh_database(server_dsn) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            if orphans:
                await insert_orphans(conn, orphans)
            await insert(conn, 1, rows)
            lo, hi = await conn.fetchrow("SELECT min(id), max(id) FROM tracker.submissions")
            began = time.monotonic()
            await bare(conn, lo, hi, batch, bulk)
            out["bare"] = messages / (time.monotonic() - began)
        finally:
            await conn.close()
    # The tracker: running, idle; the rows arrive in one transaction; timed from its commit (the
    # moment they exist for intake, as the bare SQL's clock starts with its rows in place) until
    # all are taken in.
    async with fresh_database(server_dsn) as dsn, tracker_on(dsn) as (conn, config, daemon):
        if orphans:
            await insert_orphans(conn, orphans)
        with config.open("a") as f:
            f.write(f"[intake]\nbatch_size = {batch}\n")
        daemon.start()
        async with conn.transaction():
            await insert(conn, 1, rows)
        took = await until_taken_in(conn, time.monotonic())
        out["tracker"] = messages / took
        tracked = await conn.fetchval("SELECT count(*) FROM tracker.messages")
        refused = await conn.fetchval("SELECT count(*) FROM tracker.submissions WHERE error IS NOT NULL")
        if tracked != messages or refused:
            raise RuntimeError(f"{kind}: {tracked} messages tracked of {messages}, {refused} rows refused")
    return out


async def big_rows(server_dsn: str, recipients: int) -> list[dict]:
    """Sparrow compose rows of `recipients` valid and of `recipients` invalid numbers, taken in
    by the daemon while /healthz is asked every 10 ms."""
    results = []
    async with fresh_database(server_dsn) as dsn, tracker_on(dsn) as (conn, _config, daemon):
        daemon.start()
        ready = next(orjson.loads(line) for line in daemon.log.read_bytes().splitlines()
                     if b"tracker ready" in line)
        url = f"http://{ready.get('ops_listen') or ready['listen']}/healthz"
        numbers = [f"9779{i:08d}" for i in range(recipients)]
        for label, invalid in (("valid", []), ("invalid", numbers)):
            request = {"session": {"recipients": numbers}, "data": {"text": "hi"}}
            response = {"data": {"batch_id": str(uuid.uuid4()), "invalid_recipients": invalid},
                        "result": "00", "status": "OK"}
            worst = 0.0
            async with aiohttp.ClientSession() as http:
                began = time.monotonic()
                await conn.execute("INSERT INTO tracker.submissions (vendor, request, response)"
                                   " VALUES ('sparrow', $1::jsonb, $2::jsonb)",
                                   orjson.dumps(request).decode(), orjson.dumps(response).decode())
                while await conn.fetchval("SELECT EXISTS (SELECT 1 FROM tracker.submissions WHERE processed_at IS NULL)"):
                    t = time.monotonic()
                    async with http.get(url) as r:
                        assert r.status == 200
                    worst = max(worst, time.monotonic() - t)
                    await asyncio.sleep(0.01)
                took = time.monotonic() - began
            error = await conn.fetchval("SELECT error FROM tracker.submissions ORDER BY id DESC LIMIT 1")
            if error:
                raise RuntimeError(f"the {label} row was refused: {error}")
            results.append({"label": label, "took": took, "worst_healthz_ms": worst * 1000,
                            "peak_mib": daemon.peak_kib() / 1024})
    return results


async def run(args, server_dsn: str) -> int:
    ok = True
    print(f"intake: {args.messages:,} messages per run, batches of {args.batch} rows, 2 cores shared by "
          "the load, the daemon and PostgreSQL")
    ref = await measure(server_dsn, "ref", args.messages, args.batch)
    bulk = await measure(server_dsn, "bulk", args.messages, args.batch)
    orph = await measure(server_dsn, "ref", args.messages, args.batch, orphans=args.orphans)
    for name, r, target in (("vendor_ref rows", ref, 20000), (f"engageSPARK bulk rows ({BULK} each)", bulk, None)):
        ratio = r["tracker"] / r["bare"]
        ok &= ratio >= 0.5 and (target is None or r["tracker"] >= target)
        print(f"  {name:34} tracker {r['tracker']:>8,.0f} msg/s   bare SQL {r['bare']:>8,.0f} msg/s"
              f"   ratio {ratio:.2f} (target >= 0.50{f', and >= {target:,} msg/s' if target else ''})")
    with_orphans = orph["tracker"] / ref["tracker"]
    ok &= with_orphans >= 0.9
    print(f"  {'vendor_ref rows, ' + format(args.orphans, ',') + ' orphans':34} tracker {orph['tracker']:>8,.0f} msg/s"
          f"   bare SQL {orph['bare']:>8,.0f} msg/s   {with_orphans:.2f}x the rate without (target >= 0.90)")
    for r in await big_rows(server_dsn, args.recipients):
        ok &= r["worst_healthz_ms"] < 100 and r["peak_mib"] < 300
        print(f"  Sparrow row, {args.recipients:,} {r['label']:7} recipients: taken in {r['took']:.1f} s, "
              f"worst /healthz {r['worst_healthz_ms']:.0f} ms (target < 100), daemon peak RSS "
              f"{r['peak_mib']:.0f} MiB (target < 300)")
    print("all targets met" if ok else "NOT all targets met")
    return 0 if ok else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--orphans", type=int, default=100_000)
    p.add_argument("--recipients", type=int, default=100_000)
    p.add_argument("--dsn", help="a server where the bench may create databases (default: a private cluster)")
    args = p.parse_args()
    with database(args.dsn) as (dsn, _pid):
        return asyncio.run(run(args, dsn))


if __name__ == "__main__":
    sys.exit(main())
