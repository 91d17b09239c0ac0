"""Postback ingestion over real HTTP on loopback, against a real PostgreSQL: every answer, the
group commit, the apply worker, failure paths, polls pushed out, replay."""
from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import io
import sys
import types
from datetime import datetime, timedelta, timezone

import orjson
from multidict import CIMultiDict

from tests.conftest import until_waiting_on_a_lock
from tests.faults_support import refusing
from tests.postbacks_support import (TOKENS, config_for, metric_value, postback_url, running, session,
                                     settle)
from tests.sinks_support import wait_until
from tracker import logging as tlog
from tracker import replay
from tracker.adapters import skycore
from tracker.core.states import State
from tracker.db import queries as q
from tracker.db.embedded import EmbeddedPostgres, running_dsn
from tracker.postbacks import CONNECTIONS, process

JSON = {"Content-Type": "application/json"}


def sky(ref: str, code: str = "N202", status: str = "Delivered", **extra) -> bytes:
    return orjson.dumps({"origin": "SMS_MT", "code": code, "status": status, "to": "10000000001",
                         "tracking-id": ref, "timestamp": "2024-05-01T12:00:00+00:00", **extra})


def postback_of(pb) -> dict:
    return next(c for c in pb.components if type(c).__name__ == "Postbacks")


async def post(s, url, body=b"", headers=JSON, method="POST"):
    async with s.request(method, url, data=body, headers=headers) as r:
        return r.status, await r.read()


async def store_raw(conn, vendors, bodies, times):
    """Raw rows as the group commit writes them, left unprocessed (as by a crash)."""
    n = len(vendors)
    await conn.execute(q.INSERT_POSTBACKS, await conn.fetchval(q.NEXT_POSTBACK_IDS, n), vendors,
                       ["POST"] * n, ["application/json"] * n, [""] * n, bodies, [None] * n, times)


async def make_message(conn, vendor, ref, state="submitted", next_poll_in_s=None):
    return await conn.fetchval(
        "INSERT INTO tracker.messages (vendor, vendor_ref, state, next_poll_at)"
        " VALUES ($1, $2, $3, now() + make_interval(secs => $4)) RETURNING id",
        vendor, ref, state, next_poll_in_s)


async def test_a_postback_is_stored_and_applied_before_its_200(db_dsn):
    async with running(config_for(db_dsn)) as (tr, base), session() as s:
        async with tr.pool.acquire() as c:
            mid = await make_message(c, "skycore", "ref-1")
        status, body = await post(s, postback_url(base, "skycore") + "?x=1", sky("ref-1"))
        assert (status, orjson.loads(body)) == (200, {"status": "ok"})
        # one transaction stored and applied it: no wait for a worker
        assert postback_of(tr).commit.inline == 1
        assert await tr.pool.fetchval("SELECT count(*) FROM tracker.transitions t"
                                      " WHERE t.message_id=$1 AND t.to_state='delivered'", mid) == 1
        row = await tr.pool.fetchrow("SELECT * FROM tracker.postbacks")
        assert (row["vendor"], row["method"], row["query"], row["content_type"]) == \
            ("skycore", "POST", "x=1", "application/json")
        assert bytes(row["body"]) == sky("ref-1") and str(row["source"]) == "127.0.0.1"
        assert row["processed_at"] is not None and row["error"] is None
        assert await tr.pool.fetchval("SELECT state FROM tracker.messages WHERE id=$1", mid) == "delivered"
        obs = await tr.pool.fetchrow("SELECT * FROM tracker.observations WHERE source='postback'")
        assert obs["postback_id"] == row["id"] and obs["received_at"] == row["received_at"]
        # the secret is nowhere in what was stored
        dump = str([dict(r) for r in await tr.pool.fetch("SELECT * FROM tracker.postbacks")])
        assert TOKENS["skycore"] not in dump


async def test_the_postback_path_opens_its_connections_at_start_and_keeps_them(db_dsn):
    """Before the first postback, and the same backends after a burst: a new backend's first
    batches are slow (docs/performance.md, session 14)."""
    async def backends(pool) -> set[int]:
        return {r["pid"] for r in await pool.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'tracker postbacks'"
            " AND datname = current_database()")}

    async with running(config_for(db_dsn)) as (tr, base), session() as s:
        at_start = await backends(tr.pool)
        assert len(at_start) == CONNECTIONS
        answers = await asyncio.gather(*(post(s, postback_url(base, "skycore"), sky(f"burst-{i}"))
                                         for i in range(40)))
        assert [status for status, _ in answers] == [200] * 40
        await settle(tr.pool)
        assert await backends(tr.pool) == at_start


