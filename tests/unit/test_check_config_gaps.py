"""What `tracker check-config` said OK to and `tracker run` then tripped on (a reviewer following
the README): a polled vendor without its credentials, a DSN password with an unencoded @ ? or #,
a TRACKER_ variable with one underscore where two belong; and deploy/OPERATIONS.md's words for
what check-config prints."""
from __future__ import annotations

import io
import re
import tomllib
from pathlib import Path

import pytest

from tracker.config import ConfigError, check_config, load
from tracker.config.dsn import dsn_problem
from tracker.config.polling import not_configured, polled
from tracker.config.schema import OTHER_ENV_NAMES
from tracker.config_types import VendorConfig

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "tracker.example.toml"
STATE = {"TRACKER_DATABASE__STATE_DIR": "/nonexistent/tracker-state"}


@pytest.fixture(autouse=True)
def _no_pg_environment(monkeypatch):
    for name in ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE", "PGSSLMODE", "PGPASSFILE"):
        monkeypatch.delenv(name, raising=False)


def run(env: dict, text: str | None = None, tmp_path: Path | None = None) -> tuple[int, str]:
    path = None
    if text is not None:
        assert tmp_path is not None
        path = tmp_path / "tracker.toml"
        path.write_text(text)
    out = io.StringIO()
    code = check_config(str(path) if path else None, env={**STATE, **env}, out=out)
    return code, out.getvalue()


# ---- 1. a vendor `run` polls has what its adapter needs


def test_a_polled_vendor_without_credentials_is_a_problem_naming_its_keys():
    code, out = run({"TRACKER_VENDORS__SPARKSENDER__BASE_URL": "https://s.example.com"})
    assert code == 2, out
    lines = out.splitlines()
    assert lines[0] == "config has 1 problem:"
    assert lines[1].startswith("environment: TRACKER_VENDORS__SPARKSENDER__BASE_URL: ")
    assert "user_id and api_key must be configured" in lines[1]  # the adapter's own words
    for key in ("vendors.sparksender.user_id", "TRACKER_VENDORS__SPARKSENDER__USER_ID",
                "vendors.sparksender.api_key", "TRACKER_VENDORS__SPARKSENDER__API_KEY"):
        assert key in lines[1]


@pytest.mark.parametrize("vendor,text,keys", [
    ("engagespark", 'base_url = "https://e.example"\norg_id = "12"\n', ("org_id", "api_key")),
    ("sparrow", 'base_url = "https://sp.example"\napi_token = "TOKEN-canary-9"\n', ("api_token", "partner_token")),
    ("twilio", 'base_url = "https://api.twilio.com"\naccount_sid = "AC1"\n', ("auth_token", "api_key_sid", "api_key_secret")),
])
def test_each_polled_vendor_is_checked_by_its_adapter_in_the_file_too(tmp_path, vendor, text, keys):
    code, out = run({}, f"[vendors.{vendor}]\n{text}", tmp_path)
    assert code == 2, out
    line = out.splitlines()[1]
    assert line.startswith(f"{tmp_path / 'tracker.toml'}: vendors.{vendor}.base_url: ")
    assert all(f"vendors.{vendor}.{k}" in line for k in keys)
    assert "canary" not in out


@pytest.mark.parametrize("text", [
    '[vendors.sparksender]\nbase_url = "https://s.example"\nenabled = false\n',  # disabled
    '[vendors.sparksender]\nuser_id = "1"\n',  # no base_url: not polled
    '[vendors.skycore]\nbase_url = "https://sky.example"\n',  # push only: never polled
    '[vendors.sparksender]\nbase_url = "https://s.example"\nuser_id = "1"\napi_key = "k"\n',
    '[vendors.sparrow]\nbase_url = "https://sp.example"\napi_token = "a"\npartner_token = "p"\n',
])
def test_vendors_run_does_not_poll_or_that_have_their_settings_pass(tmp_path, text):
    code, out = run({}, text, tmp_path)
    assert code == 0, out


def test_a_secret_given_as_a_file_counts(tmp_path):
    (tmp_path / "key").write_text("k-123\n")
    code, out = run({}, '[vendors.engagespark]\nbase_url = "https://e.example"\norg_id = "1"\n'
                        'api_key_file = "key"\n', tmp_path)
    assert code == 0, out


