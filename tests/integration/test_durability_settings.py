"""Durable means durable (issue #11): the daemon's transactions commit with synchronous_commit
on, whatever the database's or the role's default says."""
import asyncpg

from tests.postbacks_support import config_for, running


async def test_the_daemon_commits_synchronously_even_where_the_database_says_otherwise(db_dsn):
    admin = await asyncpg.connect(db_dsn)
    try:
        name = await admin.fetchval("SELECT current_database()")
        await admin.execute(f"ALTER DATABASE {name} SET synchronous_commit = off")
        await admin.execute("ALTER ROLE current_user IN DATABASE " + name + " SET synchronous_commit = off")
    finally:
        await admin.close()
    plain = await asyncpg.connect(db_dsn)
    try:
        assert await plain.fetchval("SHOW synchronous_commit") == "off"  # the default it would get
    finally:
        await plain.close()
    async with running(config_for(db_dsn)) as (tr, _base):
        async with tr.pool.acquire() as a, tr.pool.acquire() as b:
            assert [await c.fetchval("SHOW synchronous_commit") for c in (a, b)] == ["on", "on"]