async def test_the_postback_paths_statements_are_planned_before_the_first_postback(db_dsn):
    """Each connection of the postback path has prepared and planned the statements of a batch
    at start, on nothing (the first batches on new connections took 50-90 ms: docs/performance.md,
    session 15), and that wrote nothing."""
    hot = [q.INSERT_OBSERVATIONS, q.CLAIM_AND_INSERT_OBSERVATIONS, q.WRITE_MESSAGES]
    async with running(config_for(db_dsn)) as (tr, _):
        pool = postback_of(tr).pool
        conns = [await pool.acquire() for _ in range(CONNECTIONS)]
        try:
            planned = [dict(await c.fetch("SELECT statement, generic_plans FROM pg_prepared_statements"
                                          " WHERE statement = ANY($1::text[])", hot)) for c in conns]
        finally:
            for c in conns:
                await pool.release(c)
        written = await tr.pool.fetchval(
            "SELECT (SELECT count(*) FROM tracker.postbacks) + (SELECT count(*) FROM tracker.observations)"
            " + (SELECT count(*) FROM tracker.transitions) + (SELECT count(*) FROM tracker.route_deltas)")
    assert planned == [{s: 1 for s in hot}] * CONNECTIONS
    assert written == 0


async def test_every_answer(db_dsn):
    cfg = config_for(db_dsn, http={"max_body_bytes": 2048},
                     engagespark={"allow_networks": ("10.0.0.0/8",)})
    async with running(cfg) as (tr, base), session() as s:
        not_found = [
            postback_url(base, "nosuch"), postback_url(base, "sparksender"),  # never pushes
            postback_url(base, "skycore", "wrong"), postback_url(base, "skycore", TOKENS["sparrow"]),
            f"{base}/postbacks/skycore/", f"{base}/postbacks/skycore",
            postback_url(base, "skycore") + "/extra", f"{base}/postbacks/",
        ]
        answers = {await post(s, url, sky("r")) for url in not_found}
        assert answers == {(404, b'{"error":"not found"}')}  # no hint which
        url = postback_url(base, "skycore")
        assert (await post(s, url, sky("r"), method="PUT"))[0] == 405
        assert (await post(s, url, b"x" * 2049))[0] == 413

        async def chunked():
            yield b"{" + b" " * 2000
            yield b" " * 100 + b"}"
        assert (await post(s, url, chunked()))[0] == 413  # no Content-Length
        assert (await post(s, url, sky("r"), {"Content-Type": "text/html"})) == (
            400, b'{"error":"unsupported content type"}')  # a body Skycore never sends
        status, body = await post(s, url, b'{"code": "N202"}')
        assert status == 400 and "tracking-id" in orjson.loads(body)["error"]
        assert (await post(s, postback_url(base, "engagespark"), b'{"id": "x"}')) == (
            404, b'{"error":"not found"}')  # a source outside allow_networks: as a wrong token
        assert (await post(s, url + "/", sky("r", "N201", "Sent")))[0] == 200  # a trailing slash
        # GET with a query string, as some vendors call back
        assert (await post(s, url + "?tracking-id=g1&code=N201&status=Sent", method="GET",
                           headers={}))[0] == 200
        assert (await post(s, url + "?nothing=here", method="GET", headers={}))[0] == 400
        await settle(tr.pool)
        rows = await tr.pool.fetch("SELECT vendor, method, query FROM tracker.postbacks ORDER BY id")
        assert [tuple(r) for r in rows] == [("skycore", "POST", ""),
                                            ("skycore", "GET", "tracking-id=g1&code=N201&status=Sent")]


async def test_a_rotated_token_is_accepted_and_counted_until_it_is_removed(db_dsn):
    old, series = "old-skycore-token-9e2d", 'tracker_postbacks_previous_token_total{vendor="skycore"}'
    async with running(config_for(db_dsn, skycore={"previous_postback_token": old})) as (tr, base), \
            session() as s:
        before = await metric_value(base, series)
        assert (await post(s, postback_url(base, "skycore", old), sky("rot-1", "N201", "Sent")))[0] == 200
        assert (await post(s, postback_url(base, "skycore"), sky("rot-2", "N201", "Sent")))[0] == 200
        assert (await post(s, postback_url(base, "skycore", old + "x"), sky("rot-3")))[0] == 404
        assert (await post(s, postback_url(base, "sparrow", old), b"x", {}))[0] == 404  # skycore's only
        assert await metric_value(base, series) - before == 1  # the new token's is not counted
        await settle(tr.pool)
        stored = await tr.pool.fetch("SELECT body FROM tracker.postbacks ORDER BY id")
        assert [orjson.loads(r["body"])["tracking-id"] for r in stored] == ["rot-1", "rot-2"]
    async with running(config_for(db_dsn)) as (tr, base), session() as s:  # the rotation done
        assert (await post(s, postback_url(base, "skycore", old), sky("rot-4")))[0] == 404


