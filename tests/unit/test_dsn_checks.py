"""database.dsn: checked by asyncpg's own parser at load (check-config refuses what `tracker run`
would crash on), and its password hidden whatever characters it holds (redaction, logging)."""
from __future__ import annotations

import io
import logging as stdlib_logging
from urllib.parse import quote, quote_plus

import orjson
import pytest
import structlog
from asyncpg import connect_utils
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.fixtures import PROPERTY
from tracker import masking
from tracker import logging as tlog
from tracker.config import check_config, load, redact_dsn, secrets_of
from tracker.config import dsn as dsn_mod
from tracker.config.dsn import DsnParserChanged, asyncpg_refusal, dsn_problem
from tracker.db.embedded import socket_dsn

SECRET = "s3cretPW-xyz"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch):
    monkeypatch.setattr(masking, "_secrets", set())
    monkeypatch.setattr(masking, "_secret_re", None)
    for name in ("PGSSLMODE", "PGSSLROOTCERT", "PGSERVICE", "PGPASSFILE", "PGHOST", "PGPORT"):
        monkeypatch.delenv(name, raising=False)
    yield
    structlog.reset_defaults()
    root = stdlib_logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, tlog._StdlibBridge)]:
        root.removeHandler(h)


def check_dsn(dsn: str) -> tuple[int, list[str]]:
    out = io.StringIO()
    code = check_config(None, env={"TRACKER_DATABASE__DSN": dsn}, out=out)
    return code, out.getvalue().splitlines()


# ---- check-config refuses what asyncpg would, naming the key, without the password


@pytest.mark.parametrize("dsn,reason", [
    (f"host=127.0.0.1 port=5432 user=postgres dbname=test password={SECRET}",
     ("a libpq key=value string is not accepted (asyncpg, which the tracker connects with, takes only "
     "URLs): write it as postgresql://user:password@host:port/dbname")),
    (f"postgresql://postgres:{SECRET}@127.0.0.1:5432/x?sslmode=bogus",
     ("asyncpg refuses it: `sslmode` parameter must be one of: disable, allow, prefer, require, "
     "verify-ca, verify-full")),
    (f"mysql://admin:{SECRET}@db/x",
     "asyncpg refuses it: invalid DSN: scheme is expected to be either \"postgresql\" or \"postgres\", got 'mysql'"),
    # a quoted piece of the URL is not echoed: asyncpg may have split a password to find it
    (f"postgresql://u@h/db?password={SECRET}&x", "asyncpg refuses it: bad query field: '…'"),
    # asyncpg's own words would quote part of the password ("invalid literal for int(): 's3cr'")
    (f"postgresql://u:s3cr/{SECRET}@h/db", ("asyncpg cannot parse the URL because of a character in its "
     "password (hidden)")),
    (f"postgresql://u:[{SECRET}@h/db", ("asyncpg cannot parse the URL because of a character in its "
     "password (hidden)")),
])
def test_a_dsn_asyncpg_refuses_is_a_problem_of_check_config(dsn, reason):
    code, lines = check_dsn(dsn)
    assert code == 2
    assert len(lines) == 2 and lines[1].startswith(f"environment: TRACKER_DATABASE__DSN: {reason}")
    assert SECRET not in "\n".join(lines) and "s3cr" not in "\n".join(lines)


def test_check_config_reports_the_dsn_in_the_file_by_its_dotted_key(tmp_path):
    path = tmp_path / "tracker.toml"
    path.write_text(f'[database]\ndsn = "postgresql://u:{SECRET}@h/db?sslmode=bogus"\n')
    out = io.StringIO()
    assert check_config(str(path), env={}, out=out) == 2
    assert out.getvalue().splitlines()[1].startswith(f"{path}: database.dsn: asyncpg refuses it: `sslmode`")


@pytest.mark.parametrize("dsn", [
    "postgresql://postgres:pa ss word@127.0.0.1:5432/x",
    "postgres://u@db.internal/tracker?sslmode=require",
    "postgresql://u:p%2Fw@h1:5432,h2:5433/db?target_session_attrs=read-write",
    socket_dsn("/var/lib/tracker/run", 5432, "tracker"),  # what the embedded cluster hands out
])
def test_dsns_asyncpg_takes_pass(dsn):
    assert dsn_problem(dsn) is None
    assert load(None, env={"TRACKER_DATABASE__DSN": dsn}).database.dsn == dsn


def test_asyncpg_internal_parser_still_checks():
    """A canary: should asyncpg's internal parser stop refusing (or be called wrongly), the
    check above would accept every DSN; this fails instead."""
    assert asyncpg_refusal("postgresql://u@h/db") is None
    assert "sslmode" in (asyncpg_refusal("postgresql://u@h/db?sslmode=bogus") or "")
    assert "scheme" in (asyncpg_refusal("host=h dbname=d") or "")


