"""The database shell: migrations, the reducer, the embedded cluster, SQL statements."""
import asyncio
import contextlib
import time

import asyncpg

# What "the database is unavailable right now" looks like: retry later, never give up the work.
# InternalClientError: asyncpg's state error when the server went away mid-operation (seen when
# the database stops).
DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError,
             asyncio.TimeoutError)

# Of those, the ones about the connection or the server, not about the data: the same work may
# succeed later. A data error (a row the database refuses) would fail again.
OUTAGES = (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
           asyncpg.InternalClientError,  # e.g. a connection that died mid-operation
           asyncpg.exceptions.OperatorInterventionError,  # also a statement_timeout (57014)
           asyncpg.exceptions.InsufficientResourcesError,
           asyncpg.exceptions.TransactionRollbackError)

# Errors that pass with time while the database answers: a lock not had within lock_timeout, a
# database gone read-only (a standby behind the DSN after a failover, maintenance), a session
# ended by its idle timeout. Not outages: a component that keeps meeting them fails, is counted,
# and /readyz names it (waited out as outages, they hid a lock never granted).
PASSING = (asyncpg.exceptions.LockNotAvailableError,
           asyncpg.exceptions.ReadOnlySQLTransactionError,
           asyncpg.exceptions.IdleInTransactionSessionTimeoutError)


def _closed_to_connections(e: BaseException) -> bool:
    """PostgreSQL's answer to a connection while the database is closed to them (ALTER DATABASE
    ... ALLOW_CONNECTIONS false, as for maintenance: SQLSTATE 55000, a class that otherwise
    means a statement out of place): the database is away, not the work wrong. Taken for a
    refusal, it lost a poll batch's answers in flight (held until their lease ran out)."""
    return (type(e) is asyncpg.exceptions.ObjectNotInPrerequisiteStateError
            and "not currently accepting connections" in str(e))


def _chain(e: BaseException | None, limit: int = 10):
    """`e` and the exceptions it was raised from (its cause, else its context), `limit` at most."""
    while e is not None and limit > 0:
        yield e
        e, limit = e.__cause__ or e.__context__, limit - 1


def _outage(e: BaseException) -> bool:
    _note_wanting(e)
    return ((isinstance(e, OUTAGES) and not isinstance(e, asyncpg.exceptions.DataError))
            or _closed_to_connections(e))


# The database answering but refusing work for want of resources (its disk full, 53100; out of
# memory, 53200; not too many connections, 53300, nor a configured limit, 53400: the connections
# open still work, and those stay outages as before). Its reads still answer, so /readyz and
# tracker_database_up said all was well while every write failed, postbacks were answered 503
# and the components waited it out as an outage, for as long as the disk stayed full. Every
# component's database failure is judged here (is_outage, passes, row_refused), which notes the
# last such refusal; tracker.http.ops names it.
WANTING = (asyncpg.exceptions.DiskFullError, asyncpg.exceptions.OutOfMemoryError)
WANTING_S = 30.0
_wanting = {"at": float("-inf"), "what": ""}


def _note_wanting(e: BaseException) -> None:
    if isinstance(e, WANTING):
        _wanting.update(at=time.monotonic(), what=f"{type(e).__name__}: {e}")


def wanting_resources() -> str | None:
    """What the database said when it last refused work for want of resources, if that was
    within WANTING_S; else None."""
    ago = time.monotonic() - _wanting["at"]
    return f"{_wanting['what']} ({ago:.0f} s ago)" if ago <= WANTING_S else None


def is_outage(e: BaseException | None) -> bool:
    """Did `e`, or an exception it was raised from, come from an outage (OUTAGES)?"""
    return any(_outage(c) for c in _chain(e))


def passes(e: BaseException | None) -> bool:
    """Is `e` an outage, or an error that passes with time (PASSING), or raised from one? Then
    the work is to be tried again, never refused for good."""
    return any(isinstance(c, PASSING) or _outage(c) for c in _chain(e))


# PostgreSQL refusing what a row says, not the database: data exceptions (22: out of range, bad
# text), integrity constraints (23), program limits (54: index row too large).
ROW_SQLSTATE_CLASSES = ("22", "23", "54")


def row_refused(e: BaseException | None) -> bool:
    """Was `e` (or what it was raised from) a refusal of what a row holds (ROW_SQLSTATE_CLASSES),
    or a failure outside the database while handling it (a bug: logged with its traceback)? Then
    that row alone is refused or set aside, and its batch-mates go on. Anything else the database
    says is the database's, not the row's (a privilege revoked, a column renamed under us by a
    newer release, a lock, an outage): the work is tried again and the failure shown. A postback
    was answered 400, or set aside for good, for those, /readyz ready all along."""
    for c in _chain(e):
        if isinstance(c, asyncpg.PostgresError):
            _note_wanting(c)
            return str(c.sqlstate or "").startswith(ROW_SQLSTATE_CLASSES)
    return not any(isinstance(c, DB_ERRORS) for c in _chain(e))


# What PostgreSQL says of the DSN's own settings (SQLSTATE class 28, and 3D000): no wait mends it.
SETTINGS_REFUSED = (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidCatalogNameError)


def settings_refused(e: BaseException | None) -> bool:
    """Does the database refuse who we are (a wrong password or role, no database of that
    name)? A setting to change: the daemon and its one-off commands (`tracker migrate` in the
    unit's ExecStartPre) exit 2, which the unit does not restart (RestartPreventExitStatus)."""
    return isinstance(e, SETTINGS_REFUSED) and not passes(e)


def lock_not_had(e: BaseException | None) -> bool:
    """Was `e`, or an exception it was raised from, a lock not had within lock_timeout?"""
    return any(isinstance(c, asyncpg.exceptions.LockNotAvailableError) for c in _chain(e))


def transaction(conn: asyncpg.Connection):
    """A transaction, or the caller's if it holds one: no savepoint (two round trips) is made
    inside it, so a failure there aborts the caller's transaction, which rolls it back."""
    return contextlib.nullcontext() if conn.is_in_transaction() else conn.transaction()