async def test_nothing_secret_in_logs(db_dsn):
    buf = io.StringIO()
    tlog.configure("debug", "json", stream=buf, cache=False)
    try:
        async with running(config_for(db_dsn)) as (tr, base), session() as s:
            await post(s, postback_url(base, "skycore"), b"{broken")
            await post(s, postback_url(base, "skycore", "nope"), sky("r"))
            await post(s, postback_url(base, "skycore"), sky("r"), {"Content-Type": "text/html"})
            await post(s, postback_url(base, "skycore"), sky("r"))
            await settle(tr.pool)
    finally:
        tlog.configure("info", "console", stream=sys.stderr, cache=False)
    text = buf.getvalue()
    assert "postback unreadable" in text and "postback refused" in text
    assert all(t not in text for t in TOKENS.values())


async def test_a_postback_repeating_our_key_is_stored_masked(db_dsn, no_secrets_registered):
    """A vendor's push may repeat what it was given (our key, the callback URL): the raw row
    keeps it masked in its query and body, as every stored row does (tracker.masking), and
    still says what it said: parsed again (the sweep, a replay), it gives the same report."""
    key = "SkyKeySECRET5531x"
    tlog.register_secret(key, sent=True)  # as tracker.config.load() registers a vendor's key
    cfg = config_for(db_dsn, skycore={"api_key": key})
    async with running(cfg) as (tr, base), session() as s:
        async with tr.pool.acquire() as c:
            mid = await make_message(c, "skycore", "echo-1")
        assert (await post(s, postback_url(base, "skycore") + f"?k={key}",
                           sky("echo-1", debug=f"key={key}")))[0] == 200
        await settle(tr.pool)
        row = await tr.pool.fetchrow("SELECT * FROM tracker.postbacks")
        assert row["query"] == "k=***" and orjson.loads(row["body"])["debug"] == "key=***"
        assert await tr.pool.fetchval("SELECT state FROM tracker.messages WHERE id=$1", mid) == "delivered"
        again = process.parse_row(row, cfg)
        assert [(o.vendor_ref, o.state) for o in again.found] == [("echo-1", State.delivered)]


async def test_duplicates_and_disorder_are_harmless(db_dsn):
    async with running(config_for(db_dsn)) as (tr, base), session() as s:
        async with tr.pool.acquire() as c:
            mid = await make_message(c, "skycore", "d1")
        url = postback_url(base, "skycore")
        for body in [sky("d1"), sky("d1", "N201", "Sent"), sky("d1"), sky("d1", "N201", "Sent")]:
            assert (await post(s, url, body))[0] == 200
            await settle(tr.pool)  # applied one by one: the final one first
        chain = await tr.pool.fetch("SELECT from_state, to_state FROM tracker.transitions"
                                    " WHERE message_id=$1 ORDER BY event_id", mid)
        assert [tuple(r) for r in chain] == [("submitted", "delivered")]
        assert await tr.pool.fetchval("SELECT count(*) FROM tracker.observations"
                                      " WHERE message_id=$1", mid) == 4


async def test_concurrent_postbacks_share_commits(db_dsn):
    cfg = config_for(db_dsn, http={"group_commit_ms": 20, "group_commit_max": 64})
    async with running(cfg) as (tr, base), session() as s:
        url = postback_url(base, "skycore")
        answers = await asyncio.gather(*(post(s, url, sky(f"c{i}")) for i in range(300)))
        assert {a[0] for a in answers} == {200}
        commit = postback_of(tr).commit
        assert commit.rows == 300 and commit.batches < 100, commit.batches
        await settle(tr.pool)
        assert await tr.pool.fetchval("SELECT count(*) FROM tracker.observations") == 300


