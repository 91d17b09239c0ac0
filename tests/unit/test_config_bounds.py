"""Configuration values check-config must refuse, not leave `tracker run` to trip on: durations
and day counts without an upper bound (timedelta overflow, timestamps out of range), NUL
characters in file names, an empty database.state_dir."""
from __future__ import annotations

import io
from pathlib import Path

import pytest

from tracker.config import ConfigError, check_config, load
from tracker.config.schema import _FIELDS, _MAX, MAX_DAYS, MAX_SECONDS, _is_duration


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "tracker.toml"
    p.write_text(text)
    return str(p)


def check(path: str | None, env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    out = io.StringIO()
    code = check_config(path, env={} if env is None else env, out=out)
    return code, out.getvalue().splitlines()


def env_name(section: str, key: str) -> str:
    where = "VENDORS__SKYCORE" if section == "vendors" else section.upper()
    return f"TRACKER_{where}__{key.upper()}"


DURATIONS = [(section, key) for section, fields in _FIELDS.items() for key in fields if _is_duration(key)]


def test_every_duration_and_day_count_has_an_upper_bound():
    assert len(DURATIONS) >= 20  # every *_s, *_ms and *_days key of every section
    assert ("vendors", "rate_limit_per_s") not in DURATIONS  # a rate, not a length of time
    for section, key in DURATIONS:
        assert key in _MAX, (section, key)
    assert _MAX["interval_s"][0] == MAX_SECONDS == 10 * 365 * 86400
    assert _MAX["observations_days"][0] == MAX_DAYS == 36500
    assert _MAX["pause_ms"][0] == MAX_SECONDS * 1000
    assert check(None)[0] == 0  # the defaults are within them


@pytest.mark.parametrize("section,key", DURATIONS)
def test_a_duration_beyond_its_bound_is_refused_naming_key_and_reason(section, key):
    limit, unit, words = _MAX[key]
    name = env_name(section, key)
    with pytest.raises(ConfigError) as ei:
        load(None, env={name: repr(limit * 1.01)})
    mine = [p for p in ei.value.problems if p.key == name]
    assert len(mine) == 1 and mine[0].reason.startswith(f"must be at most {limit:.0f} {unit} ({words})")
    # The bound itself is allowed (a check across keys may still object to it, not this one).
    try:
        load(None, env={name: repr(float(limit))})
    except ConfigError as e:
        assert not any("at most" in p.reason for p in e.problems if p.key == name)


def test_the_reported_overflows_are_problems_of_check_config(tmp_path):
    path = write(tmp_path, "[retention]\ninterval_s = 1e14\nobservations_days = 1e7\n"
                           "[vendors.sparrow]\ntracking_window_s = 1e300\n")
    code, lines = check(path)
    assert code == 2
    assert lines[0] == "config has 3 problems:"
    assert f"{path}: retention.interval_s: must be at most 315360000 s (10 years), got 1e+14" in lines
    assert f"{path}: retention.observations_days: must be at most 36500 days (100 years), got 1e+07" in lines
    assert any(line.startswith(f"{path}: vendors.sparrow.tracking_window_s: must be at most") for line in lines)


@pytest.mark.parametrize("section,key", [("vendors.skycore", "postback_token_file"),
                                         ("http", "status_token_file"), ("database", "dsn_file")])
def test_a_nul_in_a_secret_file_name_is_a_problem_of_its_key(tmp_path, section, key):
    path = write(tmp_path, f'[{section}]\n{key} = "a\\u0000b"\n')
    code, lines = check(path)
    assert code == 2
    assert lines[1:] == [(f"{path}: {section}.{key}: the file name contains a NUL character, "
                         "which no file name may")]


def test_a_nul_in_a_sinks_secrets_file_name_is_a_problem_too(tmp_path):
    path = write(tmp_path, '[sinks.webhooks.crm]\nurl = "https://crm.example.com/hook"\n'
                           'secrets_file = "~a\\u0000b"\n')
    code, lines = check(path)
    assert code == 2
    assert len(lines) == 2 and "sinks.webhooks.crm.secrets_file" in lines[1] and "NUL" in lines[1]


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_state_dir_is_refused(tmp_path, value):
    path = write(tmp_path, f'[database]\nstate_dir = "{value}"\n')
    code, lines = check(path)
    assert code == 2
    assert lines[1].startswith(f"{path}: database.state_dir: must name a directory")
    code, lines = check(None, env={"TRACKER_DATABASE__STATE_DIR": value})
    assert code == 2 and lines[1].startswith("environment: TRACKER_DATABASE__STATE_DIR: must name a directory")


def test_a_nul_in_state_dir_is_refused(tmp_path):
    path = write(tmp_path, '[database]\nstate_dir = "/var/lib/a\\u0000b"\n')
    code, lines = check(path)
    assert code == 2 and lines[1] == f"{path}: database.state_dir: contains a NUL character, which no file name may"


def test_a_retention_batch_size_beyond_what_a_batch_may_hold_is_refused(tmp_path):
    # retention.batch_size = 3000000000 passed check-config, then every retention batch failed
    # (the batch functions take an int), every sweep, for every kind.
    path = write(tmp_path, "[retention]\nbatch_size = 3000000000\n")
    code, lines = check(path)
    assert code == 2
    assert lines[1:] == [f"{path}: retention.batch_size: must be at most 50000 rows "
                         "(a batch holds its locks for as long as it runs), got 3e+09"]
    assert check(write(tmp_path, "[retention]\nbatch_size = 50000\n"))[0] == 0
    assert check(write(tmp_path, "[retention]\nbatch_size = 50001\n"))[0] == 2


def test_a_vendor_setting_with_a_few_allowed_values_is_checked_by_check_config(tmp_path):
    # Sparrow's report_method = "PUT" passed check-config and was refused first at the poll.
    path = write(tmp_path, '[vendors.sparrow]\nreport_method = "PUT"\nreport_path = "foo"\n')
    code, lines = check(path)
    assert code == 2
    assert sorted(lines[1:]) == [
        f"{path}: vendors.sparrow.report_method: expected one of GET, POST, got 'PUT'",
        f"{path}: vendors.sparrow.report_path: expected one of delivery, delivered, got 'foo'"]
    ok = write(tmp_path, '[vendors.sparrow]\nreport_method = "post"\nreport_path = "/delivered/"\n')
    assert check(ok)[0] == 0
