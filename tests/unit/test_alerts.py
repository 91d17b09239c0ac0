"""deploy/prometheus-alerts.yml: every rule says what it means and what to do first, has its
runbook entry in deploy/OPERATIONS.md ("Alerts"), names commands in the form that works on a
deployed host, is valid for Prometheus (`promtool check rules`) and fires on the series that
mean trouble, not on those that do not (`promtool test rules`, on synthetic series).
(That every metric a rule names is exported: tests/integration/test_grafana_dashboard.py.)"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS_FILE = ROOT / "deploy" / "prometheus-alerts.yml"
GUIDE = ROOT / "deploy" / "OPERATIONS.md"
RULES = [r for g in yaml.safe_load(ALERTS_FILE.read_text())["groups"] for r in g["rules"]]
PROMTOOL = shutil.which("promtool")
# Skipped on a developer's machine without promtool; never under CI (CI set, as .ci/run does).
needs_promtool = pytest.mark.skipif(PROMTOOL is None and not os.environ.get("CI"),
                                    reason="promtool not installed (apt-get install prometheus)")


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    assert PROMTOOL, "promtool not installed: apt-get install prometheus"
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True)


def section(text: str, title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, f"deploy/OPERATIONS.md has no '## {title}' section"
    return m.group(1)


def test_every_rule_has_a_severity_a_summary_and_a_description():
    assert len(RULES) >= 22
    for r in RULES:
        assert r["labels"]["severity"] in ("page", "warning", "info"), r["alert"]
        assert r["annotations"]["summary"].strip(), r["alert"]
        assert len(r["annotations"]["description"].split()) >= 15, r["alert"]


def test_every_alert_has_one_runbook_entry_and_every_entry_an_alert():
    entries = re.findall(r"^- \*\*(\w+)\*\* \((page|warning|info)\)", section(GUIDE.read_text(), "Alerts"), re.M)
    assert sorted(name for name, _ in entries) == sorted(r["alert"] for r in RULES)
    severity = {r["alert"]: r["labels"]["severity"] for r in RULES}
    assert all(severity[name] == level for name, level in entries), entries


def test_commands_are_named_in_the_form_that_works_on_a_deployed_host():
    """A bare `tracker sinks ...` run by an operator reads no credentials (and, with the
    embedded cluster, no database): the guide's `tracker-admin` does."""
    bare = re.compile(r"`tracker (sinks|consumers|replay|migrate|check-config)\b")
    for r in RULES:
        for key, text in r["annotations"].items():
            assert not bare.search(text), (r["alert"], key, text)
    assert not bare.search(section(GUIDE.read_text(), "Alerts"))
    assert any("tracker-admin" in r["annotations"]["description"] for r in RULES)
    assert re.search(r"^alias tracker-admin=", GUIDE.read_text(), re.M)


@needs_promtool
def test_promtool_checks_the_rules():
    out = promtool("check", "rules", str(ALERTS_FILE))
    assert out.returncode == 0, out.stdout + out.stderr