async def test_a_large_batch_is_stored_alone_then_applied_by_the_worker(db_dsn):
    """More than INLINE_MAX at once: the 200s wait only for the COPY, and the apply worker
    applies the batch after it (under load the writes overlap; docs/performance.md)."""
    from tracker.postbacks import commit as group_commit
    from tracker.postbacks import core

    n = group_commit.INLINE_MAX + 4
    async with running(config_for(db_dsn)) as (tr, base):
        async with tr.pool.acquire() as c:
            mids = [await make_message(c, "skycore", f"big-{i}") for i in range(n)]
        now = datetime.now(timezone.utc)
        raws = [core.RawPostback("skycore", "POST", "application/json", "", sky(f"big-{i}"), None, now)
                for i in range(n)]
        commit = postback_of(tr).commit
        # all handed over before the writer runs: one batch of n
        ids = await asyncio.gather(*(commit.store(r, core.parse(r)) for r in raws))
        assert (commit.batches, commit.rows, commit.inline) == (1, n, 0)
        assert len(set(ids)) == n
        await settle(tr.pool)
        states = await tr.pool.fetch("SELECT state FROM tracker.messages WHERE id = ANY($1)", mids)
        assert [r["state"] for r in states] == ["delivered"] * n
        assert await tr.pool.fetchval("SELECT count(*) FROM tracker.postbacks"
                                      " WHERE processed_at IS NULL") == 0


async def test_rows_left_unprocessed_by_a_crash_are_applied_on_start(db_dsn, pool):
    now = datetime.now(timezone.utc)
    async with pool.acquire() as c:
        mid = await make_message(c, "skycore", "k1")
        await store_raw(c, ["skycore"] * 2, [sky("k1", "N201", "Sent"), sky("k1")], [now, now])
    async with running(config_for(db_dsn)) as (tr, base):
        await settle(tr.pool)
        assert await tr.pool.fetchval("SELECT state FROM tracker.messages WHERE id=$1", mid) == "delivered"


async def test_a_batch_refused_then_lost_by_the_worker_is_swept_up_once(db_dsn, monkeypatch):
    """The database refuses to apply a batch as it stores it: the batch is stored unapplied
    (200) and handed to the worker, which then loses its connection; the sweep parses the
    stored row again and applies it, once."""
    import asyncpg

    import tracker.postbacks.worker as pb

    calls = []

    async def refused(conn, config, items):
        calls.append("with the store")
        raise asyncpg.exceptions.CheckViolationError("refused")  # about the data: no outage

    async def lost_connection(conn, config, items):
        calls.append("by the worker")
        raise ConnectionResetError("database connection lost")
    real_stored, real_received = pb.apply_stored, pb.process_received
    monkeypatch.setattr(pb, "apply_stored", refused)
    monkeypatch.setattr(pb, "process_received", lost_connection)
    async with running(config_for(db_dsn)) as (tr, base), session() as s:
        async with tr.pool.acquire() as c:
            mid = await make_message(c, "skycore", "w1")
        assert (await post(s, postback_url(base, "skycore"), sky("w1")))[0] == 200
        assert postback_of(tr).commit.refused == 1
        await wait_until(lambda: "by the worker" in calls, 10, "the worker's attempt", step=0.01)
        monkeypatch.setattr(pb, "apply_stored", real_stored)
        monkeypatch.setattr(pb, "process_received", real_received)
        await settle(tr.pool)  # the sweep parsed the stored row again and applied it
        assert calls == ["with the store", "by the worker"]
        assert await tr.pool.fetchval("SELECT state FROM tracker.messages WHERE id=$1", mid) == "delivered"
        assert await tr.pool.fetchval("SELECT count(*) FROM tracker.observations") == 1


async def test_a_row_the_database_refuses_is_set_aside_and_the_rest_applied(db_dsn, pool):
    async with pool.acquire() as c:
        await c.execute("""
            CREATE FUNCTION pg_temp_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.vendor_ref = 'poison' THEN RAISE EXCEPTION 'refused' USING ERRCODE = '22023'; END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER refuse BEFORE INSERT ON tracker.observations
                FOR EACH ROW EXECUTE FUNCTION pg_temp_refuse();""")
        ok = await make_message(c, "skycore", "fine")
    async with running(config_for(db_dsn)) as (tr, base), session() as s:
        url = postback_url(base, "skycore")
        results = await asyncio.gather(post(s, url, sky("poison")), post(s, url, sky("fine")))
        assert [r[0] for r in results] == [200, 200]
        await settle(tr.pool)
        assert await tr.pool.fetchval("SELECT state FROM tracker.messages WHERE id=$1", ok) == "delivered"
        problems = await tr.pool.fetch("SELECT kind, problem FROM tracker.postback_problems")
        assert [p["kind"] for p in problems] == ["unreadable"]
        assert "refused" in problems[0]["problem"]


