"""A backup put back (deploy/OPERATIONS.md, "Restoring a backup"), or a standby promoted that
missed the primary's last commits: its sequences would hand out again the ids the lost time had
handed out, to other events and messages, and every consumer drops those as repeats (webhook-id,
Nats-Msg-Id, an SQL consumer's event_id). No step to forget: every connection the tracker opens
(its pools', a one-off command's) first moves each id sequence of its schema past them
(queries.IDS_PAST_NOW), restore after restore of the same backup, and leaves the application's
own sequences alone. Real pg_dump / pg_restore, a real `tracker` process."""
from __future__ import annotations

import asyncio
import subprocess

import asyncpg

from tests.acceptance.test_cli import TRACKER, env_with
from tracker.db import sessions
from tracker.db.embedded import find_bindir
from tracker.postbacks import _warm

SEQUENCES = ("transitions_event_id_seq", "messages_id_seq")


async def take(conn: asyncpg.Connection, n: int) -> dict[str, int]:
    """What the daemon's inserts do to the sequences: the last of `n` ids of each."""
    out = {}
    for seq in SEQUENCES:
        for _ in range(n):
            out[seq] = await conn.fetchval(f"SELECT nextval('tracker.{seq}')")
    return out


def restore(dsn: str, dump: str) -> None:
    """As OPERATIONS says: the schema dropped, the dump put back in one transaction."""
    bindir = find_bindir()
    subprocess.run([str(bindir / "psql"), "-q", "-d", dsn, "-c", "DROP SCHEMA tracker CASCADE"],
                   check=True, capture_output=True)
    subprocess.run([str(bindir / "pg_restore"), "--single-transaction", "--exit-on-error",
                    "-d", dsn, dump], check=True, capture_output=True)


def migrate(dsn: str) -> subprocess.CompletedProcess:
    """What the unit runs first at every start (ExecStartPre)."""
    return subprocess.run(TRACKER + ["migrate"], env=env_with(TRACKER_DATABASE__DSN=dsn),
                          capture_output=True, text=True, timeout=60)


async def test_after_a_restore_the_first_tracker_connection_hands_out_no_id_twice(db_dsn, tmp_path):
    dump = str(tmp_path / "tracker.dump")
    conn = await asyncpg.connect(db_dsn)
    try:
        await conn.execute("CREATE SEQUENCE public.orders_id_seq")  # the application's own
        assert await conn.fetchval("SELECT nextval('public.orders_id_seq')") == 1
        await take(conn, 3)
        subprocess.run([str(find_bindir() / "pg_dump"), "-Fc", "-n", "tracker", "-f", dump, db_dsn],
                       check=True, capture_output=True)
        lost = await take(conn, 50)  # handed out after the backup: to be lost with the restore
        await conn.close()

        restore(db_dsn, dump)
        conn = await asyncpg.connect(db_dsn)  # not the tracker's: nothing moved
        again = {seq: await conn.fetchval(f"SELECT nextval('tracker.{seq}')") for seq in SEQUENCES}
        assert all(again[s] <= lost[s] for s in SEQUENCES)  # the trouble: an id handed out again

        p = migrate(db_dsn)
        assert p.returncode == 0, p.stderr
        first = await take(conn, 1)
        assert all(first[s] > lost[s] for s in SEQUENCES), (first, lost)
        await take(conn, 20)  # the first restore's own lost time, then the same backup again
        since_first = await take(conn, 1)
        await conn.close()

        restore(db_dsn, dump)
        assert migrate(db_dsn).returncode == 0
        conn = await asyncpg.connect(db_dsn)
        second = await take(conn, 1)
        assert all(second[s] > since_first[s] for s in SEQUENCES), (second, since_first)
        assert second["transitions_event_id_seq"] < 2 ** 53  # exact in JSON
        assert await conn.fetchval("SELECT nextval('public.orders_id_seq')") == 2  # not touched
    finally:
        await conn.close()


async def _set_back(dsn: str, to: int) -> int:
    """A lost time, without a dump: every tracker sequence put back to `to`; what it had reached."""
    conn = await asyncpg.connect(dsn)
    try:
        reached = max((await take(conn, 5)).values())
        await conn.execute("SELECT setval(format('tracker.%I', sequencename)::regclass, $1) "
                           "FROM pg_sequences WHERE schemaname = 'tracker'", to)
        return reached
    finally:
        await conn.close()


