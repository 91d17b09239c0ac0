"""A postback token rotated without losing a postback: the previous token is accepted beside the
new one while `vendors.<vendor>.previous_postback_token` is set, checked like the token, kept
secret, and shown by check-config. (Admission: test_postbacks_core; over HTTP:
tests/integration/test_postbacks.py.)"""
from __future__ import annotations

import io

from tracker.config.loader import load
from tracker.config.redaction import secrets_of, vendor_secrets_of
from tracker.config.report import check_config
from tests.unit.test_config import problems_of, write

NEW, OLD = "new-token-0123456789", "old-token-0123456789"


def test_the_previous_token_is_loaded_and_kept_secret(tmp_path):
    (tmp_path / "old").write_text(OLD + "\n")
    cfg = load(write(tmp_path, f'[vendors.skycore]\npostback_token = "{NEW}"\n'
                               'previous_postback_token_file = "old"\n'), env={})
    assert (cfg.vendors["skycore"].postback_token, cfg.vendors["skycore"].previous_postback_token) == (NEW, OLD)
    assert OLD in vendor_secrets_of(cfg) and OLD in secrets_of(cfg)  # masked in logs and in rows
    env = {"TRACKER_VENDORS__SPARROW__POSTBACK_TOKEN": NEW,
           "TRACKER_VENDORS__SPARROW__PREVIOUS_POSTBACK_TOKEN": OLD}
    assert load(None, env=env).vendors["sparrow"].previous_postback_token == OLD


def test_the_previous_token_is_checked_as_the_token_is(tmp_path):
    problems = problems_of(f"""
[vendors.skycore]
postback_token = "{NEW}"
previous_postback_token = "Xq7zK"
[vendors.sparrow]
postback_token = "{NEW}"
previous_postback_token = "Wv9/pL3mN8rT2kQ5sJ"
""", tmp_path)
    assert "shorter than 16 characters" in problems["vendors.skycore.previous_postback_token"]
    assert "URL-safe" in problems["vendors.sparrow.previous_postback_token"]
    assert "Xq7zK" not in str(problems) and "Wv9" not in str(problems)


def test_the_previous_token_needs_a_new_one_beside_it(tmp_path):
    problems = problems_of(f"""
[vendors.skycore]
previous_postback_token = "{OLD}"
[vendors.twilio]
postback_token = "{OLD}"
previous_postback_token = "{OLD}"
""", tmp_path)
    assert problems["vendors.skycore.previous_postback_token"].startswith(
        "is set without vendors.skycore.postback_token")
    assert problems["vendors.twilio.previous_postback_token"].startswith(
        "is the same as vendors.twilio.postback_token")
    assert OLD not in str(problems)


def test_check_config_says_a_rotation_is_under_way(tmp_path):
    path = write(tmp_path, f'[vendors.skycore]\npostback_token = "{NEW}"\nprevious_postback_token = "{OLD}"\n')
    out = io.StringIO()
    assert check_config(path, env={}, out=out) == 0
    line = next(x for x in out.getvalue().splitlines() if x.strip().startswith("vendor skycore:"))
    assert "previous_postback_token accepted too" in line
    assert OLD not in out.getvalue() and NEW not in out.getvalue()


def test_check_config_says_a_twilio_rotation_is_under_way(tmp_path):
    # Twilio's callbacks are signed with its auth token: its previous_auth_token (and a SharedKey's
    # previous secret) are its rotation, which check-config did not mention: nothing reminded to
    # remove them.
    path = write(tmp_path, f'[vendors.twilio]\npostback_token = "{NEW}"\naccount_sid = "AC1"\n'
                           f'auth_token = "new-auth-token-0123"\nprevious_auth_token = "{OLD}"\n')
    out = io.StringIO()
    assert check_config(path, env={}, out=out) == 0
    line = next(x for x in out.getvalue().splitlines() if x.strip().startswith("vendor twilio:"))
    assert "previous_auth_token accepted too" in line, line
    assert OLD not in out.getvalue()
