"""deploy/tracker.service and config/tracker.example.toml agree: every secret the example config
reads from a `<key>_file` is a credential the unit loads, and every credential the unit loads is
read by the config. Otherwise following deploy/OPERATIONS.md fails at start. And the unit, the
example and the guide hold what an operator relies on: a start timeout a migration fits in, no
restart loop on a configuration error, the ops listener apart from the postbacks, no token for a
vendor that never calls back, one-off commands run as the service runs."""
from __future__ import annotations

import io
import re
import tomllib
from pathlib import Path

import pytest

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
                                                          "skycore-postback-token-old", "skycore-api-key",
                                                          "twilio-api-key-secret"}


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


def unit_settings() -> dict[str, list[str]]:
    """The unit's settings (comments left out): name -> every value given, in order."""
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_the_start_timeout_leaves_room_for_a_long_migration():
    """ExecStartPre's `tracker migrate` runs under TimeoutStartSec: systemd's default 90 s cut
    a long migration off (rolled back, started over at every restart)."""
    (value,) = unit_settings()["TimeoutStartSec"]
    m = re.fullmatch(r"(\d+)(min|s)?", value)
    assert m, value
    assert int(m.group(1)) * (60 if m.group(2) == "min" else 1) >= 15 * 60


def test_exit_status_2_is_not_restarted_and_is_what_the_tracker_exits_with_for_a_setting(tmp_path, capsys):
    """A configuration error or a start a setting prevents exits 2: systemd does not restart it
    every 2 s (RestartPreventExitStatus=2); an unreachable database (exit 1) still is."""
    from tracker import cli
    from tracker.start_error import StartError

    settings = unit_settings()
    assert settings["Restart"] == ["on-failure"] and settings["RestartPreventExitStatus"] == ["2"]
    bad = tmp_path / "tracker.toml"
    bad.write_text('[http]\nlisten = "not an address"\n')
    with pytest.raises(SystemExit) as e:
        cli.main(["--config", str(bad), "run"])
    assert e.value.code == 2 and "http.listen" in capsys.readouterr().err  # before anything starts
    assert StartError("http.listen", "127.0.0.1:8080", "Address already in use").code == 2


@pytest.mark.parametrize("error, code", [
    ("InvalidPasswordError", 2), ("InvalidAuthorizationSpecificationError", 2),
    ("InvalidCatalogNameError", 2),  # who we are, or the database's name: settings
    # what passes with time: restarted (a standby behind the DSN after a failover was exit 2, and
    # with RestartPreventExitStatus=2 the service stayed down for good)
    ("ReadOnlySQLTransactionError", 1), ("CannotConnectNowError", 1), ("TooManyConnectionsError", 1),
    ("InsufficientPrivilegeError", 1), ("ConnectionRefusedError", 1),
])
def test_only_a_database_refusing_its_settings_is_not_restarted(error, code):
    import asyncpg

    from tracker.start_error import database_start_error

    e = getattr(asyncpg, error, None)
    e = e("refused") if e is not None else ConnectionRefusedError(111, "Connection refused")
    assert database_start_error(e, "postgresql://u:pw-9@db/tracker", "/var/lib/tracker").code == code


def test_the_ops_listener_is_apart_from_the_postback_listener_in_the_example():
    """OPERATIONS.md puts the postback listener behind a load balancer: /metrics and /status
    (no token) must not be served there."""
    http = tomllib.loads(EXAMPLE.read_text())["http"]
    assert http.get("ops_listen") and http["ops_listen"] != http["listen"]
    assert http["ops_listen"].startswith("127.0.0.1:")


def test_postback_tokens_only_for_vendors_that_call_back():
    """A vendor that sends no postbacks (Spark Sender) gets no postback token: its credential
    would be one more file the unit needs to start, for a route that is never used."""
    from tracker import adapters

    vendors = tomllib.loads(EXAMPLE.read_text())["vendors"]
    text = EXAMPLE.read_text()
    for name, table in vendors.items():
        if not adapters.get(name).PUSHES:
            assert not {k for k in table if "postback_token" in k}, name
            section = text.split(f"[vendors.{name}]", 1)[1].split("\n[", 1)[0]
            assert not re.search(r"^\s*#\s*\w*postback_token\w*\s*=", section, re.M), name
    loaded, optional = unit_credentials()
    assert not [n for n in {**loaded, **optional} if n.startswith("sparksender-postback")]


def test_the_guides_one_off_command_runs_as_the_unit_does():
    """`tracker-admin` (OPERATIONS.md, "One-off commands") must read what the running service
    reads: its User=, its credentials (systemd shows them to that user under
    /run/credentials/<unit>/ while it runs), its state directory, binary and --config."""
    guide = (ROOT / "deploy" / "OPERATIONS.md").read_text()
    (alias,) = re.findall(r"^alias tracker-admin='([^']+)'$", guide, re.M)
    settings = unit_settings()
    exec_start = settings["ExecStart"][0].split()
    assert exec_start[-1] == "run"
    assert alias.startswith(f"sudo -u {settings['User'][0]} env ")
    assert f"CREDENTIALS_DIRECTORY=/run/credentials/{UNIT.name} " in alias
    for env in settings["Environment"]:
        if env.startswith("TRACKER_DATABASE__"):
            assert f" {env} " in alias, env
    assert alias.endswith(" ".join(exec_start[:-1]))
