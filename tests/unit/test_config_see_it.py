"""[retention] and http.status_token (issue #14) in the configuration."""
from __future__ import annotations

import pytest

from tracker import masking
from tracker import logging as tlog
from tracker.config import ConfigError, load


def test_retention_defaults_keep_every_kind_bounded():
    r = load(None, env={}).retention
    days = {k: getattr(r, f"{k}_days") for k in ("observations", "postbacks", "orphans", "transitions",
                                                 "refused_rows", "final_messages")}
    assert all(0 < d <= 90 for d in days.values()), days
    assert r.batch_size > 0 and r.interval_s > 0


def test_zero_days_keeps_a_kind_for_ever_but_not_a_negative_one(tmp_path):
    f = tmp_path / "t.toml"
    f.write_text("[retention]\npostbacks_days = 0\norphans_days = -1\nbatch_size = 0\n")
    with pytest.raises(ConfigError) as e:
        load(str(f), env={})
    text = str(e.value)
    assert "retention.orphans_days: must not be negative" in text
    assert "retention.batch_size: must be positive" in text
    assert "postbacks_days" not in text
    f.write_text("[retention]\npostbacks_days = 0\n")
    assert load(str(f), env={}).retention.postbacks_days == 0


def test_status_token_is_a_secret_checked_and_masked(tmp_path, monkeypatch):
    with pytest.raises(ConfigError) as e:
        load(None, env={"TRACKER_HTTP__STATUS_TOKEN": "short?"})
    assert "TRACKER_HTTP__STATUS_TOKEN: must be at least 16 URL-safe characters" in str(e.value)
    assert "short?" not in str(e.value)
    secret = tmp_path / "status-token"
    secret.write_text("f00dfeedf00dfeed1234\n")
    monkeypatch.setattr(masking, "_secrets", set(masking._secrets))
    monkeypatch.setattr(masking, "_secret_re", None)
    cfg = load(None, env={"TRACKER_HTTP__STATUS_TOKEN_FILE": str(secret)})
    assert cfg.http.status_token == "f00dfeedf00dfeed1234"
    assert "f00dfeedf00dfeed1234" in masking._secrets
