"""tracker.config: layers, secrets from files, error collection, check-config."""
from __future__ import annotations

import io
from pathlib import Path

import pytest

from tracker import masking
from tracker import config as tc
from tracker.config import ConfigError, Problem, check_config, load, redact_dsn
from tracker.config_types import VENDORS, Config

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "tracker.example.toml"


def write(tmp_path: Path, text: str, name: str = "tracker.toml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_defaults_without_any_file():
    cfg = load(None, env={})
    assert cfg == Config()
    assert cfg.database.dsn is None
    assert cfg.http.listen == "127.0.0.1:8080"
    assert set(cfg.vendors) == set(VENDORS)
    assert all(v.enabled and v.postback_token is None for v in cfg.vendors.values())
    assert cfg.source is None


def test_file_values(tmp_path):
    path = write(tmp_path, """
[database]
dsn = "postgresql://u@db:5432/t"
pool_max = 20
[http]
listen = "0.0.0.0:9000"
ops_listen = "[::1]:9001"
[log]
level = "DEBUG"
format = "json"
[vendors.sparrow]
enabled = false
base_url = "https://sparrow.example.com/"
first_poll_s = 5
allow_networks = ["10.0.0.0/8", "2001:db8::/32"]
""")
    cfg = load(path, env={})
    assert cfg.source == path
    assert cfg.database.dsn == "postgresql://u@db:5432/t"
    assert cfg.database.pool_max == 20
    assert cfg.http.listen == "0.0.0.0:9000" and cfg.http.ops_listen == "[::1]:9001"
    assert cfg.log.level == "debug" and cfg.log.format == "json"
    sp = cfg.vendors["sparrow"]
    assert sp.enabled is False and sp.name == "sparrow"
    assert sp.base_url == "https://sparrow.example.com"  # trailing slash dropped
    assert sp.first_poll_s == 5.0 and isinstance(sp.first_poll_s, float)
    assert sp.allow_networks == ("10.0.0.0/8", "2001:db8::/32")
    assert cfg.vendors["skycore"].enabled is True


def test_path_from_tracker_config_env(tmp_path):
    path = write(tmp_path, '[http]\nlisten = "127.0.0.1:1"\n')
    assert load(None, env={"TRACKER_CONFIG": path}).http.listen == "127.0.0.1:1"
    # An explicit path wins over $TRACKER_CONFIG.
    other = write(tmp_path, '[http]\nlisten = "127.0.0.1:2"\n', "other.toml")
    assert load(other, env={"TRACKER_CONFIG": path}).http.listen == "127.0.0.1:2"


def test_env_overrides_beat_the_file(tmp_path):
    path = write(tmp_path, """
[http]
listen = "127.0.0.1:8080"
[vendors.engagespark]
concurrency = 2
enabled = true
""")
    env = {
        "TRACKER_HTTP__LISTEN": "0.0.0.0:8181",
        "TRACKER_HTTP__OPS_LISTEN": "127.0.0.1:9090",
        "tracker_vendors__EngageSpark__Concurrency": "16",  # case-insensitive
        "TRACKER_VENDORS__ENGAGESPARK__ENABLED": "no",
        "TRACKER_VENDORS__SKYCORE__RATE_LIMIT_PER_S": "2.5",
        "TRACKER_VENDORS__SKYCORE__ALLOW_NETWORKS": "10.0.0.0/8, 192.168.0.0/16",
        "TRACKER_DATABASE__DSN": "postgresql://x@h/db",
        "TRACKER_CONFIG": "/nonexistent-but-ignored-because-path-given",
        "HOME": "/root",
    }
    cfg = load(path, env=env)
    assert cfg.http.listen == "0.0.0.0:8181"
    assert cfg.http.ops_listen == "127.0.0.1:9090"
    es = cfg.vendors["engagespark"]
    assert es.concurrency == 16 and es.enabled is False
    assert cfg.vendors["skycore"].rate_limit_per_s == 2.5
    assert cfg.vendors["skycore"].allow_networks == ("10.0.0.0/8", "192.168.0.0/16")
    assert cfg.database.dsn == "postgresql://x@h/db"


@pytest.mark.parametrize("text,expected", [("true", True), ("1", True), ("YES", True),
                                           ("false", False), ("0", False), ("no", False)])
def test_env_bools(text, expected):
    cfg = load(None, env={"TRACKER_VENDORS__SPARROW__ENABLED": text})
    assert cfg.vendors["sparrow"].enabled is expected


def test_secret_files_relative_to_config_dir(tmp_path):
    (tmp_path / "key.txt").write_text("sk-live-abcdef\n")
    (tmp_path / "pb").write_text("pb-token-123-4567890\n")
    (tmp_path / "dsn").write_text("postgresql://u:dbpass99@h/db\n")
    path = write(tmp_path, """
[database]
dsn_file = "dsn"
[vendors.sparksender]
api_key_file = "key.txt"
postback_token_file = "pb"
user_id = "42"
""")
    cfg = load(path, env={})
    ss = cfg.vendors["sparksender"]
    assert ss.api_key == "sk-live-abcdef"
    assert ss.postback_token == "pb-token-123-4567890"
    assert ss.user_id == "42"
    assert cfg.database.dsn == "postgresql://u:dbpass99@h/db"


def test_secret_files_from_credentials_directory(tmp_path):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "sparrow-api").write_text("api-tok-777\n")
    (creds / "sparrow-partner").write_text("partner-888")
    absolute = tmp_path / "abs-token"
    absolute.write_text("abs-secret-999-4567890\n")
    path = write(tmp_path, """
[vendors.sparrow]
api_token_file = "sparrow-api"
partner_token_file = "sparrow-partner"
""")
    env = {"CREDENTIALS_DIRECTORY": str(creds),
           "TRACKER_VENDORS__SPARROW__POSTBACK_TOKEN_FILE": str(absolute)}
    sp = load(path, env=env).vendors["sparrow"]
    assert sp.api_token == "api-tok-777"
    assert sp.partner_token == "partner-888"
    assert sp.postback_token == "abs-secret-999-4567890"


