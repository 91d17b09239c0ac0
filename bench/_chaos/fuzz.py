"""The fuzz scenario: hostile input at scale against a running daemon. Seeded messages wait in
state `submitted` (no vendor is polled, windows are a day long); then `fuzz_postbacks` generated
postbacks (bench/_chaos/fuzz_gen.py) go to the postback route, 32 at a time, while
`fuzz_rows` generated submission rows are written, and /readyz is asked twice a second.

Allowed: only 4xx for the postbacks; every row refused with its reason; no change anywhere
(messages, their states, observations, transitions, stored postbacks); /readyz 200 throughout."""
from __future__ import annotations

import asyncio
import collections
import random
import re
import time
import uuid

import aiohttp
import orjson

from _chaos import fuzz_gen, fuzz_rows
from _chaos.env import TOKENS
from _chaos.run import Run
from _chaos.spec import Scenario

MAX_BODY = 65536  # http.max_body_bytes (the default)
MAX_MESSAGES = 50  # intake.max_messages_per_row here, so that the limit is met cheaply
SEED = 150  # messages per vendor
SNAPSHOT = """
SELECT (SELECT count(*) FROM tracker.messages) AS messages,
       (SELECT count(*) FROM tracker.messages WHERE state <> 'submitted') AS moved,
       (SELECT count(*) FROM tracker.observations) AS observations,
       (SELECT count(*) FROM tracker.transitions) AS transitions,
       (SELECT count(*) FROM tracker.postbacks) AS postbacks
"""
INSERT = ("INSERT INTO tracker.submissions (vendor, vendor_ref, recipient, client_ref,"
          " submitted_at, response, request) VALUES ($1, $2, $3, $4,"
          " coalesce($5::text::timestamptz, now()), $6::jsonb, $7::jsonb)")


async def seed(run: Run) -> fuzz_gen.Refs:
    rng = random.Random(run.seed)
    refs = fuzz_gen.Refs(
        [f"fz{rng.getrandbits(40):010x}" for _ in range(SEED)],
        [f"SMS20261201T10{i // 60:02d}{i % 60:02d}-1234-{i:04d}" for i in range(SEED)],
        [(str(uuid.UUID(int=rng.getrandbits(128), version=4)), f"97798{i:08d}")
         for i in range(SEED)],
        [f"SM{rng.getrandbits(128):032x}" for _ in range(SEED)])
    rows = ([("skycore", r, "14155550100") for r in refs.skycore]
            + [("engagespark", r, "639171234567") for r in refs.engagespark]
            + [("sparrow", b, to) for b, to in refs.sparrow]
            + [("twilio", sid, "14155550123") for sid in refs.twilio]
            + [("sparksender", str(700000 + i), "639170000000") for i in range(SEED)])
    await run.pool.executemany("INSERT INTO tracker.submissions (vendor, vendor_ref, recipient)"
                               " VALUES ($1, $2, $3)", rows)
    await wait_taken(run, 60)
    return refs


async def wait_taken(run: Run, timeout: float) -> int:
    """Rows still waiting after `timeout` (0: all taken in or refused)."""
    deadline = time.monotonic() + timeout
    while (left := await run.pool.fetchval(
            "SELECT count(*) FROM tracker.submissions WHERE processed_at IS NULL")):
        if time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.25)
    return 0