async def test_each_new_pool_connection_moves_the_ids_as_a_failover_reconnects(db_dsn):
    """A standby promoted under running daemons: their pools reconnect, and before any insert
    the ids are past what the old primary handed out (the main pool's init, the postback path's)."""
    for init in (sessions.init, _warm):
        reached = await _set_back(db_dsn, 1)
        pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=1, init=init)
        try:
            async with pool.acquire() as conn:
                assert min((await take(conn, 1)).values()) > reached, init
        finally:
            await pool.close()


async def test_ids_never_go_back_while_connections_open_at_once(db_dsn):
    """Many connections opening together (a pool's start) under another session's inserts: the
    moves wait for one another without failing (the lock), and that session's ids only rise.
    (The race the lock closes is microseconds wide: this shows the moves' law, not the lock.)"""
    seen: list[int] = []
    taker = await asyncpg.connect(db_dsn)
    opened: list[asyncpg.Connection] = []
    try:
        async def taking() -> None:
            while not done.is_set():
                seen.append(await taker.fetchval("SELECT nextval('tracker.transitions_event_id_seq')"))

        async def opening() -> None:
            conn = await asyncpg.connect(db_dsn)
            opened.append(conn)
            await sessions.init(conn)

        done = asyncio.Event()
        t = asyncio.create_task(taking())
        await asyncio.gather(*(opening() for _ in range(16)))
        done.set()
        await t
        assert len(seen) > 1 and all(a < b for a, b in zip(seen, seen[1:])), seen
    finally:
        await asyncio.gather(*(c.close() for c in opened), taker.close())


async def test_nothing_is_moved_where_writes_are_refused(db_dsn):
    """A standby (or a database set read-only) takes no setval: a read-only one-off command still
    runs there; the daemon meets the refusal at its first write, as before (test_run_read_only)."""
    conn = await asyncpg.connect(db_dsn)
    try:
        before = await conn.fetchval("SELECT last_value FROM tracker.messages_id_seq")
        await conn.execute("SET default_transaction_read_only = on")
        await sessions.ids_past_now(conn)
        await conn.execute("SET default_transaction_read_only = off")
        assert await conn.fetchval("SELECT last_value FROM tracker.messages_id_seq") == before
        await sessions.ids_past_now(conn)
        assert await conn.fetchval("SELECT last_value FROM tracker.messages_id_seq") > before
    finally:
        await conn.close()


async def test_a_sequence_ahead_of_the_clock_is_left_where_it_is(db_dsn):
    """Forward only: ids taken while the database's clock was ahead (then set right) are not
    handed out again by a move back to the clock."""
    conn = await asyncpg.connect(db_dsn)
    try:
        ahead = await conn.fetchval("SELECT (extract(epoch FROM now()) * 2000000)::bigint")
        await conn.execute("SELECT setval('tracker.messages_id_seq', $1)", ahead)
        await sessions.ids_past_now(conn)
        assert await conn.fetchval("SELECT nextval('tracker.messages_id_seq')") == ahead + 1
    finally:
        await conn.close()


async def test_an_integer_sequence_in_the_schema_is_left_and_no_connection_refused(db_dsn):
    """A sequence that cannot hold the microseconds (a `serial` column someone added): moved, it
    failed every connection, and no daemon could start."""
    conn = await asyncpg.connect(db_dsn)
    try:
        await conn.execute("CREATE SEQUENCE tracker.small_seq AS integer")
        await sessions.ids_past_now(conn)
        assert await conn.fetchval("SELECT nextval('tracker.small_seq')") == 1
        assert await conn.fetchval("SELECT last_value FROM tracker.messages_id_seq") > 2 ** 50
    finally:
        await conn.close()


def test_tracker_restored_of_the_release_before_is_kept_for_runbooks_and_does_nothing(db_dsn):
    p = subprocess.run(TRACKER + ["restored"], env=env_with(TRACKER_DATABASE__DSN=db_dsn),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "nothing to do" in p.stdout, (p.stdout, p.stderr)