def test_a_changed_asyncpg_parser_fails_loudly(monkeypatch):
    monkeypatch.delattr(connect_utils, dsn_mod._PARSER_NAME)
    with pytest.raises(DsnParserChanged, match="is gone"):
        dsn_problem("postgresql://u@h/db")
    monkeypatch.setattr(connect_utils, dsn_mod._PARSER_NAME, lambda dsn, host: None, raising=False)
    with pytest.raises(DsnParserChanged, match="not called as"):
        dsn_problem("postgresql://u@h/db")

    def refuses_arguments(*, dsn, host):  # as a new asyncpg might check them itself
        raise TypeError("host must be a str")

    monkeypatch.setattr(connect_utils, dsn_mod._PARSER_NAME, refuses_arguments, raising=False)
    with pytest.raises(DsnParserChanged, match="refused its arguments"):
        dsn_problem("postgresql://u@h/db")


# ---- the password hidden, whatever it holds


def test_the_reported_dsn_is_logged_without_its_password():
    dsn = "postgresql://postgres:pa ss word@127.0.0.1:5432/x"
    load(None, env={"TRACKER_DATABASE__DSN": dsn})  # registers the password with tracker.logging
    assert "pa ss word" in masking._secrets
    out = io.StringIO()
    tlog.configure("info", "json", stream=out, cache=False)
    log = tlog.get_logger("tracker.test")
    log.info("database connected", dsn=redact_dsn(dsn))  # as tracker.app logs it
    log.warning("connect failed", error=f"could not connect with {dsn}")
    text = out.getvalue()
    assert "pa ss" not in text and "ss word" not in text
    assert orjson.loads(text.splitlines()[0])["dsn"] == "postgresql://postgres:***@127.0.0.1:5432/x"


def test_every_form_of_the_password_is_a_secret():
    cfg = load(None, env={"TRACKER_DATABASE__DSN": "postgresql://u:p%40ss%20w@h/db?sslpassword=k%2By+z"})
    secrets = secrets_of(cfg)
    assert {"p%40ss%20w", "p@ss w", "k%2By+z", "k+y z"} <= set(secrets)


@pytest.mark.parametrize("dsn,expected", [
    ("postgresql://postgres:pa ss word@127.0.0.1:5432/x", "postgresql://postgres:***@127.0.0.1:5432/x"),
    ("postgresql://u:pa\tss@h/db", "postgresql://u:***@h/db"),
    ("postgresql://u@h/db?sslmode=require&password=a b&x=1", "postgresql://u@h/db?sslmode=require&password=***&x=1"),
    ("postgresql://u:p@ss:w@h/db?password=q#frag", "postgresql://u:***@h/db?password=***"),
    ("postgresql://u@h/db?sslmode=require&password=abc#SecretTail", "postgresql://u@h/db?sslmode=require&password=***"),
])
def test_redact_dsn_whatever_the_password_holds(dsn, expected):
    assert redact_dsn(dsn) == expected


@PROPERTY
@given(st.text(min_size=1))
def test_a_percent_encoded_password_is_never_shown(password):
    dsn = f"postgresql://user:{quote(password, safe='')}@db.example:5432/tracker?sslmode=require"
    assert redact_dsn(dsn) == "postgresql://user:***@db.example:5432/tracker?sslmode=require"
    assert password in secrets_of_dsn(dsn)


@PROPERTY
@given(st.text(min_size=1).filter(lambda p: not set(p) & set("/?#")))
def test_a_password_as_typed_is_never_shown(password):
    """Unencoded, as an operator may type it: only / ? and # end a URL's userinfo."""
    dsn = f"postgresql://user:{password}@db.example:5432/tracker"
    assert redact_dsn(dsn) == "postgresql://user:***@db.example:5432/tracker"
    assert password in secrets_of_dsn(dsn)


@PROPERTY
@given(st.text(min_size=1))
def test_a_query_password_is_never_shown(password):
    dsn = f"postgresql://user@db.example/tracker?password={quote_plus(password)}&sslmode=require"
    assert redact_dsn(dsn) == "postgresql://user@db.example/tracker?password=***&sslmode=require"
    assert password in secrets_of_dsn(dsn)


def secrets_of_dsn(dsn: str) -> list[str]:
    from tracker.config.redaction import dsn_passwords

    return dsn_passwords(dsn)



@pytest.mark.parametrize("dsn", [
    "postgresql://u@h/db?password=Tr0ub4dor&SecretTail",  # asyncpg splits the password at "&"
    "postgresql://tracker:1234?SecretTail@127.0.0.1:5432/tracker",  # or the userinfo at "?"
])
def test_no_piece_of_a_password_asyncpg_split_itself_is_echoed(dsn):
    problem = dsn_problem(dsn)
    assert problem is not None and "SecretTail" not in problem and "Tr0ub4dor" not in problem
