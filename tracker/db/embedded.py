"""A private PostgreSQL cluster started from the machine's PostgreSQL binaries.

Used when no database is configured (`tracker run` on the embedded default) and by the test
suite. PostgreSQL refuses to run as root, so as root the cluster runs as the `postgres` system
user (which must be able to reach the data directory).

Only the tracker can reach it (docs/design.md#contract-9): there is no TCP listener; the Unix socket lives in a
directory (`<state_dir>/run`) that only the cluster's OS user can enter (and root); and
pg_hba.conf, rewritten at every start, admits only peer-authenticated local connections from
the OS users in pg_ident.conf: the tracker's own user and the cluster's. No password exists, so
none can leak through the DSN or the logs.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from tracker.db.cluster_settings import DB_USER, access_rules, server_options
from tracker.db.state_dir import own, state_dir_refusal, take_state_dir

INSTALL_HINT = (
    "no PostgreSQL server binaries (initdb, pg_ctl) found on PATH or under "
    "/usr/lib/postgresql/*/bin; install them, e.g. `apt-get install postgresql` on Debian/Ubuntu, "
    "or set database.dsn to use an existing server"
)


class EmbeddedError(RuntimeError):
    pass


def find_bindir() -> Path:
    """The directory holding initdb, pg_ctl, postgres and psql: the newest Debian-style install
    first (it has them all together), else wherever initdb is on PATH."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    raise EmbeddedError(INSTALL_HINT)


DEFAULT_PORT = 5432  # names the socket file only: the directory is private, so no clash
SOCKET_DIR = "run"
# A Unix socket path must fit sun_path: 108 bytes with the terminating NUL.
MAX_SOCKET_PATH = 107


def socket_dsn(socket_dir: Path | str, port: int, database: str) -> str:
    """A libpq/asyncpg URL for a Unix socket in ``socket_dir``: the directory, percent-encoded,
    stands where a host name would, so the URL keeps the usual shape (the database name last)."""
    return f"postgresql://{DB_USER}@{quote(str(socket_dir), safe='')}:{port}/{database}"


def running_dsn(state_dir: Path | str, database: str = "tracker") -> str | None:
    """The DSN of the embedded cluster under ``state_dir`` if one is running (another process,
    e.g. the daemon, started it): its port and socket directory come from postmaster.pid. A pid
    file whose process is gone (a postmaster killed: SIGKILL, OOM, power loss) is None: the
    caller starts the cluster, and pg_ctl clears the stale file (`tracker migrate`, run by the
    unit before every start, failed for ever on a dead socket)."""
    pid_file = Path(state_dir).absolute() / "pgdata" / "postmaster.pid"
    try:
        lines = pid_file.read_text().splitlines()
        pid, port, socket_dir = int(lines[0]), int(lines[3]), lines[4].split(",")[0].strip()
    except (OSError, IndexError, ValueError):
        return None
    if not _alive(pid):
        return None
    return socket_dsn(socket_dir, port, database) if socket_dir.startswith("/") else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's (the cluster's, when we are not root)
        return True
    return pid > 0


def _os_user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        raise EmbeddedError(
            f"user id {uid} has no name in the password database; PostgreSQL's peer "
            "authentication needs one: run the tracker as a named user"
        ) from None


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged user to run the cluster as, or None to run as ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise EmbeddedError(
            "running as root, and PostgreSQL refuses to run as root: create an unprivileged "
            "`postgres` system user (installing the postgresql package does) or run as another user"
        ) from None


def check_state_dir(path: Path) -> str | None:
    """What `check-config` can say of ``path`` whoever runs it: whether the tracker may take it
    (what it holds, what it is; tracker.db.state_dir). Whether the cluster's OS user can reach it
    depends on the user the service runs as (check-config is often run by another), so that is
    checked when the cluster starts, before anything is made (a check here refused the default
    ./var/tracker under a working directory private to the one who ran check-config)."""
    return state_dir_refusal(path, None)


