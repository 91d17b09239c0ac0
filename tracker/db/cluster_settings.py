"""What the embedded cluster (tracker.db.embedded) is started with: its access rules, written
into its data directory at every start, and its server options. Only the tracker can reach it
(docs/design.md#contract-9): no TCP listener, a private socket directory, peer authentication of
the OS users named in pg_ident.conf."""
from __future__ import annotations

import shlex
from pathlib import Path

AUTH_MAP = "tracker"
DB_USER = "tracker"
MAX_CONNECTIONS = 200  # tracker.config keeps database.pool_max well below it


def access_rules(os_users: set[str]) -> dict[str, str]:
    """pg_hba.conf and pg_ident.conf, rewritten at every start so that a cluster made by an
    older tracker (which trusted every local user over TCP) is locked down as well."""
    hba = ("# Written by tracker.db.embedded at every start: edits are lost.\n"
           "# No TCP listener; the Unix socket's directory is private; and only the OS users\n"
           f"# in pg_ident.conf map '{AUTH_MAP}' may connect, as '{DB_USER}'.\n"
           f"local all {DB_USER} peer map={AUTH_MAP}\n")
    ident = "# Written by tracker.db.embedded at every start: edits are lost.\n" + "".join(
        f"{AUTH_MAP} {name} {DB_USER}\n" for name in sorted(os_users))
    return {"pg_hba.conf": hba, "pg_ident.conf": ident}


def server_options(socket_dir: Path, port: int, fast: bool) -> str:
    """postgres options, for pg_ctl -o (which hands them to /bin/sh: hence the quoting).
    `fast`: fsync off, for tests only."""
    settings = {
        "listen_addresses": "",  # no TCP at all
        "unix_socket_directories": str(socket_dir),
        "unix_socket_permissions": "0700",
        "max_connections": str(MAX_CONNECTIONS),
        "jit": "off",  # small queries; and the unit's MemoryDenyWriteExecute= forbids JIT code
        # A new WAL segment is created, not zero-filled: the zero-fill (16 MB written and
        # flushed while the WAL write lock is held) stalled every commit for about 50 ms
        # each 16 MB of WAL whenever no recycled segment was left (a young cluster; a burst
        # after a quiet spell): every 0.8 s at 6,000 postbacks/s (docs/performance.md).
        "wal_init_zero": "off",
        # Its own log: a file a weekday under pgdata/log, each emptied when its day comes
        # round again. Written with `pg_ctl -l`, it grew for as long as the tracker ran.
        "logging_collector": "on",
        "log_directory": "log",
        "log_filename": "postgresql-%a.log",
        "log_truncate_on_rotation": "on",
        "log_rotation_age": "1d",
        "log_rotation_size": "0",
    }
    if fast:
        settings |= {"fsync": "off", "full_page_writes": "off"}
    opts = [f"-p {port}"]
    opts += [f"-c {shlex.quote(f'{k}={v}')}" for k, v in settings.items()]
    return " ".join(opts)
