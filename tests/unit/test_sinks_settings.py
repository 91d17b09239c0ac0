"""[sinks...] configuration: what loads, what check-config refuses (file, key, reason), and that
secrets never show."""
from __future__ import annotations

import base64
import io

import pytest

from tracker import config
from tracker.logging import scrub
from tracker.sinks.policy import DEFAULT_RETRY_SCHEDULE_S

SECRET = "whsec_" + base64.b64encode(bytes(range(7, 39))).decode()
SECRET2 = "whsec_" + base64.b64encode(bytes(range(50, 82))).decode()


def load(tmp_path, text: str, env: dict | None = None):
    path = tmp_path / "tracker.toml"
    path.write_text(text)
    return config.load(str(path), env or {})


def problems(tmp_path, text: str, env: dict | None = None) -> list[str]:
    with pytest.raises(config.ConfigError) as e:
        load(tmp_path, text, env)
    return [str(p) for p in e.value.problems]


def test_a_full_configuration_loads(tmp_path):
    (tmp_path / "crm.secrets").write_text(f"{SECRET}\n\n{SECRET2}\n")
    cfg = load(tmp_path, f"""
[sinks]
poll_interval_s = 2
batch_size = 100
[sinks.webhooks.crm]
url = "https://crm.example.com/hooks/sms"
secrets_file = "crm.secrets"
vendors = ["skycore", "sparrow"]
states = ["delivered", "failed"]
timeout_s = 5
retry_schedule_s = [0, 1, 10]
concurrency = 4
[sinks.webhooks.audit]
url = "http://127.0.0.1:9000/"
secrets = ["{SECRET}"]
[sinks.nats.bus]
servers = ["nats://127.0.0.1:4222", "tls://nats.example.com:4443"]
stream = "SMS"
subject_prefix = "sms.events"
create_stream = true
""")
    s = cfg.sinks
    assert s.poll_interval_s == 2.0 and s.batch_size == 100
    crm = s.webhooks["crm"]
    assert crm.secrets == (SECRET, SECRET2) and crm.vendors == ("skycore", "sparrow")
    assert crm.states == ("delivered", "failed") and crm.retry_schedule_s == (0.0, 1.0, 10.0)
    assert crm.timeout_s == 5.0 and crm.concurrency == 4
    assert s.webhooks["audit"].retry_schedule_s == DEFAULT_RETRY_SCHEDULE_S
    bus = s.nats["bus"]
    assert bus.stream == "SMS" and bus.subject_prefix == "sms.events" and bus.create_stream
    assert SECRET not in repr(cfg) and SECRET2 not in repr(cfg)
    text = "\n".join(config.summary(cfg))
    assert "sink crm: webhook to https://crm.example.com, 2 secret(s)" in text
    assert "/hooks/sms" not in text and SECRET not in text
    assert "sink bus: NATS JetStream stream SMS, subjects sms.events.>" in text
    assert scrub(f"oops {SECRET} and {SECRET2.removeprefix('whsec_')}") == "oops *** and ***"
    assert scrub("POST https://crm.example.com/hooks/sms failed") == "POST https://crm.example.com*** failed"


def test_environment_overrides_and_defines_sinks(tmp_path):
    cfg = load(tmp_path, f'[sinks.webhooks.crm]\nurl = "https://a.example.com/"\nsecrets = ["{SECRET}"]\n', {
        "TRACKER_SINKS__WEBHOOKS__CRM__URL": "https://b.example.com/x",
        "TRACKER_SINKS__WEBHOOKS__CRM__SECRETS": f"{SECRET2},{SECRET}",
        "TRACKER_SINKS__WEBHOOKS__CRM__RETRY_SCHEDULE_S": "0, 0.5,2",
        "TRACKER_SINKS__NATS__BUS__SERVERS": "nats://u:pw-123456@127.0.0.1:4222",
        "TRACKER_SINKS__POLL_INTERVAL_S": "0.5",
    })
    crm = cfg.sinks.webhooks["crm"]
    assert crm.url == "https://b.example.com/x" and crm.secrets == (SECRET2, SECRET)
    assert crm.retry_schedule_s == (0.0, 0.5, 2.0) and cfg.sinks.poll_interval_s == 0.5
    assert cfg.sinks.nats["bus"].servers == ("nats://u:pw-123456@127.0.0.1:4222",)
    assert "pw-123456" in config.secrets_of(cfg)


