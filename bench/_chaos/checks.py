"""What a scenario is judged by, read from the database after it settled, the sandbox's ground
truth and its logs. The SQL here is the bench's own reading of the contract's tables."""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any, Iterable

import asyncpg

from tracker import adapters

STORED_POSTBACKS = """
SELECT encode(sha256(p.body), 'hex') AS digest, p.id, p.processed_at IS NOT NULL AS processed,
       p.error, (SELECT count(*) FROM tracker.observations o WHERE o.postback_id = p.id) AS reports
FROM tracker.postbacks p ORDER BY p.id
"""
DUPLICATE_TRANSITIONS = """
SELECT coalesce(sum(n - 1), 0) FROM (
    SELECT count(*) AS n FROM tracker.transitions GROUP BY message_id, to_state HAVING count(*) > 1
) d
"""
STATES = "SELECT vendor, vendor_ref, recipient_key, recipient, state::text FROM tracker.messages"
OPEN_WORK = """
SELECT (SELECT count(*) FROM tracker.messages WHERE state < 'unknown') AS open_messages,
       (SELECT count(*) FROM tracker.submissions WHERE processed_at IS NULL) AS rows_waiting,
       (SELECT count(*) FROM tracker.postbacks WHERE processed_at IS NULL) AS postbacks_waiting
"""
# Caught up: how far behind the oldest due poll, submission row and stored postback are.
LAG = """
SELECT extract(epoch FROM now() - (SELECT min(next_poll_at) FROM tracker.messages
                                   WHERE state < 'unknown' AND next_poll_at IS NOT NULL))::float8,
       extract(epoch FROM now() - (SELECT min(created_at) FROM tracker.submissions
                                   WHERE processed_at IS NULL))::float8,
       extract(epoch FROM now() - (SELECT min(received_at) FROM tracker.postbacks
                                   WHERE processed_at IS NULL))::float8
"""
# A moment to kill at: the daemon holds poll claims, and postbacks it answered 200 are stored
# but not applied yet.
MID_WORK = """
SELECT EXISTS (SELECT 1 FROM tracker.messages WHERE lease_owner IS NOT NULL
               AND lease_until > now() AND state < 'unknown')
   AND EXISTS (SELECT 1 FROM tracker.postbacks WHERE processed_at IS NULL)
"""
# Poll-made observations and transitions of some vendors in a span of wall time.
POLL_CHANGES = """
SELECT (SELECT count(*) FROM tracker.observations WHERE source = 'poll' AND vendor = ANY($1)
          AND received_at BETWEEN $2 AND $3),
       (SELECT count(*) FROM tracker.transitions t JOIN tracker.messages m ON m.id = t.message_id
          WHERE t.source = 'poll' AND m.vendor = ANY($1) AND t.recorded_at BETWEEN $2 AND $3)
"""
POLL_PATHS = {"sparksender": ("/getStatus",), "engagespark": ("/v1/organizations/",),
              "sparrow": ("/compose/report/",), "twilio": ("/Messages/",)}


def norm_key(vendor: str, ref: str, recipient: str | None) -> tuple[str, str, str]:
    return (vendor, adapters.get(vendor).normalize_ref(ref), recipient or "")


@dataclass
class Lost:
    answered_200: int = 0
    not_stored: int = 0
    not_applied: int = 0  # stored, but unprocessed, set aside, or without its reports

    @property
    def lost(self) -> int:
        return self.not_stored + self.not_applied


async def lost_postbacks(conn: asyncpg.Connection, log: Iterable[dict[str, Any]]) -> Lost:
    """Every postback attempt the tracker answered 200 is a stored row (matched by the digest
    of its bytes; a duplicate matches a row of its own), processed without error, with its
    reports in tracker.observations."""
    rows: dict[str, collections.deque] = collections.defaultdict(collections.deque)
    for r in await conn.fetch(STORED_POSTBACKS):
        rows[r["digest"]].append(r)
    out = Lost()
    for entry in log:
        if entry.get("status") != 200:
            continue
        out.answered_200 += 1
        stored = rows.get(entry["digest"])
        if not stored:
            out.not_stored += 1
            continue
        row = stored.popleft()
        expected = 0 if entry["kind"] == "batch_complete" else 1
        if not row["processed"] or row["error"] is not None or row["reports"] < expected:
            out.not_applied += 1
    return out


@dataclass
class Outage:
    """A deliberate fault on the tracker's side of the postbacks, in monotonic seconds (the
    clock the sandbox logs attempts by): every daemon's (`port` None: the database) or one
    daemon's; `end` None lasts to the end of the run."""
    begin: float
    end: float | None = None
    port: int | None = None

    def covers(self, entry: dict[str, Any]) -> bool:
        """The attempt, from its start to its answer, overlaps the outage at its receiver."""
        if self.port is not None and int(entry["to"].rsplit(":", 1)[1]) != self.port:
            return False
        return entry["t_end"] >= self.begin and (self.end is None or entry["t"] <= self.end)


@dataclass
class Refused:
    by_answer: collections.Counter = field(default_factory=collections.Counter)
    in_outage: int = 0  # not answered 200 inside a deliberate outage: allowed

    @property
    def refused(self) -> int:
        return sum(self.by_answer.values())


