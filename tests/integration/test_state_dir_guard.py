"""database.state_dir: the embedded cluster makes private (chown to its user, chmod 0700) only a
directory the tracker created, never one that holds someone else's files (/var/lib, /tmp, the
working directory of `state_dir = ""`), and refuses such a one before changing anything."""
from __future__ import annotations

import errno
import io
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from tracker.config.report import check_config
from tracker.db import embedded
from tracker.db.embedded import EmbeddedPostgres, check_state_dir
from tracker.db.state_dir import MARKER, MARKER_NEW, StateDirError, state_dir_refusal, take_state_dir
from tracker.start_error import database_start_error


@pytest.fixture
def base():
    tmp = Path(tempfile.mkdtemp(prefix="tracker-statedir-"))
    os.chmod(tmp, 0o755)  # the cluster may run as the postgres user
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def snapshot(path: Path) -> tuple:
    st = path.stat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), sorted(os.listdir(path))


# ---- which directories may be taken


def test_which_existing_directories_are_taken(base):
    assert check_state_dir(base / "new") is None  # created by the tracker
    (base / "empty").mkdir()
    assert check_state_dir(base / "empty") is None
    ours = base / "ours"
    ours.mkdir()
    (ours / MARKER).write_text("")
    (ours / "postgres.log").write_text("")
    assert check_state_dir(ours) is None
    older = base / "older"  # made by a tracker from before the marker: a cluster in pgdata
    (older / "pgdata").mkdir(parents=True)
    (older / "pgdata" / "PG_VERSION").write_text("16\n")
    (older / "postgres.log").write_text("")
    assert check_state_dir(older) is None


def test_which_existing_paths_are_refused(base):
    operators = base / "operators"
    operators.mkdir()
    (operators / "notes.txt").write_text("mine\n")
    assert "holds files the tracker did not make (notes.txt)" in check_state_dir(operators)
    (base / "pgdata-only-dir").mkdir()
    (base / "pgdata-only-dir" / "pgdata").mkdir()  # no PG_VERSION: not a cluster
    assert "holds files the tracker did not make (pgdata)" in check_state_dir(base / "pgdata-only-dir")
    shared = base / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    assert "shared directory" in check_state_dir(shared)
    (base / "link").symlink_to(base / "empty-target", target_is_directory=True)
    (base / "empty-target").mkdir()
    assert "symbolic link" in check_state_dir(base / "link")
    (base / "file").write_text("")
    assert check_state_dir(base / "file") == "is not a directory"


# ---- refused at start, before anything is changed


@pytest.mark.parametrize("what", ["operator's files", "shared", "another user's empty directory"])
def test_a_refused_state_dir_is_left_as_it_was(base, monkeypatch, what):
    target = base / "target"
    target.mkdir()
    if what == "operator's files":
        (target / "notes.txt").write_text("the operator's\n")
        os.chmod(target, 0o755)
    elif what == "shared":
        os.chmod(target, 0o1777)
    else:
        if os.geteuid() != 0:
            pytest.skip("needs root to give the directory to another user")
        os.chown(target, 65534, 65534)  # nobody
    before = snapshot(target)

    def forbidden(*args, **kwargs):
        raise AssertionError(f"changed {args[0]} before refusing")

    pg = EmbeddedPostgres(target, fast=True)
    monkeypatch.setattr(embedded.os, "chown", forbidden)
    monkeypatch.setattr(embedded.os, "chmod", forbidden)
    with pytest.raises(StateDirError) as ei:
        pg.start()
    monkeypatch.undo()
    assert snapshot(target) == before
    message = str(ei.value)
    assert message.startswith(f"database.state_dir = {target}: ") and "\n" not in message
    assert ei.value.key == "database.state_dir" and ei.value.value == str(target)


# ---- taken: a real cluster starts


def test_a_directory_the_tracker_creates_is_marked_private_and_taken_again(base):
    state = base / "pg"
    pg = EmbeddedPostgres(state, fast=True)
    try:
        pg.start()
        assert (state / MARKER).is_file()
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        pg.stop()
        (state / MARKER).unlink()  # as a tracker from before the marker left it
        pg.start()  # pgdata/PG_VERSION: still ours
        assert (state / MARKER).is_file()
    finally:
        pg.stop()


