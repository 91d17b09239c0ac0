"""Why the daemon (tracker.app) cannot start, as one line naming the setting to look at: a
listener's address, the database's DSN or state directory. Never a traceback."""
from __future__ import annotations

from tracker.config import redact_dsn
from tracker.db import settings_refused
from tracker.db.state_dir import StateDirError
from tracker.logging import scrub

EXIT_CANNOT_START = 2  # as for a configuration error: the message names the setting


class StartError(Exception):
    """The daemon cannot start for a reason the operator can fix; `key` names the setting.
    `code` is the exit code: 2 for a setting to change, 1 for a database that may come back."""

    def __init__(self, key: str, value: str, reason: str, code: int = EXIT_CANNOT_START):
        super().__init__(f"{key} = {value}: {reason}")
        self.key, self.value, self.reason, self.code = key, value, reason, code


def database_start_error(e: BaseException, dsn: str | None, state_dir: str) -> StartError:
    """A database that could not be reached or used at start, as one line naming the setting
    (never a traceback; the DSN's password scrubbed). Only a database that refuses who we are (a
    wrong password or role, a database of that name missing) is a setting (exit 2: the unit does
    not restart us, RestartPreventExitStatus); anything else may pass (exit 1: restarted), a
    database read-only for a while (a standby behind the DSN after a failover) among them."""
    if isinstance(e, StateDirError):
        return StartError(e.key, e.value, e.reason, e.code)
    key, value = ("database.dsn", redact_dsn(dsn)) if dsn else ("database.state_dir", state_dir)
    setting = settings_refused(e)
    reason = scrub(f"{type(e).__name__}: {redact_dsn(str(e))}")[:300]
    return StartError(key, value, reason, EXIT_CANNOT_START if setting else 1)
