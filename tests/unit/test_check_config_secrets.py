"""`tracker check-config` never prints a secret: not the DSN's password (whatever characters it
holds), nor a token in a URL's user, password, path or query. Its summary and problems still say
which host the DSN and each URL point to."""
from __future__ import annotations

import io

import pytest

from tracker.config import check_config
from tracker.sinks.settings import SinkSettings

S = "SECRET-canary-123"
STATE = {"TRACKER_DATABASE__STATE_DIR": "/nonexistent/tracker-state"}


@pytest.fixture(autouse=True)
def _no_pg_environment(monkeypatch):
    for name in ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE", "PGSSLMODE", "PGPASSFILE"):
        monkeypatch.delenv(name, raising=False)


def run(tmp_path, text: str, env: dict | None = None) -> tuple[int, str]:
    path = tmp_path / "tracker.toml"
    path.write_text(text)
    out = io.StringIO()
    code = check_config(str(path), env={**STATE, **(env or {})}, out=out)
    return code, out.getvalue()


# ---- the summary's database line: host, port and database only


@pytest.mark.parametrize("dsn,shown", [
    (f"postgresql://u:{S}%2F%3F%40@db.example/tracker", "db.example:5432/tracker"),
    (f"postgresql://u:{S}:x@h1:5432,h2:5433/tracker", "h1:5432,h2:5433/tracker"),
    (f"postgresql://u@/tracker?host=h1,h2&port=5432,5433&password={S}", "h1:5432,h2:5433/tracker"),
    (f"postgresql://u:{S}@/tracker?host=%2Fvar%2Frun%2Fpostgresql", "/var/run/postgresql/.s.PGSQL.5432/tracker"),
    (f"postgresql://u:{S}@[::1]:5432/tracker?sslpassword={S}&sslmode=disable", "[::1]:5432/tracker"),
])
def test_the_summary_names_the_dsns_hosts_and_database_never_its_password(tmp_path, dsn, shown):
    code, out = run(tmp_path, f'[database]\ndsn = "{dsn}"\n')
    assert code == 0, out
    line = next(x for x in out.splitlines() if x.strip().startswith("database:"))
    assert f"database: dsn {shown}" in line
    assert S not in out and "4242" not in out and "canary" not in out


@pytest.mark.parametrize("dsn", [
    # an unencoded "/" in the password: asyncpg takes "4242" for a port and the rest for the database
    f"postgresql://tracker:4242/{S}@db.example/tracker",
    f"postgresql://u:p@{S}@db.example:5433/tracker",  # asyncpg's host: "p@SECRET...@db.example"
])
def test_a_dsn_asyncpg_reads_otherwise_than_its_hidden_form_is_refused_unprinted(tmp_path, dsn):
    code, out = run(tmp_path, f'[database]\ndsn = "{dsn}"\n')
    assert code == 2 and "database.dsn" in out and "percent-encode" in out, out
    assert S not in out and "4242" not in out and "canary" not in out


# ---- URLs: scheme, host and port only


def test_the_summary_shows_a_vendors_base_url_as_scheme_host_and_port(tmp_path):
    code, out = run(tmp_path, f'[vendors.sparksender]\nbase_url = "https://u:{S}@api.example:8443/v1/?api_key={S}"\n'
                              'user_id = "1"\napi_key = "k"\n')
    assert code == 0, out
    assert "vendor sparksender: enabled, base_url=https://api.example:8443/... (path not shown)\n" in out
    assert S not in out and "/v1" not in out


@pytest.mark.parametrize("text,shown", [
    (f'[vendors.twilio]\npublic_base_url = "ftp://u:{S}@h.example/x?token={S}"\n',
     "vendors.twilio.public_base_url: expected a URL with a host, starting http:// or https://, got scheme 'ftp', host 'h.example'"),
    (f'[vendors.sparksender]\nstatus_url = "api.example/status?token={S}"\n',
     "vendors.sparksender.status_url: expected a URL with a host, starting http:// or https://, got no scheme, no host"),
    (f'[vendors.sparksender]\nbase_url = ["https://api.example/?api_key={S}"]\n',
     "vendors.sparksender.base_url: expected a string, got array\n"),
    (f'[sinks.webhooks.w]\nurl = ["https://hooks.example/h/{S}"]\nsecrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]\n',
     "sinks.webhooks.w.url: expected a string, got a value not shown"),
])
def test_a_url_valued_settings_problem_shows_at_most_its_scheme_and_host(tmp_path, text, shown):
    code, out = run(tmp_path, text)
    assert code == 2 and shown in out, out
    assert S not in out and "canary" not in out


def test_a_url_valued_setting_from_the_environment_shows_at_most_its_scheme_and_host(tmp_path):
    code, out = run(tmp_path, "", {"TRACKER_VENDORS__TWILIO__PUBLIC_BASE_URL": f"sms.example/{S}",
                                   "TRACKER_VENDORS__SPARKSENDER__STATUS_URL": f"ftp://st.example/?t={S}"})
    assert code == 2, out
    assert "TRACKER_VENDORS__TWILIO__PUBLIC_BASE_URL: expected a URL with a host, starting http:// or https://, got no scheme" in out
    assert "TRACKER_VENDORS__SPARKSENDER__STATUS_URL: expected a URL with a host, starting http:// or https://, got scheme 'ftp', host 'st.example'" in out
    assert S not in out


def test_a_url_in_any_problems_value_is_cut_to_scheme_host_and_port(tmp_path):
    code, out = run(tmp_path, f'[log]\nlevel = "https://u:{S}@h.example:8443/x/{S}?token={S}"\n')
    assert code == 2 and "log.level: expected one of" in out and "got 'https://h.example:8443'" in out, out
    assert S not in out


def test_the_sinks_settings_never_quote_a_webhook_url(tmp_path):
    s = SinkSettings(str(tmp_path / "tracker.toml"), {})
    s.read_file({"webhooks": {"w": {"url": [f"https://hooks.example/h/{S}"], "secrets": ["whsec_x"]}}})
    s.build()
    reasons = [reason for _, key, reason in s.problems if key.endswith(".url")]
    assert reasons and all(S not in r and "hooks.example/h" not in r for r in reasons), s.problems


# ---- the operations endpoints where others reach them: allowed, and said


@pytest.mark.parametrize("http, warned", [
    ('listen = "0.0.0.0:8099"', "/metrics, /readyz and /status are served on the postback listener "
     "(0.0.0.0:8099), which vendors reach: set http.ops_listen to an address only your monitoring "
     "reaches, and http.status_token"),
    ('listen = "0.0.0.0:8099"\nops_listen = "0.0.0.0:9099"', "/status is served on 0.0.0.0:9099 "
     "(http.ops_listen) without http.status_token: whoever reaches that address reads it (vendor "
     "errors, volumes, consumers)"),
    (f'listen = "0.0.0.0:8099"\nops_listen = "0.0.0.0:9099"\nstatus_token = "{S}"', None),
    ('listen = "0.0.0.0:8099"\nops_listen = "127.0.0.1:9099"', None),
    ('listen = "127.0.0.1:8099"', None),
])
def test_operations_endpoints_others_reach_are_warned_of(tmp_path, http, warned):
    code, out = run(tmp_path, f"[http]\n{http}\n")
    assert code == 0, out
    warnings = [line.removeprefix("warning: ") for line in out.splitlines() if line.startswith("warning: ")]
    assert warnings == ([warned] if warned else [])
    assert S not in out