def test_env_secret_replaces_file_pair(tmp_path):
    (tmp_path / "k").write_text("from-file-key")
    path = write(tmp_path, '[vendors.skycore]\napi_key_file = "k"\n')
    cfg = load(path, env={"TRACKER_VENDORS__SKYCORE__API_KEY": "from-env-key"})
    assert cfg.vendors["skycore"].api_key == "from-env-key"


def test_key_and_key_file_both_is_an_error(tmp_path):
    (tmp_path / "k").write_text("file-value")
    path = write(tmp_path, '[vendors.skycore]\napi_key = "inline-secret-value"\napi_key_file = "k"\n')
    with pytest.raises(ConfigError) as ei:
        load(path, env={})
    [p] = ei.value.problems
    assert p.file == path and p.key == "vendors.skycore.api_key_file"
    assert "not both" in p.reason
    assert "inline-secret-value" not in str(ei.value)
    assert "file-value" not in str(ei.value)


def test_unreadable_secret_file(tmp_path):
    path = write(tmp_path, '[vendors.skycore]\npostback_token_file = "missing"\n')
    with pytest.raises(ConfigError) as ei:
        load(path, env={})
    [p] = ei.value.problems
    assert p.key == "vendors.skycore.postback_token_file"
    assert "cannot read secret file" in p.reason and "missing" in p.reason


def test_broken_file_reports_every_problem(tmp_path):
    path = write(tmp_path, """
[http]
listn = "127.0.0.1:8080"
ops_listen = "localhost"
max_body_bytes = "big"
[log]
level = "verbose"
[vendors.sparksender]
concurency = 3
rate_limit_per_s = 0
base_url = "ftp://example.com"
[vendors.sparksendr]
enabled = true
[databse]
dsn = "x"
""")
    with pytest.raises(ConfigError) as ei:
        load(path, env={"TRACKER_VENDORS__SKYCORE__CONCURRENCY": "lots",
                        "TRACKER_HTTTP__LISTEN": "1.2.3.4:5"})
    problems = ei.value.problems
    by_key = {p.key: p for p in problems}
    assert "did you mean 'listen'" in by_key["http.listn"].reason
    assert "host:port" in by_key["http.ops_listen"].reason
    assert "expected an integer" in by_key["http.max_body_bytes"].reason
    assert "string 'big'" in by_key["http.max_body_bytes"].reason
    assert "debug" in by_key["log.level"].reason
    assert "did you mean 'concurrency'" in by_key["vendors.sparksender.concurency"].reason
    assert "positive" in by_key["vendors.sparksender.rate_limit_per_s"].reason
    assert "http" in by_key["vendors.sparksender.base_url"].reason
    assert "did you mean 'sparksender'" in by_key["vendors.sparksendr"].reason
    assert "did you mean 'database'" in by_key["databse"].reason
    assert all(by_key[k].file == path for k in by_key if not k.startswith("TRACKER_"))
    env_p = by_key["TRACKER_VENDORS__SKYCORE__CONCURRENCY"]
    assert env_p.file == "environment" and "integer" in env_p.reason
    assert "did you mean 'http'" in by_key["TRACKER_HTTTP__LISTEN"].reason
    text = str(ei.value)
    assert len(text.splitlines()) == len(problems) >= 11
    assert f"{path}: http.listn: unknown key (did you mean 'listen'?)" in text.splitlines()


