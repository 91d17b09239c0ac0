"""Trouble that passes is not a refusal of the postback: a database gone read-only (a standby
behind the DSN after a failover) is answered 503, so that the vendor retries; a lock not had
for long (another session's open transaction) leaves its postback waiting, the others applied around
it, and it is applied once the lock goes, never set aside. And requests the daemon cannot read faithfully are refused with a clear answer: a
compressed body (400), a Content-Type with a byte that is not UTF-8 (400, and its log line
written). Real PostgreSQL (settings changed with ALTER SYSTEM, reset after), the daemon
in-process, raw HTTP where a client would tidy the request."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import io
import sys

import asyncpg
import orjson
import structlog

from tests.polling_support import wait_until
from tests.postbacks_support import config_for, named, postback_url, readyz, running, session
from tracker import logging as tlog

JSON = {"Content-Type": "application/json"}


def delivered(ref: str) -> bytes:
    return orjson.dumps({"origin": "SMS_MT", "code": "N202", "status": "Delivered",
                         "to": "10000000001", "tracking-id": ref})


@contextlib.asynccontextmanager
async def system_setting(dsn: str, name: str, value: str):
    """A server setting for every session, sessions already open included (a reload)."""
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        await admin.execute("SELECT pg_reload_conf()")
        yield admin
    finally:
        await admin.execute(f"ALTER SYSTEM RESET {name}")
        await admin.execute("SELECT pg_reload_conf()")
        await admin.close()


async def setting_seen(pool, name: str, value: str) -> bool:
    return await pool.fetchval(f"SELECT current_setting('{name}')") == value


async def raw_post(base: str, path: str, head: bytes, body: bytes) -> tuple[bytes, bytes]:
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n"
                 "Connection: close\r\n".encode() + head + b"\r\n" + body)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer.split(b"\r\n", 1)[0], answer.rsplit(b"\r\n\r\n", 1)[-1]


async def test_a_database_gone_read_only_is_answered_503_and_nothing_is_refused(db_dsn):
    async with running(config_for(db_dsn)) as (tr, base), session() as s:
        await tr.pool.execute("INSERT INTO tracker.messages (vendor, vendor_ref) VALUES"
                              " ('skycore', 'ro-0'), ('skycore', 'ro-1'), ('skycore', 'ro-2')")
        url = postback_url(base, "skycore")
        async with system_setting(db_dsn, "default_transaction_read_only", "on"):
            await wait_until(lambda: setting_seen(tr.pool, "default_transaction_read_only", "on"), 5)
            answers = []
            for i in range(3):
                async with s.post(url, data=delivered(f"ro-{i}"), headers=JSON) as r:
                    answers.append((r.status, await r.json()))
            assert answers == [(503, {"error": "temporarily unavailable, retry later"})] * 3
        assert await tr.pool.fetchval("SELECT count(*) FROM tracker.postbacks") == 0
        for i in range(3):  # the vendor's retries, once the database takes writes again
            async with s.post(url, data=delivered(f"ro-{i}"), headers=JSON) as r:
                assert r.status == 200

        async def all_delivered() -> bool:
            return await tr.pool.fetchval("SELECT count(*) FROM tracker.messages"
                                          " WHERE state = 'delivered'") == 3

        await wait_until(all_delivered, 10)


async def test_a_message_held_locked_delays_only_its_own_postback(db_dsn):
    # Another session's transaction holds one message's row (a psql left open). Its postback
    # used to hold a group-commit writer until the request's timeout, and every postback of its
    # batch was answered 503, again at each retry. Now its lock is waited for a second at most:
    # every postback is stored (200), the others applied around it, the held one left waiting,
    # never set aside, the lock's error counted and named in /readyz, and it is applied once
    # the lock goes. The server's own lock_timeout is PostgreSQL's default: none.
    config = config_for(db_dsn)
    config = dataclasses.replace(config, health=dataclasses.replace(
        config.health, failures_before_unready=1, restart_backoff_max_s=0.5))
    free = [f"free-{i}" for i in range(6)]
    async with running(config) as (tr, base), session() as s:
        plain = await asyncpg.connect(db_dsn)  # the server's own: none, as the postbacks' 1 s is theirs
        assert await plain.fetchval("SELECT current_setting('lock_timeout')") == "0"
        await plain.close()
        await tr.pool.execute("INSERT INTO tracker.messages (vendor, vendor_ref)"
                              " SELECT 'skycore', unnest($1::text[])", ["held-1", *free])
        holder = await asyncpg.connect(db_dsn)
        try:
            with structlog.testing.capture_logs() as logs:
                async with holder.transaction():
                    await holder.execute("SELECT FROM tracker.messages WHERE vendor_ref = 'held-1'"
                                         " FOR UPDATE")

                    async def post(ref: str) -> int:
                        async with s.post(postback_url(base, "skycore"), data=delivered(ref),
                                          headers=JSON) as r:
                            return r.status

                    assert await asyncio.gather(*(post(r) for r in ["held-1", *free])) == [200] * 7

                    async def others_applied() -> bool:
                        return await delivered_refs(tr.pool) == set(free)

                    await wait_until(others_applied, 20)

                    async def named_held() -> bool:
                        status, body = await readyz(s, base)
                        return status == 503 and any("LockNotAvailableError" in r
                                                     for r in named(body, "postbacks"))

                    await wait_until(named_held, 20, step=0.1)
                    assert await delivered_refs(tr.pool) == set(free)  # still held
        finally:
            await holder.close()
        await wait_until(lambda: _is(delivered_refs(tr.pool), {"held-1", *free}), 20)  # lock gone

        async def ready() -> bool:  # with no more traffic: an applier idle is no failing one
            return (await readyz(s, base))[0] == 200

        await wait_until(ready, 20, step=0.1)
        assert not [e for e in logs if e["event"] == "postback set aside"]
        assert await tr.pool.fetchval("SELECT count(*) FROM tracker.postbacks WHERE error IS NOT NULL") == 0


async def delivered_refs(pool) -> set[str]:
    return {r[0] for r in await pool.fetch(
        "SELECT vendor_ref FROM tracker.messages WHERE state = 'delivered'")}


async def _is(value, expected) -> bool:
    return await value == expected


async def test_a_compressed_body_is_refused_not_read_short(db_dsn):
    # aiohttp inflates it while reading; Content-Length is the compressed size: read by it, the
    # body was cut and the report applied to another message (its id's prefix).
    async with running(config_for(db_dsn)) as (tr, base):
        await tr.pool.execute("INSERT INTO tracker.messages (vendor, vendor_ref)"
                              " VALUES ('skycore', 'gz-1'), ('skycore', 'gz-10')")
        path = postback_url("", "skycore")
        status, body = await raw_post(base, path, b"Content-Type: application/json\r\n"
                                      b"Content-Encoding: gzip\r\n", gzip.compress(delivered("gz-10")))
        assert (status, orjson.loads(body)) == (
            b"HTTP/1.1 400 Bad Request",
            {"error": "unsupported Content-Encoding: send the body uncompressed"})
        # the same behind a first line that says identity (aiohttp inflates by the last): a form
        # that stays a form when cut was stored cut short and answered 200
        form = b"tracking-id=gz-10&code=N202&status=Delivered&to=10000000001&x=" + b"a" * 3000
        status, body = await raw_post(base, path, b"Content-Type: application/x-www-form-urlencoded\r\n"
                                      b"Content-Encoding: identity\r\nContent-Encoding: gzip\r\n",
                                      gzip.compress(form))
        assert status == b"HTTP/1.1 400 Bad Request", body
        assert await tr.pool.fetchval("SELECT count(*) FROM tracker.postbacks") == 0


async def test_a_content_type_that_is_not_utf8_is_refused_and_logged(db_dsn):
    out = io.BytesIO()
    stream = io.TextIOWrapper(out, encoding="utf-8")
    tlog.configure("info", "json", stream=stream, cache=False)  # as in production
    try:
        async with running(config_for(db_dsn)) as (tr, base):
            status, _ = await raw_post(base, postback_url("", "skycore"),
                                       b"Content-Type: text/pl\xffain\r\n", delivered("u-1"))
    finally:
        stream.flush()
        tlog.configure("info", "console", stream=sys.stderr, cache=False)
    assert status == b"HTTP/1.1 400 Bad Request"  # was a 500: the log line raised
    [line] = [orjson.loads(x) for x in out.getvalue().splitlines() if b"postback refused" in x]
    assert line["status"] == 400 and line["content_type"] == "text/pl\\udcffain"


async def test_a_migrations_short_lock_on_the_table_delays_a_postback_not_refuses_it(db_dsn):
    # The postbacks' connections wait 1 s at most for a lock (for the apply, which the worker
    # falls back on). Storing has nothing to fall back on: a lock on tracker.postbacks held
    # 2.5 s (an ALTER TABLE of a migration) got the postback a 503 after 2 s; it is stored.
    async with running(config_for(db_dsn)) as (tr, base), session() as s:
        await tr.pool.execute("INSERT INTO tracker.messages (vendor, vendor_ref) VALUES ('skycore', 'ddl-1')")
        holder = await asyncpg.connect(db_dsn)
        try:
            tx = holder.transaction()
            await tx.start()
            await holder.execute("LOCK TABLE tracker.postbacks IN ACCESS EXCLUSIVE MODE")
            post = asyncio.ensure_future(s.post(postback_url(base, "skycore"), data=delivered("ddl-1"),
                                                headers=JSON))

            async def waiting_on_the_lock() -> bool:
                return bool(await tr.pool.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND application_name = 'tracker postbacks'"))

            await wait_until(waiting_on_the_lock, 10, step=0.05)
            await asyncio.sleep(2.5)  # held past two of the connections' lock_timeouts (1 s)
            await tx.commit()
            async with await post as r:
                assert r.status == 200
        finally:
            await holder.close()

        async def applied() -> bool:
            return await delivered_refs(tr.pool) == {"ddl-1"}

        await wait_until(applied, 15)


async def test_a_schema_changed_under_the_daemon_is_503_or_waits_never_400_or_set_aside(db_dsn):
    # A column renamed under a running daemon (a newer release's migration in a rolling upgrade;
    # a privilege revoked is the same, SQLSTATE class 42) is the database's trouble, not the
    # postback's: storing answered 400 and applying set every row aside for good, /readyz ready.
    # Now storing is answered 503 (the vendor retries), and rows stored but not applied wait,
    # the failure counted and named by /readyz, until the database takes them again.
    config = config_for(db_dsn)
    config = dataclasses.replace(config, health=dataclasses.replace(
        config.health, failures_before_unready=1, restart_backoff_max_s=0.5))
    async with running(config) as (tr, base), session() as s:
        await tr.pool.execute("INSERT INTO tracker.messages (vendor, vendor_ref) VALUES"
                              " ('skycore', 'sc-0'), ('skycore', 'sc-1')")
        url = postback_url(base, "skycore")

        async def post(ref: str) -> tuple[int, dict]:
            async with s.post(url, data=delivered(ref), headers=JSON) as r:
                return r.status, await r.json()

        await tr.pool.execute("ALTER TABLE tracker.postbacks RENAME COLUMN content_type TO ct")
        assert await post("sc-0") == (503, {"error": "temporarily unavailable, retry later"})
        await tr.pool.execute("ALTER TABLE tracker.postbacks RENAME COLUMN ct TO content_type")
        assert (await post("sc-0"))[0] == 200  # the vendor's retry

        await tr.pool.execute("ALTER TABLE tracker.observations RENAME COLUMN operator TO op")
        assert (await post("sc-1"))[0] == 200  # stored: its apply waits

        async def named_failing() -> bool:
            status, body = await readyz(s, base)
            return status == 503 and any("UndefinedColumnError" in r for r in named(body, "postbacks"))

        await wait_until(named_failing, 20, step=0.1)
        assert await tr.pool.fetchval("SELECT count(*) FROM tracker.postbacks"
                                      " WHERE processed_at IS NULL AND error IS NULL") == 1
        await tr.pool.execute("ALTER TABLE tracker.observations RENAME COLUMN op TO operator")
        await wait_until(lambda: _is(delivered_refs(tr.pool), {"sc-0", "sc-1"}), 20)
        assert await tr.pool.fetchval("SELECT count(*) FROM tracker.postbacks WHERE error IS NOT NULL") == 0


async def test_what_fails_after_a_batch_was_applied_and_answered_200_is_only_logged(db_dsn):
    """After the commit and the 200s, the look for late orphans may fail (the database going
    away that moment): logged, left to the sweep. Taken as the batch's own failure, it was
    counted as "not stored; answered 503" for rows stored and answered, and a batch split to
    find a refused row stored its rows twice."""
    async with running(config_for(db_dsn)) as (tr, base), session() as s:
        pb = next(c for c in tr.components if type(c).__name__ == "Postbacks")
        await tr.pool.execute("INSERT INTO tracker.messages (vendor, vendor_ref) VALUES ('skycore', 'after-0')")

        async def orphans_look_fails(*_args, **_kw):
            raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation")

        pb.commit.applier.applied = orphans_look_fails
        with structlog.testing.capture_logs() as logs:
            async with s.post(postback_url(base, "skycore"), data=delivered("after-0"), headers=JSON) as r:
                assert r.status == 200
            assert pb.commit.inline == 1  # applied in the transaction that stored it
        events = [e["event"] for e in logs]
        assert "postbacks applied; orphans left to the sweep" in events
        assert "postbacks not stored; answered 503" not in events
        assert await tr.pool.fetchval("SELECT count(*) FROM tracker.postbacks") == 1
        assert await tr.pool.fetchval("SELECT state::text FROM tracker.messages WHERE vendor_ref = 'after-0'") == "delivered"