def test_a_sink_misspelt_in_an_environment_variable_is_said_so_at_the_variable(tmp_path):
    # TRACKER_SINKS__WEBHOOKS__BILLNG__ENABLED (OPERATIONS.md's way to keep a replica from
    # running a sink) was reported as the file's sink `billng` missing its url and secrets.
    text = f'[sinks.webhooks.billing]\nurl = "https://a.example.com/"\nsecrets = ["{SECRET}"]\n'
    found = problems(tmp_path, text, {"TRACKER_SINKS__WEBHOOKS__BILLNG__ENABLED": "false",
                                      "TRACKER_SINKS__NATS__BSU__STREAM": "EVENTS"})
    assert found == [
        "environment: TRACKER_SINKS__NATS__BSU__STREAM: names sink 'bsu', which the file has not, "
        "with no servers: a misspelt sink name?",
        "environment: TRACKER_SINKS__WEBHOOKS__BILLNG__ENABLED: names sink 'billng', which the "
        "file has not, with no url: a misspelt sink name? (the file's webhooks: billing)"], found
    # a sink the environment alone defines, with where it delivers to, is one as before
    cfg = load(tmp_path, text, {"TRACKER_SINKS__WEBHOOKS__AUDIT__URL": "https://b.example.com/",
                                "TRACKER_SINKS__WEBHOOKS__AUDIT__SECRETS": SECRET})
    assert set(cfg.sinks.webhooks) == {"billing", "audit"}


def test_check_config_names_every_mistake(tmp_path):
    found = problems(tmp_path, f"""
[sinks.webhooks.crm]
url = "ftp://crm.example.com/"
secrets = ["{SECRET}", "plain-text-secret", "whsec_c2hvcnQ="]
states = ["delivered", "delivred", "submitted"]
vendors = ["skycore", "twitterr"]
retry_schedule_s = []
concurrency = 0
[sinks.webhooks.nosecret]
url = "https://x.example.com/"
[sinks.webhooks.nourl]
secrets = ["{SECRET}"]
[sinks.nats.bus]
servers = []
subject_prefix = "sms..events"
stream = "has space"
[sinks.nats.bus2]
servers = ["http://127.0.0.1:4222"]
max_age_days = -1
[sinks.nats.bus3]
servers = ["nats://127.0.0.1:4222"]
max_age_days = 0.001
[sinks.webhooks.Bad_Name]
url = "https://x.example.com/"
[sinks.webhooks.typo]
urll = "https://x.example.com/"
""")
    text = "\n".join(found)
    f = str(tmp_path / "tracker.toml")
    expect = [
        (f"{f}: sinks.webhooks.crm.url:", "URL"),
        (f"{f}: sinks.webhooks.crm.secrets:", "secret 2: must start with 'whsec_'"),
        (f"{f}: sinks.webhooks.crm.secrets:", "secret 3: decodes to 5 bytes"),
        (f"{f}: sinks.webhooks.crm.states:", "unknown state 'delivred'"),
        (f"{f}: sinks.webhooks.crm.states:", "unknown state 'submitted'"),
        (f"{f}: sinks.webhooks.crm.vendors:", "unknown vendor 'twitterr'"),
        (f"{f}: sinks.webhooks.crm.retry_schedule_s:", "1 to 50 delays"),
        (f"{f}: sinks.webhooks.crm.concurrency:", "at least 1"),
        (f"{f}: sinks.webhooks.nosecret.secrets:", "at least one whsec_ secret is required"),
        (f"{f}: sinks.webhooks.nourl.url:", "required"),
        (f"{f}: sinks.nats.bus.servers:", "at least one server is required"),
        (f"{f}: sinks.nats.bus.subject_prefix:", "subject tokens"),
        (f"{f}: sinks.nats.bus.stream:", "stream name"),
        (f"{f}: sinks.nats.bus2.servers:", "nats://"),
        (f"{f}: sinks.nats.bus2.max_age_days:", "-1"),
        (f"{f}: sinks.nats.bus3.max_age_days:", "less than duplicate_window_s (120 s): JetStream refuses"),
        (f"{f}: sinks.webhooks.Bad_Name:", "lower-case"),
        (f"{f}: sinks.webhooks.typo.urll:", "unknown key"),
    ]
    for where, what in expect:
        assert any(p.startswith(where) and what in p for p in found), (where, what, text)
    assert "plain-text-secret" not in text and SECRET not in text


def test_secrets_and_secrets_file_together_and_unreadable_file(tmp_path):
    found = problems(tmp_path, f'[sinks.webhooks.a]\nurl = "https://x.example.com/"\nsecrets = ["{SECRET}"]\n'
                               'secrets_file = "nowhere.txt"\n')
    assert any("give either sinks.webhooks.a.secrets or sinks.webhooks.a.secrets_file" in p for p in found)
    found = problems(tmp_path, '[sinks.webhooks.a]\nurl = "https://x.example.com/"\nsecrets_file = "nowhere.txt"\n')
    assert any("sinks.webhooks.a.secrets_file: cannot read secret file" in p for p in found)


