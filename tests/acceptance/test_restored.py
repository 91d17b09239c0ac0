"""A backup put back (deploy/OPERATIONS.md, "Restoring a backup"): its sequences hand out again
the ids the lost time had handed out, to other events and messages, and every consumer drops
those as repeats (webhook-id, Nats-Msg-Id, an SQL consumer's event_id). `tracker restored` moves
every id of the tracker's schema past them, restore after restore of the same backup, and leaves
the application's own sequences alone. Real pg_dump / pg_restore, a real `tracker` process."""
from __future__ import annotations

import subprocess

import asyncpg

from tests.acceptance.test_cli import TRACKER, env_with
from tracker.db.embedded import find_bindir

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


def restored(dsn: str) -> subprocess.CompletedProcess:
    return subprocess.run(TRACKER + ["restored"], env=env_with(TRACKER_DATABASE__DSN=dsn),
                          capture_output=True, text=True, timeout=60)


async def test_after_a_restore_tracker_restored_hands_out_no_id_twice(db_dsn, tmp_path):
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
        conn = await asyncpg.connect(db_dsn)
        again = {seq: await conn.fetchval(f"SELECT nextval('tracker.{seq}')") for seq in SEQUENCES}
        assert all(again[s] <= lost[s] for s in SEQUENCES)  # the trouble: an id handed out again

        p = restored(db_dsn)
        assert p.returncode == 0, p.stderr
        assert "transitions_event_id_seq: " in p.stdout and "tell the consumers" in p.stdout
        first = await take(conn, 1)
        assert all(first[s] > lost[s] for s in SEQUENCES), (first, lost)
        await take(conn, 20)  # the first restore's own lost time, then the same backup again
        since_first = await take(conn, 1)
        await conn.close()

        restore(db_dsn, dump)
        assert restored(db_dsn).returncode == 0
        conn = await asyncpg.connect(db_dsn)
        second = await take(conn, 1)
        assert all(second[s] > since_first[s] for s in SEQUENCES), (second, since_first)
        assert second["transitions_event_id_seq"] < 2 ** 53  # exact in JSON
        assert await conn.fetchval("SELECT nextval('public.orders_id_seq')") == 2  # not touched
    finally:
        await conn.close()
