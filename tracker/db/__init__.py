"""The database shell: migrations, the reducer, the embedded cluster, SQL statements."""
import asyncio
import contextlib

import asyncpg

# What "the database is unavailable right now" looks like: retry later, never give up the work.
DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError)


def transaction(conn: asyncpg.Connection):
    """A transaction, or the caller's if it holds one: no savepoint (two round trips) is made
    inside it, so a failure there aborts the caller's transaction, which rolls it back."""
    return contextlib.nullcontext() if conn.is_in_transaction() else conn.transaction()