async def test_a_postback_pushes_the_next_poll_out(db_dsn):
    cfg = config_for(db_dsn, engagespark={"max_poll_interval_s": 7200.0})
    async with running(cfg) as (tr, base), session() as s:
        async with tr.pool.acquire() as c:
            soon = await make_message(c, "engagespark", "E-SOON", "accepted", 30)
            final = await make_message(c, "engagespark", "E-FINAL", "accepted", 30)
            pushed_only = await make_message(c, "skycore", "s-1", "accepted", None)
        url = postback_url(base, "engagespark")
        await post(s, url, orjson.dumps({"id": "e-soon", "deliveredToTelco": True,
                                         "deliveredToPhone": "unknown"}))
        await post(s, url, orjson.dumps({"id": "e-final", "deliveredToTelco": True,
                                         "deliveredToPhone": "confirmed", "done": True}))
        await post(s, postback_url(base, "skycore"), sky("s-1", "N201", "Sent"))
        await settle(tr.pool)
        rows = {r["id"]: r for r in await tr.pool.fetch(
            "SELECT id, state, next_poll_at - now() AS wait FROM tracker.messages")}
        assert rows[soon]["state"] == "sent" and rows[soon]["wait"] > timedelta(seconds=7000)
        assert rows[final]["state"] == "delivered" and rows[final]["wait"] is None
        assert rows[pushed_only]["state"] == "sent" and rows[pushed_only]["wait"] is None


async def test_stop_answers_everything_in_flight(db_dsn):
    cfg = config_for(db_dsn, http={"group_commit_ms": 50})
    async with session() as s:
        async with running(cfg) as (tr, base):
            url = postback_url(base, "skycore")
            sends = [asyncio.create_task(post(s, url, sky(f"f{i}"))) for i in range(100)]
            commit = postback_of(tr).commit
            # stop with postbacks in flight
            await wait_until(lambda: commit.rows + len(commit._pending) >= 10, 10, "postbacks in flight",
                             step=0.001)
        answers = await asyncio.gather(*sends, return_exceptions=True)
    ok = [f"f{i}" for i, a in enumerate(answers) if not isinstance(a, BaseException) and a[0] == 200]
    assert all(isinstance(a, BaseException) or a[0] in (200, 503) for a in answers)
    assert ok  # those already received were answered
    import asyncpg
    conn = await asyncpg.connect(db_dsn)
    try:
        stored = {orjson.loads(bytes(b))["tracking-id"]
                  for b in await conn.fetchval("SELECT array_agg(body) FROM tracker.postbacks")}
    finally:
        await conn.close()
    assert set(ok) <= stored


async def test_replay_after_a_mapping_fix_adds_only_what_changed(db_dsn, monkeypatch):
    cfg = config_for(db_dsn)
    async with running(cfg) as (tr, base), session() as s:
        async with tr.pool.acquire() as c:
            mid = await make_message(c, "skycore", "m1")
        url = postback_url(base, "skycore")
        await post(s, url, sky("m1", "N201", "Sent"))
        await post(s, url, sky("m1", "N299", "Handset Delivered"))  # a code we do not map (yet)
        await post(s, postback_url(base, "skycore"), sky("other"))  # another, left alone
        await settle(tr.pool)
        assert await tr.pool.fetchval("SELECT state FROM tracker.messages WHERE id=$1", mid) == "sent"

        monkeypatch.setitem(skycore.CODES, "N299", (State.delivered, None))  # the fix
        async with tr.pool.acquire() as conn:
            first = await replay.replay(conn, cfg, "skycore", None, replay.Progress(0, io.StringIO()))
            second = await replay.replay(conn, cfg, "skycore", None, replay.Progress(0, io.StringIO()))
        assert (first.rows, first.observations, first.transitions, first.unchanged) == (3, 1, 1, 2)
        assert (second.rows, second.observations, second.transitions, second.unchanged) == (3, 0, 0, 3)
        assert await tr.pool.fetchval("SELECT state FROM tracker.messages WHERE id=$1", mid) == "delivered"
        assert await tr.pool.fetchval("SELECT count(*) FROM tracker.observations") == 4

        monkeypatch.delitem(skycore.CODES, "N201")  # a row that no longer parses keeps its past
        monkeypatch.setattr(skycore, "parse_postback", _refuse_n201(skycore.parse_postback))
        async with tr.pool.acquire() as conn:
            third = await replay.replay(conn, cfg, None, None, replay.Progress(0, io.StringIO()))
        assert (third.unreadable, third.observations) == (1, 0)
        assert await tr.pool.fetchval("SELECT count(*) FROM tracker.postback_problems") == 1


