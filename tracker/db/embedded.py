"""A private PostgreSQL cluster started from the machine's PostgreSQL binaries.

Used when no database is configured (`tracker run` on the embedded default) and by the test
suite. PostgreSQL refuses to run as root, so as root the cluster runs as the `postgres` system
user (which must be able to reach the data directory).
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


@dataclass
class EmbeddedPostgres:
    """`with EmbeddedPostgres(dir) as pg: pg.dsn` or start()/stop()."""

    state_dir: Path
    fast: bool = False  # fsync off: for tests only
    port: int = 0
    database: str = "tracker"

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).absolute()
        self.data_dir = self.state_dir / "pgdata"
        self.bindir = find_bindir()
        self.user = _run_as()

    @property
    def dsn(self) -> str:
        return f"postgresql://tracker@127.0.0.1:{self.port}/{self.database}"

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
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.user is None:
            return
        # The postgres user must be able to reach the state directory.
        for parent in [self.state_dir, *self.state_dir.parents]:
            st = parent.stat()
            if not (st.st_mode & 0o001 or st.st_uid == self.user.pw_uid):
                raise EmbeddedError(
                    f"the `postgres` user cannot reach {self.state_dir} ({parent} is not "
                    "searchable by others): choose another database.state_dir, e.g. under /var/lib"
                )
        os.chown(self.state_dir, self.user.pw_uid, self.user.pw_gid)
        os.chmod(self.state_dir, 0o700)

    def start(self) -> "EmbeddedPostgres":
        self._prepare_dirs()
        if not (self.data_dir / "PG_VERSION").exists():
            self._cmd("initdb", "-D", str(self.data_dir), "-U", "tracker", "--auth=trust",
                      "-E", "UTF8", "--locale=C", *(["--no-sync"] if self.fast else []))
        if not self.port:
            self.port = _free_port()
        opts = [f"-p {self.port}", "-c listen_addresses=127.0.0.1",
                f"-k {self.state_dir}", "-c max_connections=200"]
        if self.fast:
            opts += ["-c fsync=off", "-c full_page_writes=off"]
        self._cmd("pg_ctl", "start", "-D", str(self.data_dir), "-w", "-t", "60",
                  "-l", str(self.state_dir / "postgres.log"), "-o", " ".join(opts))
        try:
            self._ensure_database()
        except BaseException:
            self.stop()  # never leave a half-started cluster behind
            raise
        return self

    def _ensure_database(self) -> None:
        for _ in range(50):
            proc = self._cmd("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "tracker",
                             "-d", "postgres", "-tAc",
                             f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'",
                             check=False)
            if proc.returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise EmbeddedError(f"the embedded cluster did not accept connections: {proc.stderr}")
        if proc.stdout.strip() != "1":
            self._cmd("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "tracker",
                      self.database)

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._cmd("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w", check=False)

    def __enter__(self) -> "EmbeddedPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