def refused_postbacks(log: Iterable[dict[str, Any]], outages: Iterable[Outage]) -> Refused:
    """Well-formed postback attempts the tracker did not answer 200 (a refusal, an error, no
    answer at all), by answer. Garbled bodies (a 400 is their due) and attempts the sandbox never
    made (no URL) are left out; attempts overlapping an outage of their receiver are counted
    apart: a 503 (the database is down) or no answer (the daemon is down) is the contract there."""
    outages = list(outages)
    out = Refused()
    for e in log:
        if e.get("digest") is None or e.get("malformed") or e.get("status") == 200:
            continue
        # in an outage, only 503 or no answer: a 4xx there tells the vendor never to retry
        if e.get("status") in (None, 503) and any(o.covers(e) for o in outages):
            out.in_outage += 1
        else:
            out.by_answer[str(e["status"] or e["error"])] += 1
    return out


@dataclass
class Finals:
    messages: int = 0  # submitted by the application
    wrong: int = 0  # in the database, in another state than the truth's final
    missing: int = 0  # submitted, never made a message
    extra: int = 0  # a message the truth does not know
    examples: list[str] = field(default_factory=list)
    by_kind: collections.Counter = field(default_factory=collections.Counter)

    @property
    def bad(self) -> int:
        return self.wrong + self.missing + self.extra


def digits(text: str | None) -> str:
    return "".join(ch for ch in text or "" if ch.isdigit())


async def final_states(conn: asyncpg.Connection, truth: list[dict[str, Any]],
                       submitted: set[tuple[str, str, str | None]],
                       refused: set[tuple[str, str]] = frozenset()) -> Finals:
    """Each submitted key's message in the truth's final state; and each number refused without
    an id (`refused`: (vendor, digits)) one message of that vendor and recipient (the tracker
    keys it as it likes), in the truth's state for it (rejected)."""
    rows = await conn.fetch(STATES)
    have = {(r["vendor"], r["vendor_ref"], r["recipient_key"]): r["state"] for r in rows}
    known = {norm_key(t["vendor"], t["vendor_ref"], t["recipient"]): t for t in truth
             if t["vendor_ref"] is not None}
    no_id = {(t["vendor"], t["recipient"]): t for t in truth if t["vendor_ref"] is None}
    by_number: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
    for r in rows:
        if (r["vendor"], r["vendor_ref"], r["recipient_key"]) not in known:
            by_number[(r["vendor"], digits(r["recipient"]))].append(r["state"])
    out = Finals(messages=len(submitted) + len(refused))

    def judge(vendor: str, what: str, t: dict | None, states: list[str]) -> None:
        if not states:
            out.missing += 1
            out.by_kind[f"{vendor} missing"] += 1
            if len(out.examples) < 6:
                out.examples.append(f"{vendor} {what}: truth {t and t['final']}, no message")
        elif t is None or any(s != t["final"] for s in states):
            out.wrong += 1
            fate = t and t["fate"]
            out.by_kind[f"{vendor} {fate}->{'/'.join(states)}"] += 1
            if len(out.examples) < 6:
                out.examples.append(f"{vendor} {what}: truth {t and t['final']} "
                                    f"(fate {fate}), tracker {'/'.join(states)}")

    for vendor, ref, rcpt in submitted:
        key = norm_key(vendor, ref, rcpt)
        judge(vendor, f"{ref} {rcpt or ''}", known.get(key), [have[key]] if key in have else [])
    for vendor, number in refused:
        judge(vendor, f"refused at send {number}", no_id.get((vendor, number)),
              by_number.get((vendor, number), []))
    # a message the truth does not know, or a second one for a number refused once
    out.extra = sum(len(v) - (k in no_id) for k, v in by_number.items())
    return out


async def duplicate_transitions(conn: asyncpg.Connection) -> int:
    return await conn.fetchval(DUPLICATE_TRANSITIONS)


def poll_rates(requests: list[dict[str, Any]], limits: dict[str, float], window_s: float = 2.0
               ) -> dict[str, tuple[float, float]]:
    """Per polled vendor: (peak requests per second the sandbox saw from the tracker over any
    `window_s` window, configured rate_limit_per_s)."""
    out = {}
    for vendor, marks in POLL_PATHS.items():
        ts = sorted(r["t"] for r in requests
                    if r["vendor"] == vendor and any(m in r["path"] for m in marks))
        peak, lo = 0, 0
        for hi, t in enumerate(ts):
            while ts[lo] < t - window_s:
                lo += 1
            peak = max(peak, hi - lo + 1)
        out[vendor] = (peak / window_s, limits[vendor])
    return out


def poll_answers(requests: list[dict[str, Any]]) -> dict[str, int]:
    """How the sandbox answered the tracker's polls: by status, and how it garbled them
    ("no answer": the tracker gave up first)."""
    out: collections.Counter = collections.Counter()
    for r in requests:
        marks = POLL_PATHS.get(r["vendor"], ())
        if any(m in r["path"] for m in marks):
            status = "no answer" if r["status"] == 0 else str(r["status"])
            out[f"{status} {r['garbled']}" if r.get("garbled") else status] += 1
    return dict(sorted(out.items()))


def inside_retry_after(requests: list[dict[str, Any]], grace_s: float = 0.1) -> int:
    """Tracker requests the sandbox received while a Retry-After it had answered was running,
    after a grace for requests already on their way (on loopback they arrive within a few ms
    of the 429; the grace leaves room for a busy machine's scheduling)."""
    out = 0
    for vendor, marks in POLL_PATHS.items():
        mine = sorted((r for r in requests if r["vendor"] == vendor
                       and any(m in r["path"] for m in marks)), key=lambda r: r["t"])
        until = 0.0
        start = 0.0
        for r in mine:
            if start + grace_s < r["t"] < until:
                out += 1
            if r["status"] == 429 and r.get("retry_after"):
                start, until = r["t"], max(until, r["t"] + float(r["retry_after"]))
    return out
