"""The database shell: migrations, the reducer, the embedded cluster, SQL statements."""
import asyncio

import asyncpg

# What "the database is unavailable right now" looks like: retry later, never give up the work.
DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError)
