"""Claim time does not grow with the number of messages due, and what the rollup's statement
triggers on tracker.messages (sql/009) cost each poll. Loopback only; stops by itself.

    .venv/bin/python bench/claims.py [--small 10000] [--large 1000000] [--claims 40] [--dsn DSN]

1. For `--small` and for `--large` messages due (one vendor, due times spread over the last
   hour, a fresh database each), the poller's own claim statement (queries.CLAIM_DUE, a batch of
   200) is timed `--claims` times, each claim then handed back as the poller's write-back does
   (the messages locked, then WRITE_MESSAGES with their next poll, one statement each): the
   median claim time at each size and their ratio (target <= 1.5).
2. At the small size, the same claim + write-back (no state change: the common poll) with the
   trigger `messages_count_updates` enabled and disabled, alternating: the trigger's cost per
   poll, in PostgreSQL's execution time.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _polling import database  # noqa: E402

import asyncpg  # noqa: E402

from tracker import loop  # noqa: E402
from tracker.db import queries as q  # noqa: E402
from tracker.db.reducer import write_messages  # noqa: E402
from tracker.db.rows import message_write  # noqa: E402
from intake import fresh_database  # noqa: E402

BATCH = 200
FILL = """
INSERT INTO tracker.messages (vendor, vendor_ref, recipient, state, submitted_at, window_ends_at,
                              next_poll_at, country)
SELECT 'sparksender', 'c' || i, '6391' || lpad(i::text, 8, '0'), 'accepted',
       now() - interval '2 hours', now() + interval '2 days',
       now() - interval '1 hour' + (i % 3600) * interval '1 second', 'PH'
FROM generate_series($1::int, $2::int) i
"""


async def fill(dsn: str, n: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for a in range(1, n + 1, 250_000):
            await conn.execute(FILL, a, min(n, a + 249_999))
        await conn.execute("VACUUM ANALYZE tracker.messages")
    finally:
        await conn.close()


async def claim_and_release(conn: asyncpg.Connection, owner: str) -> tuple[float, float]:
    """One claim of BATCH, then its release as the poller writes back (no state change).
    Returns (claim seconds, write-back seconds)."""
    began = time.perf_counter()
    rows = await conn.fetch(q.CLAIM_DUE, "sparksender", BATCH, owner, 60.0)
    claimed = time.perf_counter()
    later = datetime.now(timezone.utc) + timedelta(days=1)
    async with conn.transaction():
        held = await conn.fetch(q.HOLD_CLAIMED, [r["id"] for r in rows], owner, rows[0]["lease_until"])
        await write_messages(conn, [message_write(r["id"], reported_at=later - timedelta(days=1),
                                                  next_poll_at=later, polls=1) for r in held])
    return claimed - began, time.perf_counter() - claimed


async def claim_times(dsn: str, claims: int) -> list[float]:
    conn = await asyncpg.connect(dsn)
    try:
        owner = f"bench-{uuid.uuid4().hex[:8]}"
        await claim_and_release(conn, owner)  # warm: plans, caches
        return [(await claim_and_release(conn, owner))[0] for _ in range(claims)]
    finally:
        await conn.close()


async def trigger_cost(dsn: str, claims: int) -> dict:
    """Claim + write-back per poll, trigger on and off, alternating, on one database."""
    conn = await asyncpg.connect(dsn)
    on, off = [], []
    try:  # everything due again, settled
        await conn.execute("UPDATE tracker.messages SET next_poll_at = now() - interval '1 hour'"
                           " + (id % 3600) * interval '1 second', poll_count = 0")
        await conn.execute("VACUUM ANALYZE tracker.messages")
        owner = f"bench-{uuid.uuid4().hex[:8]}"
        await claim_and_release(conn, owner)
        for k in range(claims):
            enabled = k % 2 == 0
            await conn.execute("ALTER TABLE tracker.messages "
                               + ("ENABLE" if enabled else "DISABLE") + " TRIGGER messages_count_updates")
            c, w = await claim_and_release(conn, owner)
            (on if enabled else off).append(c + w)
    finally:
        await conn.execute("ALTER TABLE tracker.messages ENABLE TRIGGER messages_count_updates")
        await conn.close()
    m_on, m_off = statistics.median(on), statistics.median(off)
    return {"on_us": m_on / BATCH * 1e6, "off_us": m_off / BATCH * 1e6,
            "trigger_us": (m_on - m_off) / BATCH * 1e6}


async def measure(server_dsn: str, small: int = 10_000, large: int = 1_000_000, claims: int = 40) -> dict:
    out: dict = {"small": small, "large": large, "claims": claims}
    for key, n in (("small_ms", small), ("large_ms", large)):
        async with fresh_database(server_dsn) as dsn:
            began = time.monotonic()
            await fill(dsn, n)
            out[key + "_fill_s"] = time.monotonic() - began
            times = await claim_times(dsn, claims)
            out[key] = statistics.median(times) * 1000
            out[key + "_p90"] = sorted(times)[int(0.9 * len(times))] * 1000
            if key == "small_ms":
                out["trigger"] = await trigger_cost(dsn, claims)
    out["ratio"] = out["large_ms"] / out["small_ms"]
    return out


def report(r: dict) -> str:
    t = r["trigger"]
    return "\n".join([
        f"claims: the poller's CLAIM_DUE, batches of {BATCH}, {r['claims']} claims each handed back"
        " as the write-back does",
        f"  {r['small']:>9,} due: median {r['small_ms']:.2f} ms (p90 {r['small_ms_p90']:.2f})",
        f"  {r['large']:>9,} due: median {r['large_ms']:.2f} ms (p90 {r['large_ms_p90']:.2f});"
        f" ratio {r['ratio']:.2f} (target <= 1.5)",
        f"  rollup trigger on messages (claim + write-back, no state change): {t['on_us']:.1f} us per"
        f" poll with it, {t['off_us']:.1f} without: {t['trigger_us']:.1f} us per poll",
    ])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", type=int, default=10_000)
    p.add_argument("--large", type=int, default=1_000_000)
    p.add_argument("--claims", type=int, default=40)
    p.add_argument("--dsn", help="a server where the bench may create databases (default: a private cluster)")
    args = p.parse_args()
    if min(args.small, args.large) < (args.claims + 1) * BATCH:  # each claim takes its own BATCH
        p.error(f"--small and --large must be at least (--claims + 1) x {BATCH}")
    with database(args.dsn) as (dsn, _pid):
        r = loop.run(measure(dsn, args.small, args.large, args.claims))
    print(report(r))
    return 0 if r["ratio"] <= 1.5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