def test_an_empty_directory_of_our_own_is_taken(base):
    """As `tracker demo` and systemd's StateDirectory= make it: empty, owned by this user."""
    state = base / "empty"
    state.mkdir()
    pg = EmbeddedPostgres(state, fast=True)
    try:
        pg.start()
        assert (state / MARKER).is_file() and (state / "pgdata" / "PG_VERSION").is_file()
    finally:
        pg.stop()


def test_check_config_refuses_the_state_dir_run_would_refuse(base):
    foreign = base / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("the operator's\n")
    out = io.StringIO()
    assert check_config(None, {"TRACKER_DATABASE__STATE_DIR": str(foreign)}, out) == 2
    assert f"database.state_dir = {foreign}: holds files the tracker did not make (notes.txt)" in out.getvalue()
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    out = io.StringIO()
    assert check_config(None, {"TRACKER_DATABASE__STATE_DIR": str(base / "new")}, out) == 0
    assert not (base / "new").exists()  # checked, not created


def test_a_state_dir_the_cluster_user_cannot_reach_is_refused_before_anything_is_made(base, monkeypatch):
    # It was an EmbeddedError raised after the directory and its marker were made (exit 1).
    import pwd
    monkeypatch.setattr(embedded, "_run_as", lambda: pwd.getpwnam("nobody"))  # the cluster's user
    private = base / "private"
    private.mkdir()
    os.chmod(private, 0o700)
    target = private / "s"
    assert "cannot reach it" in state_dir_refusal(target, pwd.getpwnam("nobody"))
    with pytest.raises(StateDirError, match="cannot reach it"):
        EmbeddedPostgres(target, fast=True).start()
    assert not target.exists()
    # check-config, often run by another user than the service, says nothing of who can reach it
    assert check_state_dir(target) is None


# ---- a full disk


@pytest.mark.parametrize("errno_, code", [(errno.ENOSPC, 1), (errno.EDQUOT, 1), (errno.EIO, 1),
                                          (errno.EACCES, 2)])
def test_a_full_disk_at_start_is_an_exit_that_is_restarted_and_leaves_the_marker_whole(base, monkeypatch, errno_, code):
    """The marker was rewritten at every start: on a full disk that left it empty, and the
    failure was taken for a setting (exit 2), which the unit never restarts once space is freed."""
    state = base / "pg"
    take_state_dir(state, None)
    marker = (state / MARKER).read_text()
    real_write = Path.write_text

    def full(self, *args, **kwargs):  # as a full disk does: the file made, nothing written
        real_write(self, "")
        raise OSError(errno_, os.strerror(errno_))

    monkeypatch.setattr(Path, "write_text", full)
    take_state_dir(state, None)  # the marker as it should be: nothing to write
    (state / MARKER).write_bytes(b"an older marker\n")  # one that must be written again
    with pytest.raises(StateDirError) as e:
        take_state_dir(state, None)
    assert e.value.code == code and os.strerror(errno_) in e.value.reason
    assert database_start_error(e.value, None, str(state)).code == code
    assert (state / MARKER).read_bytes() == b"an older marker\n"  # not left empty
    assert sorted(os.listdir(state)) == [MARKER]  # nothing else left behind
    monkeypatch.undo()
    take_state_dir(state, None)  # space freed: taken again, the marker whole
    assert (state / MARKER).read_text() == marker


def test_a_first_start_on_a_full_disk_leaves_a_directory_the_next_start_takes(base, monkeypatch):
    """The unit's StateDirectory= is made empty: a first start on a full disk left the marker
    half made (`.new`), and the next start refused the directory as holding files the tracker
    did not make (exit 2, never restarted)."""
    state = base / "empty"
    state.mkdir()
    (state / MARKER_NEW).write_bytes(b"")  # as a start killed while writing it leaves it
    assert state_dir_refusal(state, None) is None
    real_write = Path.write_text

    def full(self, *args, **kwargs):
        real_write(self, "")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(StateDirError) as e:
        take_state_dir(state, None)
    assert e.value.code == 1
    monkeypatch.undo()
    assert state_dir_refusal(state, None) is None
    take_state_dir(state, None)
    assert (state / MARKER).is_file() and not (state / MARKER_NEW).exists()