def test_the_rule_is_the_pollers_and_the_check_the_adapters():
    cfg = VendorConfig.from_keys("sparksender", base_url="https://s.example")
    assert polled("sparksender", cfg) and not polled("skycore", VendorConfig.from_keys("skycore", base_url="https://x"))
    assert not polled("sparksender", VendorConfig.from_keys("sparksender"))
    assert "must be configured" in not_configured("sparksender", cfg)
    assert not_configured("sparksender", VendorConfig.from_keys("sparksender", user_id="1", api_key="k")) is None
    # `tracker run` loads the configuration as check-config does: it refuses it before starting
    # (it used to start and open the vendor's circuit at its first poll)
    with pytest.raises(ConfigError, match="sparksender is polled .* user_id and api_key must be configured"):
        load(None, env={"TRACKER_VENDORS__SPARKSENDER__BASE_URL": "https://s.example"})


def test_the_example_config_still_passes(tmp_path):
    creds = tmp_path / "creds"
    creds.mkdir()
    for vendor in tomllib.loads(EXAMPLE.read_text())["vendors"].values():
        for key, value in vendor.items():
            if key.endswith("_file"):
                (creds / value).write_text(f"secret-for-{value}-0123456789\n")
    out = io.StringIO()
    code = check_config(str(EXAMPLE), env={**STATE, "CREDENTIALS_DIRECTORY": str(creds)}, out=out)
    assert code == 0, out.getvalue()
    polled_ones = [v for v, c in load(str(EXAMPLE), env={"CREDENTIALS_DIRECTORY": str(creds)}).vendors.items()
                   if polled(v, c)]
    assert polled_ones  # the check ran on something


# ---- 2. a DSN password with an unencoded @ ? #


@pytest.mark.parametrize("dsn", [
    "postgresql://tracker:Pass@Secret99@127.0.0.1:5999/db",  # asyncpg: host Secret99@127.0.0.1
    "postgresql://u:Pw3c?ret@h/db",  # was: "the URL's port is not a number"
    "postgresql://u:Pw3c#ret@h/db",
    "postgresql://u:Pw3c?ret@h:5432/db",
    "postgresql://u:Pass@Secret99@/db?host=/tmp",
    "postgresql://tracker:4242/Secret99@db.example/tracker",  # asyncpg: host tracker, port 4242
])
def test_a_password_asyncpg_would_misread_is_refused_with_the_percent_encode_advice(dsn):
    code, out = run({"TRACKER_DATABASE__DSN": dsn})
    assert code == 2, out
    line = out.splitlines()[1]
    assert line.startswith("environment: TRACKER_DATABASE__DSN: asyncpg ")
    assert "percent-encode the password's / ? # @" in line and "port is not a number" not in line
    assert "Secret99" not in out and "Pw3c" not in out and "ret@" not in out


@pytest.mark.parametrize("dsn", [
    "postgresql://tracker:Pass%40Secret99@127.0.0.1:5999/db",
    "postgresql://u:Pw3c%3Fret@h/db",
    "postgresql://u:Pw3c%23ret@h:5432/db",
    "postgresql://u:S3c:x@h1:5432,h2:5433/tracker",
    "postgresql://u:pw@h/db?password=x@y",  # an @ in the query is no userinfo's
    "postgresql://h:5432?password=a@b",
])
def test_encoded_passwords_and_a_query_holding_at_pass(dsn):
    assert dsn_problem(dsn) is None


def test_a_port_out_of_range_is_still_said_so():
    assert dsn_problem("postgresql://u:pw@h:99999/db") == "the URL's port is not a number in 1..65535"


def test_a_host_name_no_resolver_takes_is_refused_for_vendors_and_sinks(tmp_path):
    # `hooks..example.com` passed: every request then failed, a sink's events looping
    (tmp_path / "t.toml").write_text(
        '[vendors.skycore]\nbase_url = "https://api..skycore.com"\n'
        '[sinks.webhooks.billing]\nurl = "https://hooks..example.com/hooks/sms"\n'
        'secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]\n'
        '[sinks.nats.bus]\nservers = ["nats://' + "n" * 64 + '.example.com:4222"]\n')
    with pytest.raises(ConfigError) as e:
        load(str(tmp_path / "t.toml"), env={})
    text = str(e.value)
    for key, host in (("vendors.skycore.base_url", "api..skycore.com"),
                      ("sinks.webhooks.billing.url", "hooks..example.com"),
                      ("sinks.nats.bus.servers", "n" * 64 + ".example.com")):
        assert f"{key}" in text and f"host {host!r} is no valid DNS name" in text, (key, text)


# ---- 3. TRACKER_ names with one underscore