async def test_replay_leaves_out_postbacks_older_than_their_reports_retention(db_dsn):
    # A raw postback kept longer than the reports it produced (postbacks_days = 0, or longer
    # than observations_days): retention removed its report (or its message), and a replay added
    # it again, as a new report, or as an orphan naming a message that "never was".
    cfg = config_for(db_dsn)
    async with running(cfg) as (tr, base), session() as s:
        async with tr.pool.acquire() as c:
            await make_message(c, "skycore", "old-1")
            await make_message(c, "skycore", "new-1")
        for ref in ("old-1", "new-1"):
            assert (await post(s, postback_url(base, "skycore"), sky(ref)))[0] == 200
        await settle(tr.pool)
        await tr.pool.execute("UPDATE tracker.postbacks SET received_at = now() - interval '40 days'"
                              " WHERE convert_from(body, 'UTF8') LIKE '%old-1%'")
        await tr.pool.execute("DELETE FROM tracker.observations o USING tracker.messages m"
                              " WHERE o.message_id = m.id AND m.vendor_ref = 'old-1'")  # retention's
        said = io.StringIO()
        async with tr.pool.acquire() as conn:
            out = await replay.replay(conn, cfg, None, None, replay.Progress(0, said))
        assert (out.rows, out.observations) == (1, 0), out  # new-1 only, and nothing new in it
        assert "replay: 1 postbacks received before" in said.getvalue()
        assert "retention keeps reports 30 days" in said.getvalue()
        assert await tr.pool.fetchval(
            "SELECT count(*) FROM tracker.observations o JOIN tracker.messages m ON m.id = o.message_id"
            " WHERE m.vendor_ref = 'old-1'") == 0
        # reports kept for ever: every stored postback is replayed
        forever = dataclasses.replace(cfg, retention=dataclasses.replace(
            cfg.retention, observations_days=0, final_messages_days=0))
        async with tr.pool.acquire() as conn:
            out = await replay.replay(conn, forever, None, None, replay.Progress(0, io.StringIO()))
        assert (out.rows, out.observations) == (2, 1), out


def _refuse_n201(parse):
    from tracker.adapters.base import ParseError

    def wrapped(method, ctype, query, body, now):
        if b"N201" in body:
            raise ParseError("skycore postback: test refuses N201")
        return parse(method, ctype, query, body, now)
    return wrapped


async def test_replay_command(db_dsn, pool):
    async with pool.acquire() as c:
        await make_message(c, "skycore", "z1")
        now = datetime.now(timezone.utc)
        await store_raw(c, ["skycore", "sparrow"],
                        [sky("z1"), b'{"dlr_type": "batch_complete", "dlr_data": {"uuid": "u"}}'],
                        [now - timedelta(hours=2), now])
    cfg = config_for(db_dsn)
    err = io.StringIO()
    args = types.SimpleNamespace(vendor="skycore", since=(now - timedelta(days=1)).isoformat())
    old, sys.stderr = sys.stderr, err
    try:
        assert await asyncio.to_thread(replay.main, args, cfg) == 0
        assert await asyncio.to_thread(replay.main, args, cfg) == 0
        bad = types.SimpleNamespace(vendor=None, since="yesterday")
        assert await asyncio.to_thread(replay.main, bad, cfg) == 2
        down = config_for("postgresql://tracker@127.0.0.1:1/nothing")
        assert await asyncio.to_thread(replay.main, args, down) == 1
    finally:
        sys.stderr = old
    text = err.getvalue()
    assert "replay: database unavailable" in text
    assert "replay [##############################] 1/1 postbacks" in text
    assert "replayed 1 postbacks: 1 new observations, 1 transitions" in text
    assert "replayed 1 postbacks: 0 new observations, 0 transitions, 1 unchanged" in text
    # replay also applies rows the daemon never got to (marked processed); the other vendor's stays
    assert await pool.fetchval("SELECT count(*) FROM tracker.postbacks WHERE processed_at IS NULL") == 1