def test_toml_syntax_error_has_line_and_column(tmp_path):
    path = write(tmp_path, '[http]\nlisten = "127.0.0.1:8080"\nops_listen = 127.0.0.1:9090\n')
    with pytest.raises(ConfigError) as ei:
        load(path, env={"TRACKER_LOG__LEVEL": "loud"})
    syntax, env_level = ei.value.problems
    assert syntax.file == path
    assert syntax.key.startswith("line 3, column ")
    assert "TOML syntax error" in syntax.reason
    # Environment problems are still reported alongside.
    assert env_level == Problem("environment", "TRACKER_LOG__LEVEL", env_level.reason)


def test_missing_or_binary_config_file(tmp_path):
    with pytest.raises(ConfigError) as ei:
        load(str(tmp_path / "nope.toml"), env={})
    assert "cannot read config file" in str(ei.value)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"a = 1\n\xff\xfe")
    with pytest.raises(ConfigError) as ei:
        load(str(binary), env={})
    assert "not UTF-8" in str(ei.value)


def test_wrong_types_and_values():
    env = {
        "TRACKER_HTTP__LISTEN": "127.0.0.1:99999",
        "TRACKER_INTAKE__SWEEP_INTERVAL_S": "-1",
        "TRACKER_VENDORS__SPARROW__ENABLED": "maybe",
        "TRACKER_VENDORS__SPARROW__ALLOW_NETWORKS": "10.0.0.0/8,not-a-net",
        "TRACKER_VENDORS__SPARROW__TRACKING_WINDOW_S": "nan",
        "TRACKER_LOG__FORMAT": "jsn",
        "TRACKER_VENDORS__SPARROW": "x",
        "TRACKER_DATABASE__POOL_MIN": "50",
    }
    with pytest.raises(ConfigError) as ei:
        load(None, env=env)
    keys = {p.key for p in ei.value.problems}
    assert keys == set(env)
    assert all(p.file == "environment" for p in ei.value.problems)
    assert "did you mean 'json'" in str(ei.value)


def test_secret_values_never_in_problems(tmp_path):
    (tmp_path / "empty").write_text("\n")
    path = write(tmp_path, """
[database]
dsn = "mysql://admin:Sup3rS3cretPw@db/x"
[vendors.sparksender]
api_key = 123456789
postback_token = "has/slash-SECRETTOKEN"
api_kye = "typo-secret-ABCDEF"
base_url = "ftp://user:urlpassword42@host"
[vendors.sparrow]
partner_token_file = "empty"
""")
    with pytest.raises(ConfigError) as ei:
        load(path, env={"TRACKER_VENDORS__SKYCORE__API_KYE": "env-typo-secret-XYZ"})
    text = str(ei.value)
    for secret in ("Sup3rS3cretPw", "123456789", "SECRETTOKEN", "typo-secret-ABCDEF",
                   "urlpassword42", "env-typo-secret-XYZ"):
        assert secret not in text
    keys = {p.key for p in ei.value.problems}
    assert {"database.dsn", "vendors.sparksender.api_key", "vendors.sparksender.postback_token",
            "vendors.sparksender.api_kye", "vendors.sparksender.base_url",
            "vendors.sparrow.partner_token_file", "TRACKER_VENDORS__SKYCORE__API_KYE"} == keys


def test_missing_credentials_are_fine_and_none():
    cfg = load(None, env={"TRACKER_VENDORS__SKYCORE__BASE_URL": "http://127.0.0.1:1234"})
    sky = cfg.vendors["skycore"]
    assert sky.base_url == "http://127.0.0.1:1234"
    assert sky.postback_token is None and sky.api_key is None


