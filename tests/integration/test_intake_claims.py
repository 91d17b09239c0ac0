"""What a claim fetches: sizes are those of the JSON text the daemon would receive, never the
stored (compressed) bytes; and a careful claim refuses exactly the row PostgreSQL cannot hand
over (tracker.intake.claims)."""
from __future__ import annotations

import asyncpg

import tracker.intake.claims as claims
from tracker.config_types import Config
from tracker.db import queries as q
from tracker.intake import take_in

# A valid Sparrow compose row padded with `$1` repeated letters: compressed to about 1% when stored.
PADDED = """INSERT INTO tracker.submissions (vendor, request, response) VALUES ('sparrow',
    jsonb_build_object('session', jsonb_build_object('recipients', jsonb_build_array($2::text))),
    jsonb_build_object('result', '00', 'status', 'OK',
                       'data', jsonb_build_object('batch_id', $3::text, 'pad', repeat('a', $1))))
RETURNING id"""


async def outcome(conn, sid: int):
    return await conn.fetchrow("SELECT processed_at, error, message_count FROM tracker.submissions"
                               " WHERE id = $1", sid)


async def test_a_compressible_response_over_the_row_limit_is_refused_without_being_fetched(pool, monkeypatch):
    # 30 MB of text stored in about 0.4 MB: under a 1 MiB limit as stored, far over it as text.
    monkeypatch.setattr(claims, "ROW_BYTES", 1 << 20)
    fetched: list[int] = []
    async with pool.acquire() as conn:
        big = await conn.fetchval(PADDED, 30_000_000, "9779800000001", "b-big")
        small = await conn.fetchval(PADDED, 100, "9779800000002", "b-small")
        assert await conn.fetchval("SELECT pg_column_size(response) FROM tracker.submissions"
                                   " WHERE id = $1", big) < 1 << 20

        class Watched:  # the real connection; notes how much text each claim handed over
            def __getattr__(self, name):
                return getattr(conn, name)

            async def fetch(self, query, *args):
                rows = await conn.fetch(query, *args)
                if query in (q.CLAIM_SUBMISSIONS, q.CLAIM_SUBMISSION_BY_ID):
                    fetched.extend(len(r["response"] or "") + len(r["request"] or "") for r in rows)
                return rows

        r = await take_in(Watched(), Config())
        assert (r.rows, r.refused, r.messages) == (2, 1, 1)
        row = await outcome(conn, big)
        assert row["processed_at"] is not None and row["message_count"] == 0
        text_bytes = await conn.fetchval("SELECT octet_length(response::text) FROM tracker.submissions"
                                         " WHERE id = $1", big)
        assert row["error"] == f"response is {text_bytes} bytes as JSON text; at most {1 << 20} are taken"
        assert max(fetched) < 1000  # the 30 MB never crossed the wire
        assert (await outcome(conn, small))["error"] is None
        assert await conn.fetchval("SELECT count(*) FROM tracker.messages") == 1


async def test_the_batch_budget_counts_json_text_not_stored_bytes(pool, monkeypatch):
    monkeypatch.setattr(claims, "BATCH_BYTES", 4 << 20)
    async with pool.acquire() as conn:
        ids = [await conn.fetchval(PADDED, 3_000_000, f"97798000000{i:02d}", f"b-{i}") for i in range(3)]
        first = await take_in(conn, Config())
        assert first.rows == 2  # 3 MB + 3 MB of text: the third is past the 4 MiB budget
        assert (await take_in(conn, Config())).rows == 1
        for sid in ids:
            assert (await outcome(conn, sid))["message_count"] == 1


class CommitsBeforeTheBareClaim:
    """The real connection as take_in uses it; just before the first one-row claim of a careful
    batch, another sender's transaction (holding a row with a lower id) commits."""

    def __init__(self, conn, commit) -> None:
        self._conn, self._commit = conn, commit

    def __getattr__(self, name):
        return getattr(self._conn, name)

    async def fetchval(self, query, *args):
        if query == q.CLAIM_SUBMISSION_BARE and self._commit is not None:
            commit, self._commit = self._commit, None
            await commit()
        return await self._conn.fetchval(query, *args)


async def test_a_careful_claim_refuses_the_row_at_fault_not_one_that_committed_meanwhile(pool, db_dsn):
    # 180 million control characters: stored in about 2 MB, but past PostgreSQL's 1 GB as JSON
    # text ('\u0001' each), so no claim can measure or fetch it (54000). A row with a lower id
    # commits between the failed claim and the row-at-a-time claims: it is taken, not refused.
    sender = await asyncpg.connect(db_dsn)
    try:
        async with pool.acquire() as conn:
            a = await conn.fetchval("INSERT INTO tracker.submissions (vendor, vendor_ref)"
                                    " VALUES ('skycore', 'A') RETURNING id")
            tx = sender.transaction()
            await tx.start()
            late = await sender.fetchval("INSERT INTO tracker.submissions (vendor, vendor_ref)"
                                         " VALUES ('skycore', 'LATE') RETURNING id")
            huge = await conn.fetchval("INSERT INTO tracker.submissions (vendor, response) VALUES"
                                       " ('sparrow', jsonb_build_object('x', repeat(chr(1), 180000000)))"
                                       " RETURNING id")
            b = await conn.fetchval("INSERT INTO tracker.submissions (vendor, vendor_ref)"
                                    " VALUES ('skycore', 'B') RETURNING id")
            assert a < late < huge < b
            r = await take_in(CommitsBeforeTheBareClaim(conn, tx.commit), Config())
            assert (r.rows, r.refused) == (3, 1)  # A, LATE, and the row at fault
            assert (await take_in(conn, Config())).rows == 1  # B
            errors = dict(await conn.fetch("SELECT id, error FROM tracker.submissions"))
            assert errors[huge].startswith("cannot be handed over: refused by PostgreSQL (54000)")
            assert [errors[i] for i in (a, late, b)] == [None, None, None]
            assert sorted(await conn.fetch("SELECT vendor_ref FROM tracker.messages")) == [
                ("A",), ("B",), ("LATE",)]
    finally:
        await sender.close()