def test_a_url_and_servers_holding_credentials_may_be_given_as_files(tmp_path):
    # A systemd credential, as every other secret: the URL's token, the NATS password.
    (tmp_path / "crm-url").write_text("https://crm.example.com/hooks/tok-8c1f2a9e\n")
    (tmp_path / "nats-servers").write_text("nats://u:pw-123456@127.0.0.1:4222\n\nnats://u:pw-123456@127.0.0.2:4222\n")
    cfg = load(tmp_path, f'[sinks.webhooks.crm]\nurl_file = "crm-url"\nsecrets = ["{SECRET}"]\n'
                         '[sinks.nats.bus]\nservers_file = "nats-servers"\n')
    assert cfg.sinks.webhooks["crm"].url == "https://crm.example.com/hooks/tok-8c1f2a9e"
    assert cfg.sinks.nats["bus"].servers == ("nats://u:pw-123456@127.0.0.1:4222", "nats://u:pw-123456@127.0.0.2:4222")
    assert {"/hooks/tok-8c1f2a9e", "pw-123456"} <= set(config.secrets_of(cfg))
    env = {"TRACKER_SINKS__NATS__BUS__SERVERS_FILE": "nats-servers"}  # replaces the file's servers
    cfg = load(tmp_path, '[sinks.nats.bus]\nservers = ["nats://127.0.0.9:4222"]\n', env)
    assert len(cfg.sinks.nats["bus"].servers) == 2
    # as with secrets_file: not both, a file that cannot be read, and a value the file holds checked
    (tmp_path / "ftp-url").write_text("ftp://u:pw-654321@crm.example.com/x\n")
    found = problems(tmp_path, f'[sinks.webhooks.a]\nurl = "https://x.example.com/"\nurl_file = "crm-url"\n'
                               f'secrets = ["{SECRET}"]\n[sinks.webhooks.b]\nurl_file = "nowhere"\nsecrets = ["{SECRET}"]\n'
                               f'[sinks.webhooks.c]\nurl_file = "ftp-url"\nsecrets = ["{SECRET}"]\n'
                               '[sinks.nats.bus]\nservers_file = "empty"\n')
    text = "\n".join(found)
    assert "give either sinks.webhooks.a.url or sinks.webhooks.a.url_file" in text
    assert "sinks.webhooks.b.url_file: cannot read secret file" in text
    assert "sinks.webhooks.c.url_file: " in text and "got scheme 'ftp', host 'crm.example.com'" in text
    assert "sinks.nats.bus.servers_file: cannot read secret file" in text
    assert "pw-654321" not in text and "tok-8c1f2a9e" not in text


def test_names_unique_across_kinds_and_bad_environment_names(tmp_path):
    found = problems(tmp_path, f'[sinks.webhooks.x]\nurl = "https://x.example.com/"\nsecrets = ["{SECRET}"]\n'
                               '[sinks.nats.x]\nservers = ["nats://127.0.0.1:4222"]\n',
                     {"TRACKER_SINKS__WEBHOOKS__URL": "x", "TRACKER_SINKS__NATS__B__SERVRS": "x"})
    text = "\n".join(found)
    assert "sinks.nats.x: a webhook sink is named 'x' too" in text
    assert "environment: TRACKER_SINKS__WEBHOOKS__URL: expected TRACKER_SINKS__<KEY>" in text
    assert "environment: TRACKER_SINKS__NATS__B__SERVRS: unknown key 'servrs'" in text


def test_check_config_command_output(tmp_path):
    path = tmp_path / "tracker.toml"
    path.write_text('[sinks.webhooks.crm]\nurl = "https://crm.example.com/h?token=abc123456"\n'
                    'secrets = ["whsec_tooshort"]\n')
    out = io.StringIO()
    assert config.check_config(str(path), {}, out) == 2
    assert "sinks.webhooks.crm.secrets: secret 1:" in out.getvalue()
    assert "tooshort" not in out.getvalue()
    path.write_text(f'[sinks.webhooks.crm]\nurl = "https://crm.example.com/h?token=abc123456"\nsecrets = ["{SECRET}"]\n')
    out = io.StringIO()
    assert config.check_config(str(path), {}, out) == 0
    assert "sink crm: webhook to https://crm.example.com" in out.getvalue() and "abc123456" not in out.getvalue()


@pytest.mark.parametrize("url", [
    "https//hooks.example.com/services/T0/B0/sEcReTtOkEn123?sig=abcdef12",  # a missing ':'
    "ftp://hooks.example.com/services/T0/B0/sEcReTtOkEn123?sig=abcdef12",
    "https://hooks.example.com:99999/services/T0/B0/sEcReTtOkEn123?sig=abcdef12",
    "sEcReTtOkEn123:abcdef12/services",
])
def test_a_refused_url_never_shows_its_path_query_or_credentials(tmp_path, url):
    # The path and query of a webhook URL are secret (described.secrets_of): receivers put
    # tokens there. A refused URL says what is wrong with its scheme and host only.
    found = problems(tmp_path, f'[sinks.webhooks.ops]\nurl = "{url}"\nsecrets = ["{SECRET}"]\n'
                               '[sinks.nats.bus]\nservers = ["http://someone:pa55word@127.0.0.1:4222/x"]\n')
    text = "\n".join(found)
    assert any("sinks.webhooks.ops.url: expected a URL with a host" in p for p in found), text
    assert any("sinks.nats.bus.servers: server 1: expected a URL with a host" in p for p in found), text
    for secret in ("sEcReTtOkEn123", "abcdef12", "services", "pa55word", "someone"):
        assert secret.lower() not in text.lower(), (secret, text)
    if url.startswith("ftp:"):
        assert "scheme 'ftp', host 'hooks.example.com'" in text
    if url.startswith("https//"):
        assert "https// without its ':'" in text
