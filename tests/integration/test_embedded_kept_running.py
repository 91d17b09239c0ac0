"""The embedded cluster is the daemon's own: stopped behind its back (the OOM killer, `pg_ctl
stop` by hand), it is started again (tracker.db.keeper), counted, and /readyz says in words what
is wrong meanwhile. One whose data directory is gone is not made anew: an empty database would
lose every message without a word."""
from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

from tests.postbacks_support import metric_value, named, readyz, running, session
from tests.sinks_support import wait_until
from tracker.config_types import Config, DatabaseConfig, HttpConfig
from tracker.db import keeper
from tracker.db.embedded import EmbeddedError, EmbeddedPostgres

RESTARTS = "tracker_embedded_database_restarts_total"


@pytest.fixture
def state_dir():
    tmp = tempfile.mkdtemp(prefix="tracker-kept-")
    os.chmod(tmp, 0o755)  # the cluster may run as the postgres user
    yield Path(tmp) / "state"
    shutil.rmtree(tmp, ignore_errors=True)


async def test_a_stopped_embedded_cluster_is_started_again_and_never_made_anew(state_dir):
    cfg = Config(database=DatabaseConfig(state_dir=str(state_dir), pool_min=1, pool_max=4),
                 http=HttpConfig(listen="127.0.0.1:0"), vendors={})
    async with running(cfg) as (tr, base), session() as s:
        pg = tr.embedded
        await tr.pool.execute("INSERT INTO tracker.messages (vendor, vendor_ref, state)"
                              " VALUES ('skycore', 'kept-1', 'sent')")
        assert await metric_value(base, RESTARTS) == 0
        # Its data directory taken away first (a running server does not read PG_VERSION again),
        # then the cluster stopped: the keeper must not make a new, empty one.
        version = pg.data_dir / "PG_VERSION"
        version.rename(pg.data_dir / "PG_VERSION.away")
        os.kill(int((pg.data_dir / "postmaster.pid").read_text().split()[0]), signal.SIGQUIT)

        async def says_why() -> bool:
            status, body = await readyz(s, base)
            return status == 503 and any("is gone" in r for r in named(body, "database:embedded"))

        await wait_until(says_why, 30, "/readyz naming the data directory gone")
        status, body = await readyz(s, base)
        assert named(body, "database") == [
            f"the embedded cluster in {pg.state_dir} is not running: the tracker starts it again "
            f"(its logs: {pg.data_dir / 'log'}, and {pg.state_dir / 'postgres.log'} for a start "
            "that failed)"]
        assert not pg.running() and not version.exists()  # nothing made anew
        failed = 'tracker_component_failures_total{component="database:embedded"}'
        await wait_until(lambda: _at_least(base, failed, 2), 60, "two starts failed")

        (pg.data_dir / "PG_VERSION.away").rename(version)  # the operator puts it back

        async def ready() -> bool:
            return (await readyz(s, base))[0] == 200

        await wait_until(ready, 60, "ready again once the cluster is started again")
        assert pg.running()
        assert await tr.pool.fetchval("SELECT vendor_ref FROM tracker.messages") == "kept-1"
        # One outage, however many starts failed in it (the supervisor ran the keeper anew
        # after each); a second one is counted again.
        assert await metric_value(base, RESTARTS) == 1
        os.kill(int((pg.data_dir / "postmaster.pid").read_text().split()[0]), signal.SIGQUIT)
        await wait_until(lambda: _restarts_are(base, 2), 30, "the second outage counted")
        await wait_until(ready, 60, "ready again after the second outage")


async def _restarts_are(base, n: int) -> bool:
    return await metric_value(base, RESTARTS) == n


async def _at_least(base, series: str, n: int) -> bool:
    return await metric_value(base, series) >= n


def test_a_start_that_fails_says_what_the_server_said_and_a_full_filesystem_is_named(state_dir, monkeypatch):
    """pg_ctl says only "Examine the log output"; on a full disk the reason ("could not write
    lock file") is in postgres.log alone, and the server's own log holds nothing of it."""
    pg = EmbeddedPostgres(state_dir, fast=True)
    pg.start()
    pg.stop()
    with open(pg.data_dir / "postgresql.auto.conf", "a") as f:
        f.write("no_such_setting = 1\n")  # a start that fails, as a full disk's does
    with pytest.raises(EmbeddedError) as e:
        pg.start()
    assert "postgres.log: " in str(e.value) and "no_such_setting" in str(e.value), e.value
    monkeypatch.setattr(keeper, "LOW_SPACE_BYTES", 2 ** 62)  # any filesystem is full by this
    assert "KiB free: free space there (never in pgdata)" in keeper.not_running(pg)
    monkeypatch.undo()
    assert "free" not in keeper.not_running(pg)
