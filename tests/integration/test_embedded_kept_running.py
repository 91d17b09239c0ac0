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
            f"(its log: {pg.data_dir / 'log'})"]
        assert not pg.running() and not version.exists()  # nothing made anew

        (pg.data_dir / "PG_VERSION.away").rename(version)  # the operator puts it back

        async def ready() -> bool:
            return (await readyz(s, base))[0] == 200

        await wait_until(ready, 60, "ready again once the cluster is started again")
        assert pg.running()
        assert await tr.pool.fetchval("SELECT vendor_ref FROM tracker.messages") == "kept-1"
        assert await metric_value(base, RESTARTS) >= 2  # each time it was found stopped