def test_one_off_commands_find_the_daemons_embedded_cluster(tmp_path):
    pid = EmbeddedPostgres(tmp_path).data_dir / "postmaster.pid"
    assert running_dsn(tmp_path) is None
    pid.parent.mkdir(parents=True)
    pid.write_text(f"{os.getpid()}\n/x/pgdata\n1700000000\n54321\n/x\n127.0.0.1\n")  # alive
    assert running_dsn(tmp_path) == "postgresql://tracker@%2Fx:54321/tracker"
    # left by a postmaster that was killed: not running (the command starts the cluster itself,
    # and pg_ctl clears the file; `tracker migrate` failed for ever on the dead socket)
    gone = subprocess.Popen(["true"])
    gone.wait()
    pid.write_text(f"{gone.pid}\n/x/pgdata\n1700000000\n54321\n/x\n127.0.0.1\n")
    assert running_dsn(tmp_path) is None


async def test_unmatched_postbacks_are_listed(db_dsn):
    async with running(config_for(db_dsn)) as (tr, base), session() as s:
        await post(s, postback_url(base, "skycore"), sky("nobody"))
        await settle(tr.pool)
        assert await tr.pool.fetchval("SELECT count(*) FROM tracker.postback_problems") == 0  # too young
        rows = await tr.pool.fetch("SELECT * FROM tracker.unmatched_postbacks('0 seconds')")
        assert [(r["kind"], r["vendor_ref"]) for r in rows] == [("no_message", "nobody")]


async def test_a_postback_stored_while_its_message_is_being_made_is_adopted_after_commit(pool):
    # The mirror of the intake race: the postback's transaction stores its report as an orphan
    # and commits after intake has made the message and committed. It looks again after its
    # own commit.
    from tracker.config_types import Config
    from tracker.intake import take_in
    from tracker.postbacks.process import process_pending

    body = orjson.dumps({"origin": "SMS_MT", "code": "N202", "status": "Delivered",
                         "to": "10000000000", "tracking-id": "TRK8",
                         "timestamp": "2021-01-26T18:00:07.990498+00:00"})
    async with pool.acquire() as post_conn, pool.acquire() as intake_conn, pool.acquire() as gate:
        await post_conn.execute(
            "INSERT INTO tracker.postbacks (vendor, method, content_type, body, received_at)"
            " VALUES ('skycore', 'POST', 'application/json', $1, now())", body)
        await intake_conn.execute(
            "INSERT INTO tracker.submissions (vendor, vendor_ref, recipient) VALUES ('skycore', 'TRK8', '10000000000')")
        hold = gate.transaction()
        await hold.start()
        # The postback's last step (marking its row done) waits on this; its claim does not.
        await gate.execute("LOCK TABLE tracker.postbacks IN SHARE MODE")
        applying = asyncio.create_task(process_pending(post_conn, Config(), 10))
        await until_waiting_on_a_lock(intake_conn, post_conn.get_server_pid(), "the postback")
        assert (await take_in(intake_conn, Config())).messages == 1  # commits; sees no report yet
        await hold.rollback()
        out = await applying
        state = await intake_conn.fetchval("SELECT state::text FROM tracker.messages WHERE vendor_ref = 'TRK8'")
        orphans = await intake_conn.fetchval("SELECT count(*) FROM tracker.observations WHERE message_id IS NULL")
    assert out.observations == 1
    assert (state, orphans) == ("delivered", 0)


async def test_behind_a_trusted_proxy_the_client_is_the_forwarded_address(db_dsn):
    # The daemon sits behind a load balancer on 127.0.0.1: only from it is X-Forwarded-For
    # believed; the vendor's own network is what allow_networks is checked against.
    cfg = config_for(db_dsn, http={"trusted_proxies": ("127.0.0.0/8",)},
                     skycore={"allow_networks": ("203.0.113.0/24",)})
    async with running(cfg) as (tr, base), session() as s:
        url = postback_url(base, "skycore")
        vendor = {**JSON, "X-Forwarded-For": "198.51.100.66, 203.0.113.7"}
        assert (await post(s, url, sky("xf-1"), vendor))[0] == 200
        spoofed = {**JSON, "X-Forwarded-For": "203.0.113.7, 198.51.100.66"}  # the nearest is not the vendor
        assert (await post(s, url, sky("xf-2"), spoofed)) == (404, b'{"error":"not found"}')
        # A proxy that adds a header line of its own rather than appending to the client's:
        # the lines are one list, in order (RFC 9110 5.3); the first alone was the client's.
        two_lines = CIMultiDict([*JSON.items(), ("X-Forwarded-For", "203.0.113.7"),
                                 ("X-Forwarded-For", "198.51.100.66")])
        assert (await post(s, url, sky("xf-5"), two_lines)) == (404, b'{"error":"not found"}')
        assert (await post(s, url, sky("xf-3")))[0] == 404  # the proxy itself is not the vendor
        sources = [r[0] for r in await tr.pool.fetch("SELECT host(source) FROM tracker.postbacks")]
        assert sources == ["203.0.113.7"]
    untrusted = config_for(db_dsn, skycore={"allow_networks": ("203.0.113.0/24",)})
    async with running(untrusted) as (tr, base), session() as s:
        vendor = {**JSON, "X-Forwarded-For": "203.0.113.7"}
        assert (await post(s, postback_url(base, "skycore"), sky("xf-4"), vendor))[0] == 404


