"""The embedded cluster's state directory (`database.state_dir`): which directory the tracker
may take, and make private to the cluster's OS user, and which it must refuse before changing
anything (an operator's directory, a shared one like /tmp, one the cluster's user cannot reach).
A directory the tracker creates holds MARKER; one made before the marker holds pgdata/PG_VERSION."""
from __future__ import annotations

import errno
import fcntl
import os
import pwd
import stat
from pathlib import Path


class StateDirError(RuntimeError):
    """``database.state_dir`` cannot be used, for a reason the operator can fix (shaped as
    tracker.start_error.StartError: the key, its value, the reason, the exit code: 2, a setting
    to change; 1, a filesystem full or failing, which may pass). Raised before anything is
    changed."""

    def __init__(self, value: Path | str, reason: str, code: int = 2):
        self.key, self.value, self.reason, self.code = "database.state_dir", str(value), reason, code
        super().__init__(f"{self.key} = {self.value}: {reason}")


# A filesystem full or failing: no setting to change, and it may pass (space freed). Taken for a
# setting (exit 2), the unit never restarted the daemon once space was freed.
PASSING_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO})


# Written into a state directory the tracker creates: the directory is the tracker's to make
# private (chown, chmod) at every start. One made before the marker existed holds pgdata/PG_VERSION.
MARKER = ".tracker-state-dir"
MARKER_NEW = MARKER + ".new"  # the marker being written (tracker.db.state_dir._write_marker)
MARKER_TEXT = ("This directory was created by the SMS delivery tracker (tracker.db.embedded) for its\n"
               "embedded PostgreSQL cluster. The tracker makes it private to the cluster's user.\n")


# Held (flock) by the one process that runs the embedded cluster, for as long as it runs it. The
# kernel lets go when that process dies, however it dies: a postmaster alive while the lock is
# free was left by a tracker that is gone.
OWNER_LOCK = ".tracker-owner.lock"


def own(path: Path) -> int:
    """Take OWNER_LOCK in ``path`` (its descriptor: closing it lets go), or refuse naming the
    process that holds it. Without it a second `tracker run` on one state_dir failed in pg_ctl's
    words ("another server might be running") with the exit code of a database that may come
    back, and was restarted every 2 s for ever."""
    try:
        fd = os.open(path / OWNER_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise StateDirError(path, f"cannot write in it: {e.strerror or e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 100, 0).decode(errors="replace").strip() or "a process"
        os.close(fd)
        raise StateDirError(path, f"its embedded cluster is run by another tracker process "
                            f"({holder}): give each daemon its own state_dir (or one "
                            "database.dsn), or stop the other first") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
    return fd


def state_dir_refusal(path: Path, user: pwd.struct_passwd | None) -> str | None:
    """Why ``path`` may not be the embedded cluster's state directory, or None: what it holds
    (_taken_refusal), or a directory above it the cluster's OS user (`user`; None: this process's)
    cannot pass through."""
    reason = _taken_refusal(path)
    if reason is not None:
        return reason
    return None if user is None else _unreachable(path, user)


def take_state_dir(path: Path, user: pwd.struct_passwd | None) -> None:
    """Create the state directory (with the marker), or check that an existing one may be
    taken: refused before anything is created, chowned or chmodded. `user`: the cluster's OS
    user (None: this process's)."""
    reason = state_dir_refusal(path, user)
    if reason is not None:
        raise StateDirError(path, reason)
    try:
        if not path.exists():
            path.mkdir(parents=True)
        elif not (path / MARKER).is_file():
            _check_empty_dir_owner(path, user)
        _write_marker(path / MARKER)
    except OSError as e:
        raise StateDirError(path, f"cannot create it or write in it: {e.strerror or e}",
                            1 if e.errno in PASSING_ERRNOS else 2) from None


def _write_marker(marker: Path) -> None:
    """The marker, written only when it is not there as it should be, and whole or not at all:
    rewritten at every start, a start on a full disk left it empty."""
    try:
        if marker.read_text() == MARKER_TEXT:
            return
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    new = marker.with_name(MARKER_NEW)
    try:
        new.write_text(MARKER_TEXT)
        new.replace(marker)
    except OSError:
        new.unlink(missing_ok=True)  # left behind, it was a file not the tracker's: exit 2
        raise


def _check_empty_dir_owner(path: Path, user: pwd.struct_passwd | None) -> None:
    """An existing directory the tracker did not create (empty, or a cluster from before the
    marker) is taken only when it is ours already: owned by this process's user or the
    cluster's. Another user's directory is not handed to the cluster's user."""
    owner = path.stat().st_uid
    mine = {os.geteuid()} | ({user.pw_uid} if user is not None else set())
    if owner not in mine:
        raise StateDirError(path, f"is owned by user id {owner}, and the tracker does not "
                            "take over another user's directory: name a directory that does not "
                            "exist yet, or give this one to the tracker's user (chown)")


def _unreachable(path: Path, user: pwd.struct_passwd) -> str | None:
    for parent in [path, *path.parents]:
        if parent.exists():  # what does not exist yet is created for it
            st = parent.stat()
            if not (st.st_mode & 0o001 or st.st_uid == user.pw_uid):
                return (f"the `{user.pw_name}` user, which runs the cluster, cannot reach it ({parent} "
                        "is not searchable by others): choose another directory, e.g. under /var/lib")
    return None


def _taken_refusal(path: Path) -> str | None:
    """Why an existing ``path`` may not be the embedded cluster's state directory, or None.

    Taken: one the tracker made (the marker, or pgdata/PG_VERSION from before the marker), and an
    empty directory. Refused: anything else holding files (the tracker would make them the
    cluster user's, mode 0700), a shared directory like /tmp, a symbolic link, a non-directory.
    A path that does not exist is fine: the tracker creates it."""
    if path.is_symlink():
        return "is a symbolic link; the embedded cluster needs a real directory there: name the directory itself"
    if not path.exists():
        return None
    if not path.is_dir():
        return "is not a directory"
    if (path / MARKER).is_file() or (path / "pgdata" / "PG_VERSION").is_file():
        return None
    try:  # (a marker being written when a start was cut short, a full disk: the tracker's own)
        entries = sorted(e for e in os.listdir(path) if e != MARKER_NEW)
    except OSError as e:
        return f"cannot be read: {e.strerror or e}"
    if entries:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        return (f"holds files the tracker did not make ({shown}), and the tracker would make the directory "
                "private to the cluster's user: name a new or empty directory for the embedded cluster")
    mode = path.stat().st_mode
    if mode & (stat.S_IWOTH | stat.S_ISVTX):
        return ("is a shared directory (writable by every user, like /tmp): name a directory of the "
                "tracker's own, e.g. one inside it that does not exist yet")
    return None
