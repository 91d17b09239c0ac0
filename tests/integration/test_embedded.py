"""The embedded cluster never leaves a half-started server behind."""
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tracker.db.embedded import EmbeddedError, EmbeddedPostgres


class NoDatabase(EmbeddedPostgres):
    def _ensure_database(self) -> None:
        raise EmbeddedError("could not create the database")


def test_failed_start_stops_the_cluster():
    tmp = tempfile.mkdtemp(prefix="tracker-embedded-")
    os.chmod(tmp, 0o755)
    try:
        pg = NoDatabase(Path(tmp) / "s", fast=True)
        with pytest.raises(EmbeddedError, match="could not create"):
            pg.start()
        assert (pg.data_dir / "PG_VERSION").exists()  # the server did start...
        assert not (pg.data_dir / "postmaster.pid").exists()  # ...and was stopped again
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
