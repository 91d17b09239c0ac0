"""What `tracker migrate` makes of the migrations a database holds (tracker.db.migrate): each
file's SHA-256 is kept, and one applied from another file than this release's (edited or renamed
after a database applied it) is said, where only its version was checked; versions a release
withdrew are not taken for a newer release's; the files two releases changed after databases had
applied them are mended (sql/032); and a file whose lock another session holds waits a bounded
time and is tried again, instead of holding every writer queued behind it."""
from __future__ import annotations

import asyncio

import asyncpg
import pytest
import structlog

from tests.polling_support import wait_until
from tracker.db import migrate as migrate_module
from tracker.db import queries as q
from tracker.db.migrate import migrate, migrations


def said(logs, start: str) -> list[dict]:
    return [e for e in logs if e["event"].startswith(start)]


async def test_hashes_are_kept_and_a_file_other_than_the_applied_one_is_said(db_dsn):
    conn = await asyncpg.connect(db_dsn)
    try:
        hashes = dict(await conn.fetch("SELECT version, sha256 FROM tracker.schema_migrations"))
        assert hashes == {m.version: m.sha256 for m in migrations()}
        await conn.execute("ALTER TABLE tracker.schema_migrations DROP COLUMN sha256")  # as kept before
        await migrate(conn)
        assert dict(await conn.fetch("SELECT version, sha256 FROM tracker.schema_migrations")) == hashes
        await conn.execute("UPDATE tracker.schema_migrations SET sha256 = NULL WHERE version = 1")
        await conn.execute("UPDATE tracker.schema_migrations SET sha256 = 'edited' WHERE version = 2")
        await conn.execute("UPDATE tracker.schema_migrations SET name = 'renamed' WHERE version = 3")
        await conn.execute("INSERT INTO tracker.schema_migrations (version, name) VALUES (26, 'x'), (31, 'y')")
        with structlog.testing.capture_logs() as logs:
            assert await migrate(conn) == []
        other = said(logs, "a migration was applied from another file")
        assert [(e["version"], e["applied"]) for e in other] == [(2, migrations()[1].name), (3, "renamed")]
        assert not said(logs, "the database holds migrations this release does not have")  # 26, 31: withdrawn
        assert await conn.fetchval("SELECT sha256 FROM tracker.schema_migrations WHERE version = 1") \
            == migrations()[0].sha256  # kept where a release before kept none
    finally:
        await conn.close()


async def test_an_earlier_file_a_later_migration_mends_is_said_once_then_recorded_as_mended(db_dsn):
    conn = await asyncpg.connect(db_dsn)
    try:  # the first 027's record, and 032 (which makes what 027 became) applied
        await conn.execute("UPDATE tracker.schema_migrations SET name = 'sinks_acked_stream',"
                           " sha256 = NULL WHERE version = 27")
        with structlog.testing.capture_logs() as logs:
            await migrate(conn)
            await migrate(conn)
        assert [(e["event"], e["version"]) for e in logs if e.get("version") == 27] == [
            ("a migration applied from an earlier file was mended by a later one", 27)]
        m27 = next(m for m in migrations() if m.version == 27)
        assert tuple(await conn.fetchrow("SELECT name, sha256 FROM tracker.schema_migrations"
                                         " WHERE version = 27")) == (m27.name, m27.sha256)
    finally:
        await conn.close()


async def test_what_an_earlier_027_and_025_left_out_is_made(db_dsn):
    conn = await asyncpg.connect(db_dsn)
    try:  # as the first 027 and 025 left a database: no heartbeat table, no index by death time
        await conn.execute("DROP TABLE tracker.sink_runners; DROP INDEX tracker.sink_deliveries_dead_at;"
                           " DELETE FROM tracker.schema_migrations WHERE version = 32")
        assert [m.version for m in await migrate(conn)] == [32]
        assert await conn.fetchval("SELECT to_regclass('tracker.sink_runners') IS NOT NULL")
        assert await conn.fetchval("SELECT to_regclass('tracker.sink_deliveries_dead_at') IS NOT NULL")
    finally:
        await conn.close()


# 032 as if not applied yet: its index (on tracker.sink_deliveries) to build again
UNDO_032 = ("DROP INDEX tracker.sink_deliveries_dead_at;"
            " DELETE FROM tracker.schema_migrations WHERE version = 32")


def quick_lock_tries(monkeypatch, lock_timeout: str, retry_s: float, tries: int | None = None) -> None:
    """A file's lock waited for `lock_timeout`, tried again after `retry_s`, `tries` times."""
    monkeypatch.setattr(q, "MIGRATION_LOCK_TIMEOUT", f"SET LOCAL lock_timeout = '{lock_timeout}'")
    monkeypatch.setattr(migrate_module, "FILE_RETRY_S", retry_s)
    if tries is not None:
        monkeypatch.setattr(migrate_module, "FILE_TRIES", tries)


async def test_a_file_whose_lock_is_held_waits_a_bounded_time_and_is_tried_again(db_dsn, monkeypatch):
    quick_lock_tries(monkeypatch, "100ms", 0.05)
    conn = await asyncpg.connect(db_dsn)
    holder = await asyncpg.connect(db_dsn)
    try:
        await conn.execute(UNDO_032)
        lock = holder.transaction()  # a writer's open transaction: the index's build waits for it
        await lock.start()
        await holder.execute("LOCK TABLE tracker.sink_deliveries IN ROW EXCLUSIVE MODE")
        with structlog.testing.capture_logs() as logs:
            running = asyncio.create_task(migrate(conn))

            async def retried() -> bool:
                return len(said(logs, "migration met a lock another session holds")) >= 2

            await wait_until(retried, 20)
            writer = await asyncpg.connect(db_dsn)  # not queued behind the migration's lock wait
            try:
                await asyncio.wait_for(writer.execute("DELETE FROM tracker.sink_deliveries WHERE false"), 5)
            finally:
                await writer.close()
            await lock.rollback()
            assert [m.version for m in await asyncio.wait_for(running, 20)] == [32]
    finally:
        await holder.close()
        await conn.close()



async def test_a_file_whose_lock_is_never_had_fails_the_migration_and_is_not_recorded(db_dsn, monkeypatch):
    # after its last try the error is raised: had it been swallowed, the file would count as
    # applied without being so, and the daemon would start on a schema without it
    quick_lock_tries(monkeypatch, "50ms", 0.01, tries=2)
    conn = await asyncpg.connect(db_dsn)
    holder = await asyncpg.connect(db_dsn)
    try:
        await conn.execute(UNDO_032)
        async with holder.transaction():  # held for the whole migration
            await holder.execute("LOCK TABLE tracker.sink_deliveries IN ROW EXCLUSIVE MODE")
            with pytest.raises(asyncpg.LockNotAvailableError):
                await asyncio.wait_for(migrate(conn), 20)
        assert not await conn.fetchval("SELECT count(*) FROM tracker.schema_migrations WHERE version = 32")
    finally:
        await holder.close()
        await conn.close()