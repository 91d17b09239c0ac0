"""Secrets kept in files (`*_file` keys, and the sinks' `secrets_file`): where a name points and
what reading it gives. Imports nothing of tracker.config, so that tracker.sinks.settings, which
the loader itself imports, can use it too."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping


def secret_path(name: str, env: Mapping[str, str], config_path: str | None) -> Path:
    """A relative name is in systemd's CREDENTIALS_DIRECTORY when the unit loads credentials
    (LoadCredential=), else beside the configuration file."""
    if "\0" in name:  # expanduser() would raise ValueError; read_secret() says what is wrong
        return Path(name)
    p = Path(name).expanduser()
    if not p.is_absolute():
        creds = env.get("CREDENTIALS_DIRECTORY")
        if creds:
            p = Path(creds) / p
        elif config_path is not None:
            p = Path(config_path).resolve().parent / p
    return p


def read_secret(p: Path) -> tuple[str | None, str]:
    """(the file's text, "") or (None, why it cannot be read)."""
    if "\0" in str(p):  # open() would raise ValueError: no file name holds one
        return None, "the file name contains a NUL character, which no file name may"
    try:
        return p.read_text(encoding="utf-8"), ""
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return None, e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