async def fuzz_body(run: Run) -> None:
    size, other, r = run.size, run.other, run.result
    refs = await seed(run)
    before = dict(await run.pool.fetchrow(SNAPSHOT))
    first_row = await run.pool.fetchval("SELECT coalesce(max(id), 0) + 1 FROM tracker.submissions")
    d = run.daemons[0]
    signer = fuzz_gen.Signer(d.base, run.sandbox.vendor("twilio")["auth_token"])
    statuses: collections.Counter = collections.Counter()
    odd: collections.Counter = collections.Counter()  # kind -> answers that were not 4xx
    unready = collections.Counter()
    done = asyncio.Event()
    rng = random.Random(run.seed + 1)
    dropped = 0

    def next_postback() -> fuzz_gen.Postback:
        nonlocal dropped
        while True:
            p = fuzz_gen.postback(rng, refs, TOKENS, MAX_BODY, signer)
            if not fuzz_gen.parses(p):
                return p
            dropped += 1

    async def sender(http: aiohttp.ClientSession, n: int) -> None:
        for _ in range(n):
            p = next_postback()
            url = f"{d.base}/postbacks/{p.vendor}/{p.token}" + (f"?{p.query}" if p.query else "")
            headers = dict(p.headers)
            if p.content_type:
                headers["Content-Type"] = p.content_type
            try:
                async with http.request(p.method, url, data=p.body, headers=headers,
                                        skip_auto_headers=["Content-Type"]) as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, OSError, TimeoutError):
                status = 0
            statuses[status] += 1
            if not 400 <= status < 500:
                odd[f"{p.kind} -> {status or 'no answer'}"] += 1

    async def readiness(http: aiohttp.ClientSession) -> None:
        while not done.is_set():
            try:
                async with http.get(d.base + "/readyz") as resp:
                    body = await resp.read()
                    if resp.status != 200:
                        unready[body[:200].decode(errors="replace")] += 1
            except (aiohttp.ClientError, OSError, TimeoutError):
                unready["no answer"] += 1
            await asyncio.sleep(0.5)

    async def rows() -> int:
        rrng, written = random.Random(run.seed + 2), 0
        while written < size.fuzz_rows:
            batch = []
            while len(batch) < min(500, size.fuzz_rows - written):
                row = fuzz_rows.row(rrng, MAX_MESSAGES)
                if fuzz_rows.refused(row, MAX_MESSAGES):
                    batch.append(row)
            dump = lambda v: None if v is None else orjson.dumps(v).decode()  # noqa: E731
            await run.pool.executemany(INSERT, [
                (b["vendor"], b["vendor_ref"], b["recipient"], b["client_ref"], b["submitted_at"],
                 dump(b["response"]), dump(b["request"])) for b in batch])
            written += len(batch)
            await asyncio.sleep(0.05)
        return written

    began = time.monotonic()
    conn = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=30)) as http:
        watching = asyncio.create_task(readiness(http))
        per, extra = divmod(size.fuzz_postbacks, 32)
        written, _ = await asyncio.gather(
            rows(), asyncio.gather(*(sender(http, per + (i < extra)) for i in range(32))))
        waiting = await wait_taken(run, 120)
        done.set()
        await watching
    took = time.monotonic() - began
    after = dict(await run.pool.fetchrow(SNAPSHOT))
    taken = await run.pool.fetchval("SELECT count(*) FROM tracker.submissions WHERE id >= $1"
                                    " AND processed_at IS NOT NULL AND error IS NULL", first_row)
    reasons = collections.Counter(reason(e[0]) for e in await run.pool.fetch(
        "SELECT error FROM tracker.submissions WHERE id >= $1 AND error IS NOT NULL", first_row))

    r.messages = before["messages"]
    r.postbacks_200 = statuses[200]
    r.wrong = after["moved"]
    other["postbacks not answered 4xx"] = sum(n for s, n in statuses.items() if not 400 <= s < 500)
    other["rows taken in"] = taken
    other["rows left waiting"] = waiting
    other["/readyz not 200"] = sum(unready.values())
    other["stored or changed"] = sum(abs(after[k] - before[k]) for k in before if k != "moved")
    r.details.append(
        f"{sum(statuses.values())} postbacks in {took:.0f} s, answers "
        f"{dict(sorted(statuses.items()))} ({dropped} generated ones the parser reads were "
        f"dropped); {written} rows, refused: " + "; ".join(
            f"{text} ({n})" for text, n in reasons.most_common(12)))
    if odd:
        r.details.append(f"not 4xx: {dict(odd.most_common(8))}")
    if unready:
        r.details.append(f"/readyz: {dict(unready.most_common(3))}")
    if any(before[k] != after[k] for k in before):
        r.details.append(f"before {before}, after {after}")


def reason(error: str) -> str:
    """A refusal's reason without its particulars (quoted values, numbers, details)."""
    text = re.sub(r"'[^']*'", "'…'", error)
    return re.sub(r"\d+", "N", re.split(r"[:;(]", text, maxsplit=1)[0]).strip()[:70]


def fuzz_vendors(run: Run) -> dict:
    """No vendor is polled (no base_url) and no window ends during the run."""
    out = run.vendor_settings_default()
    for v in out.values():
        v.update(base_url="", tracking_window_s=86400.0, first_poll_s=30.0,
                 max_poll_interval_s=3600.0, deadline_margin_s=3600.0)
    return out


FUZZ = Scenario("fuzz", "fuzz", body=fuzz_body, vendors=fuzz_vendors,
                config={"intake": {"max_messages_per_row": MAX_MESSAGES}})
