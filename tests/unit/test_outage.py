"""tracker.db.is_outage: what is waited out (the database away) and what is a refusal of the
work itself (it would fail again)."""
from __future__ import annotations

import asyncpg

from tracker.db import is_outage, passes, row_refused


def test_a_database_closed_to_connections_is_an_outage_and_other_55000s_are_not():
    closed = asyncpg.exceptions.ObjectNotInPrerequisiteStateError(
        'database "tracker" is not currently accepting connections')
    assert is_outage(closed)
    assert not is_outage(asyncpg.exceptions.ObjectNotInPrerequisiteStateError(
        "cannot execute this statement in a read-only transaction"))


def test_what_passes_with_time_is_tried_again_but_is_no_outage():
    # Waited out as outages, a lock never granted was only ever a warning; taken for refusals
    # of the work, they set acknowledged postbacks aside for good and answered 400.
    passing = [asyncpg.exceptions.LockNotAvailableError("could not obtain lock"),  # lock_timeout
               asyncpg.exceptions.ReadOnlySQLTransactionError(  # a standby after a failover
                   "cannot execute INSERT in a read-only transaction"),
               asyncpg.exceptions.IdleInTransactionSessionTimeoutError("terminating connection")]
    for e in passing:
        assert passes(e) and not is_outage(e), e
    assert passes(ConnectionRefusedError()) and is_outage(ConnectionRefusedError())
    assert is_outage(asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"))
    for e in (asyncpg.exceptions.InFailedSQLTransactionError("current transaction is aborted"),
              asyncpg.exceptions.NumericValueOutOfRangeError("out of range")):
        assert not passes(e), e
    try:
        try:
            raise passing[0]
        except asyncpg.PostgresError as e:
            raise RuntimeError("1 postbacks not applied") from e
    except RuntimeError as wrapped:
        assert passes(wrapped)  # what it was raised from counts


def test_connection_and_server_errors_are_outages_data_errors_are_not():
    assert is_outage(ConnectionRefusedError())
    assert is_outage(asyncpg.exceptions.CannotConnectNowError("the database system is starting up"))
    assert not is_outage(asyncpg.exceptions.NumericValueOutOfRangeError("out of range"))
    try:
        try:
            raise OSError("reset by peer")
        except OSError as e:
            raise RuntimeError("wrapped") from e
    except RuntimeError as wrapped:
        assert is_outage(wrapped)  # what it was raised from counts


def test_only_what_a_row_holds_or_a_bug_is_the_rows_refusal():
    # A privilege revoked or a column renamed under the daemon answered postbacks 400 and set
    # stored ones aside for good; only data (22), integrity (23) and limit (54) errors, or a bug
    # outside the database, are a row's own.
    x = asyncpg.exceptions
    rows = [x.NumericValueOutOfRangeError("out of range"), x.CharacterNotInRepertoireError("0x00"),
            x.UniqueViolationError("duplicate key"), x.ProgramLimitExceededError("index row too big"),
            ValueError("a bug while planning this row")]
    databases = [x.InsufficientPrivilegeError("permission denied for table postbacks"),
                 x.UndefinedColumnError('column "content_type" does not exist'),
                 x.UndefinedTableError('relation "tracker.postbacks" does not exist'),
                 x.LockNotAvailableError("could not obtain lock"),
                 x.ReadOnlySQLTransactionError("read-only transaction"),
                 x.InFailedSQLTransactionError("current transaction is aborted"),
                 ConnectionRefusedError(), TimeoutError(), asyncpg.InterfaceError("connection closed")]
    for e in rows:
        assert row_refused(e), e
    for e in databases:
        assert not row_refused(e), e
    for cause, refused in ((rows[2], True), (databases[0], False)):
        try:
            try:
                raise cause
            except Exception as e:
                raise RuntimeError("1 postbacks not applied") from e
        except RuntimeError as wrapped:
            assert row_refused(wrapped) is refused  # what it was raised from decides


def test_only_a_full_disk_or_memory_counts_as_the_database_wanting_resources(monkeypatch):
    """Too many connections (53300) is an outage to connect, as before: the connections open
    still work. Noted as wanting resources, one failed pool growth made every replica unready
    for 30 s, saying "disk full"."""
    import asyncpg

    from tracker import db

    monkeypatch.setattr(db, "_wanting", {"at": float("-inf"), "what": ""})
    assert db.is_outage(asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"))
    assert db.wanting_resources() is None
    assert not db.row_refused(asyncpg.exceptions.DiskFullError("could not extend file"))
    assert "DiskFullError: could not extend file" in db.wanting_resources()
