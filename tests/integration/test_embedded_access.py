"""The embedded cluster is reachable only by the tracker (docs/design.md#contract-9): no TCP listener, a Unix
socket in a private directory, and peer authentication limited to the tracker's OS user."""
from __future__ import annotations

import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
from pathlib import Path

import asyncpg
import pytest

from tracker.db.embedded import EmbeddedPostgres, running_dsn


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    tmp = tempfile.mkdtemp(prefix="tracker-access-")
    os.chmod(tmp, 0o755)  # the cluster may run as the postgres user
    # A port nothing listens on over TCP: a refused TCP connection then proves ours does not either.
    pg = EmbeddedPostgres(Path(tmp) / "pg", fast=True, port=free_tcp_port()).start()
    try:
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def fetchval(dsn: str, sql: str):
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def test_the_tracker_connects_with_a_dsn_holding_no_secret(cluster):
    assert ":" not in cluster.dsn.split("://", 1)[1].split("@", 1)[0]  # no password in the userinfo
    assert "password" not in cluster.dsn
    assert await fetchval(cluster.dsn, "SELECT current_user") == "tracker"
    assert running_dsn(cluster.state_dir) == cluster.dsn  # what another tracker command finds


async def test_new_wal_segments_are_not_zero_filled(cluster):
    # A zero-filled segment stalls every commit while it is written (docs/performance.md).
    assert await fetchval(cluster.dsn, "SHOW wal_init_zero") == "off"


async def test_its_server_log_is_a_week_of_daily_files_not_one_that_grows(cluster):
    # `pg_ctl -l postgres.log` alone appended for as long as the tracker ran
    conn = await asyncpg.connect(cluster.dsn)
    try:
        settings = {r["name"]: r["setting"] for r in await conn.fetch(
            "SELECT name, setting FROM pg_settings WHERE name = ANY($1)",
            ["logging_collector", "log_filename", "log_truncate_on_rotation", "log_rotation_age"])}
        current = await conn.fetchval("SELECT pg_current_logfile()")
    finally:
        await conn.close()
    assert settings == {"logging_collector": "on", "log_filename": "postgresql-%a.log",
                        "log_truncate_on_rotation": "on", "log_rotation_age": "1440"}
    assert current.startswith("log/postgresql-") and current.endswith(".log")  # under pgdata


async def test_there_is_no_tcp_listener(cluster):
    assert await fetchval(cluster.dsn, "SHOW listen_addresses") == ""
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family) as s, pytest.raises(OSError):  # refused (or no IPv6 at all)
            s.settimeout(2)
            s.connect((host, cluster.port))
    with pytest.raises(OSError):
        await asyncpg.connect(host="127.0.0.1", port=cluster.port, user="tracker",
                              database="postgres", timeout=5)


def test_the_socket_directory_is_private(cluster):
    st = cluster.socket_dir.stat()
    owner = cluster.user.pw_uid if cluster.user is not None else os.geteuid()
    assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == owner
    assert stat.S_IMODE(cluster.state_dir.stat().st_mode) == 0o700


async def test_only_peer_connections_of_the_tracker_are_allowed(cluster):
    rules = await fetchval(cluster.dsn, """
        SELECT string_agg(concat_ws(' ', type, array_to_string(database, ','),
                                    array_to_string(user_name, ','), auth_method,
                                    array_to_string(options, ',')), '; ')
        FROM pg_hba_file_rules""")
    assert rules == "local all tracker peer map=tracker"


def as_user(user: pwd.struct_passwd):
    def demote() -> None:
        os.setgroups([])
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
    return demote


def psql_as(user: pwd.struct_passwd, pg: EmbeddedPostgres, db_user: str = "tracker"):
    return subprocess.run(
        [str(pg.bindir / "psql"), "-h", str(pg.socket_dir), "-p", str(pg.port), "-U", db_user,
         "-d", "postgres", "-tAc", "SELECT 1"],
        capture_output=True, text=True, preexec_fn=as_user(user), cwd="/",
        env={"PATH": "/usr/bin:/bin", "HOME": "/", "PGCONNECT_TIMEOUT": "5"},
    )


@pytest.fixture
def other_user():
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another local user")
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no `nobody` user on this machine")


def test_another_local_user_cannot_reach_the_socket(cluster, other_user):
    proc = psql_as(other_user, cluster)
    assert proc.returncode != 0
    assert "Permission denied" in proc.stderr, proc.stderr


def test_another_local_user_is_refused_even_with_the_directories_opened(cluster, other_user):
    """Peer authentication is the second wall: should someone loosen the modes, a user other
    than the tracker's is still refused, whichever database role it asks for."""
    sock = cluster.socket_dir / f".s.PGSQL.{cluster.port}"
    opened = [cluster.state_dir, cluster.socket_dir, sock]
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in opened}
    try:
        for p in opened:
            os.chmod(p, 0o777 if p == sock else 0o755)
        for role in ("tracker", "nobody", "postgres"):
            proc = psql_as(other_user, cluster, role)
            assert proc.returncode != 0, role
            assert ("Peer authentication failed" in proc.stderr
                    or "no pg_hba.conf entry" in proc.stderr), (role, proc.stderr)
    finally:
        for p, mode in modes.items():
            os.chmod(p, mode)


async def test_a_cluster_made_by_an_older_tracker_is_locked_down_at_start():
    tmp = tempfile.mkdtemp(prefix="tracker-upgrade-")
    os.chmod(tmp, 0o755)  # the cluster may run as the postgres user
    pg = EmbeddedPostgres(Path(tmp) / "pg", fast=True).start()
    try:
        pg.stop()
        # What clusters made before this change had: every local user trusted, over TCP too.
        (pg.data_dir / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\nlocal all all trust\n")
        pg.start()
        assert "trust" not in (pg.data_dir / "pg_hba.conf").read_text()
        assert await fetchval(pg.dsn, "SELECT count(*) FROM pg_hba_file_rules") == 1
        assert await fetchval(pg.dsn, "SHOW listen_addresses") == ""
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def test_a_state_dir_too_deep_for_a_socket_path_still_works():
    tmp = tempfile.mkdtemp(prefix="tracker-deep-")
    os.chmod(tmp, 0o755)
    deep = Path(tmp) / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    for p in (deep, deep.parent):
        os.chmod(p, 0o755)
    pg = EmbeddedPostgres(deep / "pg", fast=True)
    try:
        pg.start()
        assert not str(pg.socket_dir).startswith(tmp)  # a short private directory instead
        assert stat.S_IMODE(pg.socket_dir.stat().st_mode) == 0o700
        assert await fetchval(pg.dsn, "SELECT 1") == 1
        assert running_dsn(pg.state_dir) == pg.dsn
        socket_dir = pg.socket_dir
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    assert not socket_dir.exists()  # removed with the cluster
