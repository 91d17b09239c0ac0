"""tracker.db.is_outage: what is waited out (the database away) and what is a refusal of the
work itself (it would fail again)."""
from __future__ import annotations

import asyncpg

from tracker.db import is_outage, passes


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