@dataclass
class EmbeddedPostgres:
    """`with EmbeddedPostgres(dir) as pg: pg.dsn` or start()/stop()."""

    state_dir: Path
    fast: bool = False  # fsync off: for tests only
    port: int = DEFAULT_PORT
    database: str = "tracker"

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).absolute()
        self.data_dir = self.state_dir / "pgdata"
        self.bindir = find_bindir()
        self.user = _run_as()
        self.socket_dir = self.state_dir / SOCKET_DIR
        self._own_tmp_socket_dir: Path | None = None  # made by us when state_dir is too deep
        self._owner: int | None = None  # state_dir.OWNER_LOCK's descriptor, while we run the cluster
        self.orphan_stopped: int | None = None  # a postmaster nobody ran, stopped by start()

    @property
    def dsn(self) -> str:
        """Unix socket, peer authentication: no host, no password."""
        return socket_dsn(self.socket_dir, self.port, self.database)

    @property
    def start_log(self) -> Path:
        """Where the server writes until its own log (pgdata/log) is open, and what a start
        that fails says: a full disk's "could not write lock file" is only here."""
        return self.state_dir / "postgres.log"

    def start_log_tail(self, lines: int = 3) -> str:
        try:
            with open(self.start_log, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
                tail = f.read().decode("utf-8", "replace").splitlines()
        except OSError as e:
            return f"unreadable ({e.strerror or e})"
        return " | ".join(line.strip() for line in tail[-lines:] if line.strip()) or "empty"

    def _cmd(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        kwargs: dict = {}
        if self.user is not None:
            uid, gid = self.user.pw_uid, self.user.pw_gid

            def demote() -> None:
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)

            kwargs["preexec_fn"] = demote
            kwargs["env"] = {**os.environ, "HOME": self.user.pw_dir, "USER": self.user.pw_name}
        proc = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            capture_output=True, text=True, cwd=str(self.state_dir), **kwargs,
        )
        if check and proc.returncode != 0:
            raise EmbeddedError(f"{args[0]} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        return proc

    def _prepare_dirs(self) -> None:
        take_state_dir(self.state_dir, self.user)  # refused (StateDirError) before anything is made or changed
        self._make_private(self.state_dir)
        self.socket_dir = self._choose_socket_dir()
        self._make_private(self.socket_dir)

    def _make_private(self, path: Path) -> None:
        """Owned by the cluster's OS user, mode 0700: nobody else (but root) may enter."""
        if path.is_symlink():
            raise EmbeddedError(f"{path} is a symbolic link; the embedded cluster needs a real "
                                "directory there: remove the link")
        try:
            path.mkdir(mode=0o700, exist_ok=True)
            if self.user is not None:
                os.chown(path, self.user.pw_uid, self.user.pw_gid)
            os.chmod(path, 0o700)
        except OSError as e:
            raise EmbeddedError(f"cannot make {path} private to the embedded cluster's user: "
                                f"{e.strerror or e}") from None

    def _choose_socket_dir(self) -> Path:
        """``<state_dir>/run``, or a fresh private directory under /tmp when that path is too
        long for a Unix socket (postmaster.pid records where it is, see running_dsn)."""
        preferred = self.state_dir / SOCKET_DIR
        if len(os.fsencode(preferred / f".s.PGSQL.{self.port}")) <= MAX_SOCKET_PATH:
            return preferred
        if self._own_tmp_socket_dir is None:
            self._own_tmp_socket_dir = Path(tempfile.mkdtemp(prefix="tracker-pg-", dir="/tmp"))
        return self._own_tmp_socket_dir

    def start(self) -> "EmbeddedPostgres":
        self._prepare_dirs()
        took = self._owner is None
        if took:
            self._owner = own(self.state_dir)
        try:
            return self._start_owned()
        except BaseException:
            if took:
                self._disown()
            raise

    def _disown(self) -> None:
        if self._owner is not None:
            os.close(self._owner)  # the flock goes with it
            self._owner = None

    def _start_owned(self) -> "EmbeddedPostgres":
        # A postmaster that runs while nobody owns the cluster was left by a tracker that is
        # gone (SIGKILL; pg_ctl's server outlives it): stopped, and started again by us with our
        # access rules. Before, every start failed on it until somebody found it by hand.
        pid = self._postmaster_pid()
        if pid is not None and _alive(pid):
            self._cmd("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w", check=False)
            self.orphan_stopped = pid
        if not (self.data_dir / "PG_VERSION").exists():
            self._cmd("initdb", "-D", str(self.data_dir), "-U", DB_USER,
                      "--auth-local=peer", "--auth-host=reject",
                      "-E", "UTF8", "--locale=C", *(["--no-sync"] if self.fast else []))
        os_users = {_os_user_name(os.geteuid())} | ({self.user.pw_name} if self.user else set())
        for name, text in access_rules(os_users).items():
            path = self.data_dir / name
            path.write_text(text)
            if self.user is not None:
                os.chown(path, self.user.pw_uid, self.user.pw_gid)
            os.chmod(path, 0o600)
        try:
            self._cmd("pg_ctl", "start", "-D", str(self.data_dir), "-w", "-t", "60",
                      "-l", str(self.start_log),
                      "-o", server_options(self.socket_dir, self.port, self.fast))
        except EmbeddedError as e:  # pg_ctl says "Examine the log output": say what it holds
            raise EmbeddedError(f"{e}; {self.start_log.name}: {self.start_log_tail()}") from None
        try:
            self._ensure_database()
        except BaseException:
            self.stop()  # never leave a half-started cluster behind
            raise
        return self

    def _ensure_database(self) -> None:
        for _ in range(50):
            proc = self._cmd("psql", "-h", str(self.socket_dir), "-p", str(self.port), "-U", DB_USER,
                             "-d", "postgres", "-tAc",
                             f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'",
                             check=False)
            if proc.returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise EmbeddedError(f"the embedded cluster did not accept connections: {proc.stderr}")
        if proc.stdout.strip() != "1":
            self._cmd("createdb", "-h", str(self.socket_dir), "-p", str(self.port), "-U", DB_USER,
                      self.database)

    def running(self) -> bool:
        """Whether its postmaster runs (postmaster.pid names a live process). A pid file that
        cannot be read for another reason (EMFILE: the process's descriptors used up) raises:
        that says nothing of the cluster, and taken for "stopped" it was restarted for nothing."""
        pid = self._postmaster_pid()
        return pid is not None and _alive(pid)

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, IndexError, ValueError):  # none, or one being written
            return None

    def stop(self) -> None:
        """Stop the cluster we run, or one nobody runs (a killed demo's); one that another live
        process runs is left to it (StateDirError)."""
        if self._owner is None and self.state_dir.is_dir():
            self._owner = own(self.state_dir)
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self._cmd("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w", check=False)
        finally:
            self._disown()
        if self._own_tmp_socket_dir is not None:
            shutil.rmtree(self._own_tmp_socket_dir, ignore_errors=True)
            self._own_tmp_socket_dir = None

    def __enter__(self) -> "EmbeddedPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