def test_a_single_underscore_name_is_a_problem_with_a_did_you_mean():
    code, out = run({"TRACKER_DATABASE_DSN": "postgresql://u@h/db"})
    assert code == 2, out
    assert out.splitlines()[1].startswith("environment: TRACKER_DATABASE_DSN: unknown: ")
    assert "(did you mean 'TRACKER_DATABASE__DSN'?)" in out
    with pytest.raises(ConfigError, match="TRACKER_VENDORS__SPARROW__API_TOKEN"):
        load(None, env={"TRACKER_VENDORS_SPARROW_API_TOKEN": "x"})
    # A name that is no setting's is none of ours (a deployment tool's TRACKER_HOME, an entry
    # script's TRACKER_DATABASE_HOST, close as it is to TRACKER_DATABASE__DSN): it starts.
    load(None, env={"TRACKER_NOTHING_LIKE_IT": "x", "TRACKER_HOME": "/srv/tracker",
                    "TRACKER_DATABASE_HOST": "db.internal", "TRACKER_DATABASE_USER": "tracker"})


def test_the_projects_own_tracker_variables_are_left_alone():
    env = {name: "x" for name in OTHER_ENV_NAMES if name != "TRACKER_CONFIG"}
    load(None, env={**env, "TRACKER_CONFIG": "", "tracker_loop": "asyncio"})


_READS = re.compile(r"""(?:environ(?:\.get)?\(|environ\[|getenv\(|delenv\(|setenv\()\s*["'](TRACKER_\w+)"""
                    r"""|\$\{?(TRACKER_\w+)|\b(TRACKER_\w+) is set""")


def test_every_tracker_variable_the_repository_reads_is_listed():
    found = set()
    for where in ("tracker", "tests", "bench", "scripts", "deploy", ".ci"):
        for path in (ROOT / where).rglob("*"):
            if path.is_file() and path.suffix in ("", ".py", ".sh", ".yaml", ".yml", ".md", ".service"):
                try:
                    text = path.read_text()
                except (UnicodeDecodeError, OSError):
                    continue
                found |= {n for m in _READS.finditer(text) for n in m.groups() if n}
    found = {n for n in found if "__" not in n and n != "TRACKER_"}
    assert found and found <= OTHER_ENV_NAMES, found - OTHER_ENV_NAMES


# ---- 4. the guide says what check-config prints


def test_the_guide_quotes_what_check_config_prints(tmp_path):
    guide = (ROOT / "deploy" / "OPERATIONS.md").read_text()
    code, out = run({}, '[http]\nlisten = "127.0.0.1:0"\n', tmp_path)
    assert code == 0
    first = out.splitlines()[0]
    assert first == f"config OK: {tmp_path / 'tracker.toml'}"
    quoted = re.findall(r"`(config OK[^`]*)`", guide, flags=re.IGNORECASE)
    assert quoted and all(q == "config OK: /etc/tracker/tracker.toml" for q in quoted), quoted
    assert "/etc/tracker/tracker.toml check-config" in guide


def test_one_vendors_key_in_anothers_table_is_refused_naming_whose_it_is(tmp_path):
    # The credential fields every vendor's table accepted (org_id, api_token, user_id, ...):
    # an engageSPARK org_id put under Twilio was taken and ignored, "config OK"
    code, out = run({"TRACKER_VENDORS__SPARROW__USER_ID": "u"},
                    '[vendors.twilio]\norg_id = "12"\napi_token_file = "f"\n'
                    '[vendors.skycore]\naccount_sid = "AC1"\n[vendors.engagespark]\norg_id = "12"\n', tmp_path)
    assert code == 2, out
    f = tmp_path / "tracker.toml"
    assert out.splitlines()[1:] == [
        f"{f}: vendors.twilio.org_id: org_id is not a setting of twilio (it is engagespark's): in the wrong vendor's table?",
        f"{f}: vendors.twilio.api_token_file: api_token is not a setting of twilio (it is sparrow's): in the wrong vendor's table?",
        f"{f}: vendors.skycore.account_sid: account_sid is not a setting of skycore (it is twilio's): in the wrong vendor's table?",
        "environment: TRACKER_VENDORS__SPARROW__USER_ID: user_id is not a setting of sparrow (it is sparksender's): "
        "in the wrong vendor's table?"]


@pytest.mark.parametrize("dsn", ["postgresql://u:pw@h:5432/db\nsecond line SECRET-2",
                                 "postgresql://u:pw@h:5432/db\tx", "postgresql://u:pw@h/d\r"])
def test_a_dsn_holding_a_line_break_is_refused_without_quoting_it(dsn):
    # A dsn_file's lines after the first became part of the database's name, and check-config
    # printed them (reviewer C, session 28).
    said = dsn_problem(dsn)
    assert said is not None and "control character" in said and "SECRET" not in said