def test_load_registers_secrets(tmp_path, monkeypatch):
    from tracker import logging as tlog

    monkeypatch.setattr(masking, "_secrets", set())
    monkeypatch.setattr(masking, "_secret_re", None)
    load(None, env={"TRACKER_VENDORS__SPARROW__API_TOKEN": "sparrow-api-secret",
                    "TRACKER_DATABASE__DSN": "postgresql://u:pw-secret-1@h/db"})
    assert "sparrow-api-secret" in masking._secrets
    assert "pw-secret-1" in masking._secrets


def test_example_config_is_valid_and_complete(tmp_path):
    import tomllib

    creds = tmp_path / "creds"
    creds.mkdir()
    data = tomllib.loads(EXAMPLE.read_text())
    for vendor in data["vendors"].values():
        for key, value in vendor.items():
            if key.endswith("_file"):
                (creds / value).write_text(f"secret-for-{value}\n")
    cfg = load(str(EXAMPLE), env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert cfg.database.dsn is None
    assert cfg.vendors["sparrow"].partner_token == "secret-for-sparrow-partner-token"
    # Every field of every section (secrets possibly as _file or commented out) is mentioned.
    text = EXAMPLE.read_text()
    for section, fields in tc._FIELDS.items():
        for name in fields:
            assert name in text, (section, name)


@pytest.mark.parametrize("dsn,expected", [
    ("postgresql://user:s3cret@host:5432/db", "postgresql://user:***@host:5432/db"),
    ("postgresql://user@host/db", "postgresql://user@host/db"),
    ("postgresql://user:p@ss:w@host/db", "postgresql://user:***@host/db"),
    ("postgresql://host/db?password=s3cret&sslmode=require", "postgresql://host/db?password=***&sslmode=require"),
    ("host=h user=u password=s3cret dbname=d", "host=h user=u password=*** dbname=d"),
    ("host=h password='s3 cret' dbname=d", "host=h password=*** dbname=d"),
    (None, ""),
])
def test_redact_dsn(dsn, expected):
    assert redact_dsn(dsn) == expected


def test_check_config_ok(tmp_path):
    path = write(tmp_path, """
[database]
dsn = "postgresql://admin:hunter2-secret@db.internal:5432/tracker"
[http]
ops_listen = "127.0.0.1:9090"
[vendors.sparrow]
enabled = false
[vendors.skycore]
postback_token = "sky-token-abc-4567890"
base_url = "https://sky.example.com"
""")
    out = io.StringIO()
    assert check_config(path, env={}, out=out) == 0
    text = out.getvalue()
    assert text.splitlines()[0] == f"config OK: {path}"
    assert "db.internal:5432/tracker" in text
    assert "hunter2-secret" not in text and "sky-token-abc" not in text
    assert "127.0.0.1:9090" in text
    assert "vendor sparrow: disabled" in text
    assert "vendor sparksender: enabled" in text and "postbacks refused" in text


def test_check_config_defaults():
    out = io.StringIO()
    assert check_config(None, env={}, out=out) == 0
    assert out.getvalue().startswith("config OK: defaults\n")
    assert "embedded" in out.getvalue()


def test_check_config_problems(tmp_path):
    path = write(tmp_path, '[http]\nlisten = "nowhere"\n[vendors.skycore]\napi_key = 42\n')
    out = io.StringIO()
    assert check_config(path, env={"TRACKER_HTTP__OPS_LISTEN": "bad"}, out=out) == 2
    lines = out.getvalue().splitlines()
    assert lines[0] == "config has 3 problems:"
    assert lines[1].startswith(f"{path}: http.listen: expected host:port")
    assert lines[2] == f"{path}: vendors.skycore.api_key: expected a string, got integer"
    assert lines[3].startswith("environment: TRACKER_HTTP__OPS_LISTEN: expected host:port")


# --------------------------------------------------------------------------- what `run` would trip on


def problems_of(text: str, tmp_path: Path, env: dict | None = None) -> dict[str, str]:
    """key -> reason for every problem of a config file (and environment)."""
    with pytest.raises(ConfigError) as ei:
        load(write(tmp_path, text), env=env or {})
    return {p.key: p.reason for p in ei.value.problems}


@pytest.mark.parametrize("listen,reason", [
    ("999.1.1.1:80", "'999.1.1.1' is not a valid IPv4 address"),
    ("1.2.3:80", "'1.2.3' is not a valid IPv4 address"),  # getaddrinfo would take it as 1.2.0.3
    ("[1:2:3]:80", "'1:2:3' is not a valid IPv6 address"),
    ("127.0.0.1:65536", "port 65536 is out of range 0..65535"),
    ("127.0.0.1:999999", "port 999999 is out of range 0..65535"),
    ("nowhere.invalid:8080", "host 'nowhere.invalid' does not resolve"),
])
def test_a_listen_address_run_could_not_bind(tmp_path, listen, reason):
    problems = problems_of(f'[http]\nlisten = "{listen}"\n', tmp_path)
    assert reason in problems["http.listen"]


@pytest.mark.parametrize("listen", ["127.0.0.1:0", "0.0.0.0:65535", "[::]:8080", "[::1]:1", "localhost:8080"])
def test_listen_addresses_that_bind(listen):
    assert load(None, env={"TRACKER_HTTP__LISTEN": listen}).http.listen == listen


def test_a_host_that_does_not_resolve_is_named(monkeypatch):
    import socket

    def no_such_host(host, *_a, **_kw):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    with pytest.raises(ConfigError) as ei:
        load(None, env={"TRACKER_HTTP__OPS_LISTEN": "metrics.internal:9090"})
    [p] = ei.value.problems
    assert p.key == "TRACKER_HTTP__OPS_LISTEN"
    assert p.reason == "host 'metrics.internal' does not resolve: Name or service not known"


def test_a_stalled_lookup_costs_only_the_resolve_timeout(monkeypatch):
    import socket
    import threading
    import time

    release = threading.Event()
    monkeypatch.setattr(socket, "getaddrinfo", lambda *_a, **_kw: release.wait(10) and [])
    monkeypatch.setattr(tc.listen, "RESOLVE_TIMEOUT_S", 0.2)
    started = time.monotonic()
    try:
        with pytest.raises(ConfigError, match=r"did not resolve within 0.2 s"):
            load(None, env={"TRACKER_HTTP__LISTEN": "slow.example:8080"})
    finally:
        release.set()
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("listen,ops", [
    ("127.0.0.1:8080", "127.0.0.1:8080"),
    ("0.0.0.0:8080", "127.0.0.1:8080"),  # the wildcard takes every IPv4 address
    ("127.0.0.1:8080", "localhost:8080"),
    ("[::]:9000", "[::1]:9000"),
    ("[::]:9000", "127.0.0.1:9000"),  # `[::]` is bound for both families
    ("0.0.0.0:9000", "[::]:9000"),
    (None, "127.0.0.1:8080"),  # the default http.listen
])
def test_ops_listen_must_not_take_the_postback_listeners_address(tmp_path, listen, ops):
    text = "[http]\n" + (f'listen = "{listen}"\n' if listen else "") + f'ops_listen = "{ops}"\n'
    problems = problems_of(text, tmp_path)
    assert list(problems) == ["http.ops_listen"]
    assert "same address and port as http.listen" in problems["http.ops_listen"]


@pytest.mark.parametrize("listen,ops", [
    ("127.0.0.1:8080", "127.0.0.1:9090"),
    ("127.0.0.1:8080", "[::1]:8080"),  # IPv6 sockets are v6-only: no clash with IPv4
    ("127.0.0.1:0", "127.0.0.1:0"),  # each gets its own free port
    ("127.0.0.1:8080", "127.0.0.2:8080"),
])
def test_ops_listen_on_another_address(listen, ops):
    cfg = load(None, env={"TRACKER_HTTP__LISTEN": listen, "TRACKER_HTTP__OPS_LISTEN": ops})
    assert cfg.http.ops_listen == ops


def test_a_short_postback_token_is_refused_without_showing_it(tmp_path):
    (tmp_path / "pb").write_text("short-file-tok\n")
    problems = problems_of("""
[vendors.skycore]
postback_token = "abc123"
[vendors.sparrow]
postback_token_file = "pb"
""", tmp_path)
    for key in ("vendors.skycore.postback_token", "vendors.sparrow.postback_token_file"):
        assert "shorter than 16 characters, too easy to guess" in problems[key]
    assert "abc123" not in str(problems) and "short-file-tok" not in str(problems)
    cfg = load(None, env={"TRACKER_VENDORS__SKYCORE__POSTBACK_TOKEN": "0123456789abcdef"})
    assert cfg.vendors["skycore"].postback_token == "0123456789abcdef"


def test_the_first_poll_must_fit_the_schedule(tmp_path):
    problems = problems_of("""
[vendors.sparksender]
first_poll_s = 600
max_poll_interval_s = 300
[vendors.engagespark]
max_poll_interval_s = 10        # below the default first_poll_s (30)
[vendors.skycore]               # never polled: its schedule is not looked at (reviewer D)
first_poll_s = 600
tracking_window_s = 60
[vendors.sparrow]
first_poll_s = 60
max_poll_interval_s = 60
tracking_window_s = 60
""", tmp_path)
    assert set(problems) == {"vendors.sparksender.first_poll_s", "vendors.engagespark.max_poll_interval_s",
                             "vendors.sparrow.first_poll_s"}
    assert problems["vendors.sparksender.first_poll_s"] == (
        "vendors.sparksender.first_poll_s (600 s) exceeds vendors.sparksender.max_poll_interval_s "
        "(300 s): the first poll would wait longer than any later one")
    assert "exceeds vendors.engagespark.max_poll_interval_s (10 s)" in problems[
        "vendors.engagespark.max_poll_interval_s"]
    assert "given up on before their first poll" in problems["vendors.sparrow.first_poll_s"]


def test_a_key_already_wrong_is_not_reported_twice(tmp_path):
    problems = problems_of('[vendors.skycore]\nfirst_poll_s = -5\nmax_poll_interval_s = "x"\n', tmp_path)
    assert set(problems) == {"vendors.skycore.first_poll_s", "vendors.skycore.max_poll_interval_s"}


@pytest.mark.parametrize("size,ok", [(1023, False), (1024, True), (64 * 1024 * 1024, True),
                                     (64 * 1024 * 1024 + 1, False), (10**12, False)])
def test_max_body_bytes_must_be_sane(size, ok):
    env = {"TRACKER_HTTP__MAX_BODY_BYTES": str(size)}
    if ok:
        assert load(None, env=env).http.max_body_bytes == size
    else:
        with pytest.raises(ConfigError, match=r"between 1024 \(1 KiB\) and 67108864 \(64 MiB\)"):
            load(None, env=env)


@pytest.mark.parametrize("env,key,reason", [
    ({"TRACKER_DATABASE__POOL_MAX": "3"}, "TRACKER_DATABASE__POOL_MAX", "must be at least 4"),
    ({"TRACKER_DATABASE__POOL_MAX": "500"}, "TRACKER_DATABASE__POOL_MAX",
     "must be at most 190 with the embedded cluster"),
    ({"TRACKER_DATABASE__POOL_MIN": "0", "TRACKER_DATABASE__POOL_MAX": "0"}, "TRACKER_DATABASE__POOL_MAX",
     "must be positive"),
    ({"TRACKER_VENDORS__SKYCORE__REQUEST_TIMEOUT_S": "0"}, "TRACKER_VENDORS__SKYCORE__REQUEST_TIMEOUT_S",
     "must be positive"),
    ({"TRACKER_HEALTH__INTAKE_STALL_S": "-1"}, "TRACKER_HEALTH__INTAKE_STALL_S", "must be positive"),
    ({"TRACKER_DATABASE__DSN": "postgresql://u@db:port/x"}, "TRACKER_DATABASE__DSN",
     "port is not a number"),
])
def test_database_and_timeouts(env, key, reason):
    with pytest.raises(ConfigError) as ei:
        load(None, env=env)
    assert [p.key for p in ei.value.problems] == [key]
    assert reason in ei.value.problems[0].reason


def test_a_big_pool_is_fine_on_a_configured_database():
    cfg = load(None, env={"TRACKER_DATABASE__POOL_MAX": "500", "TRACKER_DATABASE__DSN": "postgresql://u@db/x"})
    assert cfg.database.pool_max == 500


def test_check_config_names_each_key_and_reason(tmp_path):
    path = write(tmp_path, """
[http]
listen = "999.1.1.1:80"
max_body_bytes = 512
[vendors.skycore]
postback_token = "guessable"
[vendors.twilio]
first_poll_s = 7200
""")
    out = io.StringIO()
    assert check_config(path, env={}, out=out) == 2
    lines = out.getvalue().splitlines()
    assert lines[0] == "config has 4 problems:"
    assert lines[1] == f"{path}: http.listen: '999.1.1.1' is not a valid IPv4 address"
    assert lines[2].startswith(f"{path}: http.max_body_bytes: must be between 1024")
    assert lines[3].startswith(f"{path}: vendors.skycore.postback_token: is shorter than 16 characters")
    assert lines[4].startswith(f"{path}: vendors.twilio.first_poll_s: vendors.twilio.first_poll_s (7200 s) "
                               "exceeds vendors.twilio.max_poll_interval_s (3600 s)")
    assert "guessable" not in out.getvalue()
