"""deploy/tracker.service and config/tracker.example.toml agree: every secret the example config
reads from a `<key>_file` is a credential the unit loads, and every credential the unit loads is
read by the config. Otherwise following deploy/OPERATIONS.md fails at start."""
from __future__ import annotations

import io
import re
import tomllib
from pathlib import Path

from tracker.config import check_config

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "tracker.service"
EXAMPLE = ROOT / "config" / "tracker.example.toml"
CREDENTIALS_DIR = "/etc/tracker/credentials"  # where deploy/OPERATIONS.md puts them

_LOAD_CREDENTIAL = re.compile(r"^(?P<off>#\s*)?LoadCredential=(?P<name>[^:\s]+):(?P<path>\S+)\s*$")
_COMMENTED_FILE_KEY = re.compile(r'^\s*#\s*(?P<key>\w+_file)\s*=\s*"(?P<name>[^"]+)"')


def unit_credentials() -> tuple[dict[str, str], dict[str, str]]:
    """(loaded, commented out): credential name -> source path."""
    loaded: dict[str, str] = {}
    commented: dict[str, str] = {}
    for line in UNIT.read_text().splitlines():
        m = _LOAD_CREDENTIAL.match(line.strip())
        if m:
            (commented if m.group("off") else loaded)[m.group("name")] = m.group("path")
    return loaded, commented


def config_credentials() -> tuple[dict[str, str], dict[str, str]]:
    """(read, commented out): credential name -> the dotted `<key>_file` naming it."""
    read: dict[str, str] = {}
    data = tomllib.loads(EXAMPLE.read_text())
    tables = {"database": data.get("database", {}),
              **{f"vendors.{v}": t for v, t in data.get("vendors", {}).items()}}
    for prefix, table in tables.items():
        for key, value in table.items():
            if key.endswith("_file"):
                read[value] = f"{prefix}.{key}"
    commented = {m.group("name"): m.group("key")
                 for line in EXAMPLE.read_text().splitlines()
                 if (m := _COMMENTED_FILE_KEY.match(line))}
    return read, commented


def test_every_credential_the_config_reads_is_loaded_by_the_unit_and_vice_versa():
    loaded, _ = unit_credentials()
    read, _ = config_credentials()
    assert read, "the example config names no credentials: the parser is broken"
    missing = {name: key for name, key in read.items() if name not in loaded}
    unused = sorted(set(loaded) - set(read))
    assert not missing, f"the example config reads credentials the unit does not load: {missing}"
    assert not unused, f"the unit loads credentials the example config never reads: {unused}"


def test_optional_credentials_are_commented_out_in_both():
    _, unit_optional = unit_credentials()
    _, config_optional = config_credentials()
    assert set(unit_optional) == set(config_optional) == {"database-dsn", "twilio-auth-token",
                                                          "twilio-postback-token", "twilio-shared-key",
                                                          "skycore-postback-token-old"}


def test_credentials_come_from_where_the_guide_says():
    loaded, optional = unit_credentials()
    for name, path in {**loaded, **optional}.items():
        assert path == f"{CREDENTIALS_DIR}/{name}", (name, path)
    guide = (ROOT / "deploy" / "OPERATIONS.md").read_text()
    assert f"CREDENTIALS_DIRECTORY={CREDENTIALS_DIR}" in guide  # check-config finds them as systemd will


def test_the_example_config_starts_with_exactly_the_units_credentials(tmp_path):
    """What systemd does at start: copy each loaded credential into $CREDENTIALS_DIRECTORY."""
    loaded, _ = unit_credentials()
    creds = tmp_path / "credentials"
    creds.mkdir()
    for name in loaded:
        (creds / name).write_text(f"{name}-0123456789abcdef\n")
    out = io.StringIO()
    assert check_config(str(EXAMPLE), env={"CREDENTIALS_DIRECTORY": str(creds)}, out=out) == 0, out.getvalue()


def test_twilio_as_the_comments_say_starts_with_the_unit_lines_uncommented(tmp_path):
    """Twilio is disabled in the example; enabling it as its comments say (its two `_file` lines
    and the unit's two LoadCredential= lines uncommented) gives a configuration that starts."""
    loaded, optional = unit_credentials()
    creds = tmp_path / "credentials"
    creds.mkdir()
    for name in [*loaded, "twilio-auth-token", "twilio-postback-token"]:
        (creds / name).write_text(f"{name}-0123456789abcdef\n")
    assert {"twilio-auth-token", "twilio-postback-token"} <= set(optional)
    text = EXAMPLE.read_text().replace("# auth_token_file", "auth_token_file").replace(
        "# postback_token_file", "postback_token_file")
    head, sep, twilio = text.partition("[vendors.twilio]\n")
    assert sep and "enabled = false\n" in twilio
    config = tmp_path / "tracker.toml"
    config.write_text(head + sep + twilio.replace("enabled = false\n", "enabled = true\n", 1))
    out = io.StringIO()
    assert check_config(str(config), env={"CREDENTIALS_DIRECTORY": str(creds)}, out=out) == 0, out.getvalue()
    out = io.StringIO()  # and without the unit's Twilio lines, the start fails naming the key
    (creds / "twilio-auth-token").unlink()
    assert check_config(str(config), env={"CREDENTIALS_DIRECTORY": str(creds)}, out=out) == 2
    assert "vendors.twilio.auth_token_file" in out.getvalue()
