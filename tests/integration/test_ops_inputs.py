"""What the operator endpoints make of inputs they did not expect: a status token that is not
UTF-8, and a newer release's migrations installed in place while a daemon runs."""
from __future__ import annotations

import asyncio
import shutil

from tests.integration.test_status_page import TOKEN, serving
from tests.postbacks_support import config_for, running, session
from tracker.config_types import Config, HttpConfig
from tracker.db import migrate


async def raw_get(url: str, header: bytes) -> bytes:
    """GET with one header sent as raw bytes (an HTTP client would refuse to encode it)."""
    host_port, path = url.removeprefix("http://").split("/", 1)
    host, port = host_port.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /" + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                 + header + b"\r\n\r\n")
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer.split(b"\r\n", 1)[0]


async def test_a_status_token_that_is_not_utf8_is_refused_not_an_error(pool):
    config = Config(http=HttpConfig(status_token=TOKEN))
    async with serving(pool, config) as (_session, url):
        for token in (b"\xff\xfe", TOKEN.encode()[:-1] + b"\xe9"):  # 500 before the fix
            assert await raw_get(url, b"Authorization: Bearer " + token) == b"HTTP/1.1 401 Unauthorized"
        assert (await raw_get(url, b"Authorization: Bearer " + TOKEN.encode())).startswith(b"HTTP/1.1 200")


async def test_a_newer_release_installed_in_place_does_not_make_the_running_daemon_unready(
        db_dsn, tmp_path, monkeypatch):
    # The daemon expects the migrations it started with. Newer files in sql/ (a package upgrade
    # before the restart) made every replica answer 503 "pending", and two files of one number
    # blamed the database.
    async with running(config_for(db_dsn)) as (tr, base), session() as s:
        ready = base + "/readyz"
        async with s.get(ready) as r:
            assert r.status == 200, await r.text()
        newer = tmp_path / "sql"
        shutil.copytree(migrate.sql_dir(), newer)
        (newer / "998_next_release.sql").write_text("SELECT 1;")
        (newer / "999_next_release.sql").write_text("SELECT 1;")
        (newer / "999_same_number.sql").write_text("SELECT 1;")
        monkeypatch.setattr(migrate, "sql_dir", lambda: newer)
        async with s.get(ready) as r:
            assert (r.status, await r.json()) == (200, {"status": "ready"})
        async with tr.pool.acquire() as conn:
            assert await migrate.pending(conn) == []