async def test_a_vendor_id_no_index_could_hold_is_a_400_and_nothing_is_stored(db_dsn):
    async with running(config_for(db_dsn)) as (tr, base), session() as s:
        status, body = await post(s, postback_url(base, "skycore"), sky("中" * 3000))
        assert status == 400 and "vendor id is 3000 characters long" in orjson.loads(body)["error"]
        assert await tr.pool.fetchval("SELECT count(*) FROM tracker.postbacks") == 0


async def raw_post(tr, ctype: bytes, body: bytes, query: bytes = b"") -> int:
    """A POST written byte by byte (a header no client library would send as it is)."""
    host, port = tr.listen_addresses["listen"]
    reader, writer = await asyncio.open_connection(host, port)
    path = f"/postbacks/skycore/{TOKENS['skycore']}".encode() + query
    writer.write(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
                 b"Connection: close\r\n\r\n%s" % (path, ctype, len(body), body))
    answer = await reader.read()
    writer.close()
    return int(answer.split(b" ", 2)[1])


async def test_a_request_the_database_could_not_store_is_a_400_and_its_batch_mates_are_stored(db_dsn):
    # A Content-Type with a byte that is not UTF-8 (aiohttp reads it as a lone surrogate) once
    # sank the COPY of every postback in its batch: all answered 503, and it again at each retry.
    cfg = config_for(db_dsn, http={"group_commit_ms": 50, "group_commit_max": 64})
    async with running(cfg) as (tr, base):
        bad = raw_post(tr, b"application/json; x=\xff", sky("bad-1"))
        good = [raw_post(tr, b"application/json", sky(f"good-{i}")) for i in range(30)]
        statuses = await asyncio.gather(bad, *good)
        assert statuses[0] == 400 and set(statuses[1:]) == {200}
        assert await raw_post(tr, b"application/json", sky("nul-query"), b"?a=%00") == 200  # kept escaped
        assert await tr.pool.fetchval("SELECT count(*) FROM tracker.postbacks") == 31
        assert await tr.pool.fetchval("SELECT query FROM tracker.postbacks WHERE query <> ''") == "a=%00"


async def test_a_query_is_stored_as_received_and_decoded_once(db_dsn):
    async with running(config_for(db_dsn)) as (tr, base), session() as s:
        url = postback_url(base, "skycore") + "?tracking-id=pct-%2541&code=N202&status=100%2525%20done"
        status, _ = await post(s, url, method="GET", headers={})
        assert status == 200
        await settle(tr.pool)
        row = await tr.pool.fetchrow("SELECT p.query, o.vendor_ref, o.text FROM tracker.postbacks p"
                                     " JOIN tracker.observations o ON o.postback_id = p.id")
        assert dict(row) == {"query": "tracking-id=pct-%2541&code=N202&status=100%2525%20done",
                             "vendor_ref": "pct-%41", "text": "100%25 done"}


async def test_a_postback_the_database_refuses_alone_is_a_400_and_the_rest_are_stored(db_dsn):
    # Whatever the checks before it miss: the batch is split until the row refused alone is
    # found; that one is answered 400 (sent again, it would be refused again), the rest 200.
    cfg = config_for(db_dsn, http={"group_commit_ms": 50, "group_commit_max": 64})
    async with running(cfg) as (tr, base), session() as s:
        marked = "position('REFUSE' in convert_from(NEW.body, 'UTF8')) > 0"
        await tr.pool.execute(refusing("postbacks", marked, "check_violation", "refused by the test")[0])
        url = postback_url(base, "skycore")
        answers = await asyncio.gather(*(post(s, url, sky("REFUSE" if i == 7 else f"ok-{i}"))
                                         for i in range(20)))
        assert answers[7][0] == 400 and b"refuses to store" in answers[7][1]
        assert {a[0] for i, a in enumerate(answers) if i != 7} == {200}
        assert await tr.pool.fetchval("SELECT count(*) FROM tracker.postbacks") == 19