# Synthetic series, one sample a minute, and what each alert should make of them. Annotations
# are left out of the comparison (the rules are tested without them): the expressions are.
TESTS = [
    {   # a vendor whose postbacks all come with a wrong token, and one with a stray 404 now and then
        "input_series": [
            {"series": 'tracker_postbacks_total{vendor="skycore",status="404",instance="a"}', "values": "0+5x60"},
            {"series": 'tracker_postbacks_total{vendor="skycore",status="200",instance="a"}', "values": "0+5x60"},
            {"series": 'tracker_postbacks_total{vendor="unknown",status="404",instance="a"}', "values": "0+3x60"},
            # a path naming no vendor, steadily: a callback URL misspelt (a scanner's few: above)
            {"series": 'tracker_postbacks_total{vendor="unknown",status="404",instance="b"}', "values": "0x20 0+30x40"},
            {"series": 'tracker_postbacks_total{vendor="engagespark",status="404",instance="a"}', "values": "0+1x60"},
            {"series": 'tracker_postbacks_total{vendor="engagespark",status="200",instance="a"}', "values": "0+100x60"},
            {"series": 'tracker_postbacks_total{vendor="twilio",status="403",instance="a"}', "values": "0+1x60"},
        ],
        "alert_rule_test": [
            {"eval_time": "5m", "alertname": "PostbacksRefusedNotFound", "exp_alerts": []},  # not for 10m yet
            {"eval_time": "40m", "alertname": "PostbacksRefusedNotFound", "exp_alerts": [
                {"exp_labels": {"severity": "page", "vendor": "skycore"}},
            ]},  # engagespark: 1 %; twilio: 15 in 15 minutes, under the count; unknown: its own rule
            {"eval_time": "18m", "alertname": "PostbacksToNoVendor", "exp_alerts": []},  # 3 a minute
            {"eval_time": "50m", "alertname": "PostbacksToNoVendor", "exp_alerts": [
                {"exp_labels": {"severity": "warning"}}]},
        ],
    },
    {   # a webhook sink: 410 once, then dead letters; another sink fine
        "input_series": [
            {"series": 'tracker_sink_disabled{sink="billing",instance="a"}', "values": "0x10 1x50"},
            {"series": 'tracker_sink_disabled{sink="crm",instance="a"}', "values": "0x60"},
            {"series": 'tracker_sink_deliveries_total{sink="billing",outcome="dead",instance="a"}', "values": "0x20 2x40"},
            {"series": 'tracker_sink_deliveries_total{sink="crm",outcome="dead",instance="a"}', "values": "0x60"},
        ],
        "alert_rule_test": [
            {"eval_time": "5m", "alertname": "SinkDisabledGone", "exp_alerts": []},
            {"eval_time": "12m", "alertname": "SinkDisabledGone", "exp_alerts": [
                {"exp_labels": {"severity": "page", "sink": "billing"}}]},
            {"eval_time": "55m", "alertname": "SinkDisabledGone", "exp_alerts": [  # still disabled
                {"exp_labels": {"severity": "page", "sink": "billing"}}]},
            {"eval_time": "25m", "alertname": "SinkEventsDeadLettered", "exp_alerts": [
                {"exp_labels": {"severity": "warning", "sink": "billing"}}]},
            {"eval_time": "59m", "alertname": "SinkEventsDeadLettered", "exp_alerts": []},  # no more since
        ],
    },
    {   # poll answers dropped: a series born at its first drop (no zero before it), one growing,
        # one that has not moved for hours
        "input_series": [
            {"series": 'tracker_poll_answers_dropped_total{vendor="sparrow",dropped="raw payload",instance="a"}', "values": "_x100 1x20"},
            {"series": 'tracker_poll_answers_dropped_total{vendor="skycore",dropped="report",instance="a"}', "values": "1+1x120"},
            {"series": 'tracker_poll_answers_dropped_total{vendor="twilio",dropped="report",instance="a"}', "values": "1x120"},
        ],
        "alert_rule_test": [
            {"eval_time": "110m", "alertname": "PollAnswersDropped", "exp_alerts": [
                {"exp_labels": {"severity": "warning", "vendor": "sparrow", "dropped": "raw payload"}},
                {"exp_labels": {"severity": "warning", "vendor": "skycore", "dropped": "report"}},
            ]},
        ],
    },
    {   # the embedded cluster started again once, at minute 30, on one host of two
        "input_series": [
            {"series": 'tracker_embedded_database_restarts_total{instance="a"}', "values": "0x30 1x60"},
            {"series": 'tracker_embedded_database_restarts_total{instance="b"}', "values": "0x90"},
        ],
        "alert_rule_test": [
            {"eval_time": "20m", "alertname": "EmbeddedDatabaseRestarted", "exp_alerts": []},
            {"eval_time": "40m", "alertname": "EmbeddedDatabaseRestarted", "exp_alerts": [
                {"exp_labels": {"severity": "warning", "instance": "a"}}]},
            {"eval_time": "80m", "alertname": "EmbeddedDatabaseRestarted", "exp_alerts": []},
        ],
    },
    {   # a quiet vendor's circuit open throughout, a half-open probe with nothing due reading 0
        # for one scrape in three: pages (max_over_time; reviewer B, session 28)
        "input_series": [
            {"series": 'tracker_circuit_open{vendor="sparrow",instance="a"}',
             "values": " ".join(["1", "1", "0"] * 20)},
        ],
        "alert_rule_test": [
            {"eval_time": "20m", "alertname": "VendorCircuitOpen", "exp_alerts": [
                {"exp_labels": {"severity": "page", "vendor": "sparrow"}}]},
        ],
    },
    {   # a scanner's 3 stray requests a minute, for an hour: never PostbacksToNoVendor
        "input_series": [
            {"series": 'tracker_postbacks_total{vendor="unknown",status="404",instance="a"}',
             "values": "0+3x60"},
        ],
        "alert_rule_test": [
            {"eval_time": "45m", "alertname": "PostbacksToNoVendor", "exp_alerts": []},
        ],
    },
    {   # one host's clock 700 s behind the database's from minute 30; another's 1 s ahead
        "input_series": [
            {"series": 'tracker_database_clock_offset_seconds{instance="a"}', "values": "0x30 700x60"},
            {"series": 'tracker_database_clock_offset_seconds{instance="b"}', "values": "-1x90"},
        ],
        "alert_rule_test": [
            {"eval_time": "35m", "alertname": "DaemonClockOff", "exp_alerts": []},
            {"eval_time": "45m", "alertname": "DaemonClockOff", "exp_alerts": [
                {"exp_labels": {"severity": "warning", "instance": "a"}}]},
        ],
    },
    {   # a listener full for a few minutes on one host
        "input_series": [
            {"series": 'tracker_http_connections_refused_total{listener="listen",instance="a"}',
             "values": "0x30 0+50x5 250x60"},
            {"series": 'tracker_http_connections_refused_total{listener="listen",instance="b"}', "values": "0x95"},
            {"series": 'tracker_http_connections_shed_total{listener="listen",instance="a"}', "values": "0x95"},
            # slow clients shed to make room, none refused: still a full listener
            {"series": 'tracker_http_connections_shed_total{listener="listen",instance="b"}',
             "values": "0x60 0+30x5 150x30"},
        ],
        "alert_rule_test": [
            {"eval_time": "20m", "alertname": "ListenerFull", "exp_alerts": []},
            {"eval_time": "33m", "alertname": "ListenerFull", "exp_alerts": [
                {"exp_labels": {"severity": "warning", "instance": "a", "listener": "listen"}}]},
            {"eval_time": "55m", "alertname": "ListenerFull", "exp_alerts": []},
            {"eval_time": "63m", "alertname": "ListenerFull", "exp_alerts": [
                {"exp_labels": {"severity": "warning", "instance": "b", "listener": "listen"}}]},
        ],
    },
    {   # a database away from one replica for 10 minutes; another replica down altogether
        "input_series": [
            {"series": 'tracker_database_up{instance="a"}', "values": "1x10 0x10 1x20"},
            {"series": 'tracker_database_up{instance="b"}', "values": "1x40"},
            {"series": 'up{job="tracker",instance="a"}', "values": "1x40"},
            {"series": 'up{job="tracker",instance="c"}', "values": "1x10 0x30"},
        ],
        "alert_rule_test": [
            {"eval_time": "11m", "alertname": "TrackerDatabaseDown", "exp_alerts": []},  # not 2 min yet
            {"eval_time": "15m", "alertname": "TrackerDatabaseDown", "exp_alerts": [
                {"exp_labels": {"severity": "page", "instance": "a"}}]},
            {"eval_time": "25m", "alertname": "TrackerDatabaseDown", "exp_alerts": []},
            {"eval_time": "13m", "alertname": "TrackerReplicaDown", "exp_alerts": []},
            {"eval_time": "20m", "alertname": "TrackerReplicaDown", "exp_alerts": [
                {"exp_labels": {"severity": "page", "instance": "c", "job": "tracker"}}]},
        ],
    },
    {   # postbacks answered 503 while vendors still call; wrong-token 404s beside them are no part of it
        "input_series": [
            {"series": 'tracker_postbacks_total{vendor="skycore",status="200",instance="a"}', "values": "0+100x10 1000x30"},
            {"series": 'tracker_postbacks_total{vendor="skycore",status="503",instance="a"}', "values": "0x10 0+10x30"},
            {"series": 'tracker_postbacks_total{vendor="unknown",status="404",instance="a"}', "values": "0+1000x40"},
        ],
        "alert_rule_test": [
            {"eval_time": "25m", "alertname": "PostbacksRefusedUnavailable", "exp_alerts": [
                {"exp_labels": {"severity": "page"}}]},
        ],
    },
    {   # many messages given up as unknown at one vendor, few at another
        "input_series": [
            {"series": 'tracker_transitions_total{vendor="sparrow",to_state="unknown",instance="a"}', "values": "0+2x120"},
            {"series": 'tracker_transitions_total{vendor="sparrow",to_state="delivered",instance="a"}', "values": "0+5x120"},
            {"series": 'tracker_transitions_total{vendor="skycore",to_state="unknown",instance="a"}', "values": "0+1x120"},
            {"series": 'tracker_transitions_total{vendor="skycore",to_state="delivered",instance="a"}', "values": "0+50x120"},
        ],
        "alert_rule_test": [
            {"eval_time": "100m", "alertname": "MessagesGivenUpUnknown", "exp_alerts": [
                {"exp_labels": {"severity": "warning", "vendor": "sparrow"}}]},
        ],
    },
]


@needs_promtool
def test_the_new_rules_fire_on_trouble_and_only_there(tmp_path):
    bare = {"groups": [{"name": "sms-tracker", "rules": [
        {k: v for k, v in r.items() if k != "annotations"} for r in RULES]}]}
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(bare))
    tested = {t["alertname"] for case in TESTS for t in case["alert_rule_test"]}
    assert tested <= {r["alert"] for r in RULES}
    spec = {"rule_files": ["rules.yml"], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", **case} for case in TESTS]}
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    out = promtool("test", "rules", "tests.yml", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
