"""Registered secrets (tracker.logging.register_secret) never reach a database row: a vendor may
echo the key it was sent in its answer, its words or its error, and those are stored
(tracker.db.rows). A text cut short (vendor words are cut to 200 characters) may end in the
start of a secret: that start is masked too, and what is stored is masked before it is cut."""
from __future__ import annotations

from datetime import datetime, timezone

import orjson
import pytest
import structlog

from tracker import logging as tlog
from tracker.adapters.base import Observation, text_of
from tracker.core.states import Failure, State

KEY = "SECRET-canary-123"  # a fake API key, recognizable wherever it leaks
ODD = 'odd"key\\with\ttab-99'  # one JSON has to escape: a quote, a backslash, a control character
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


pytestmark = pytest.mark.usefixtures("no_secrets_registered")


def observation(**changes) -> Observation:
    fields = dict(vendor="sparksender", vendor_ref="1001", recipient="639170000000",
                  state=State.delivered, code="2", text="Delivered", event_at=NOW,
                  raw={"sms_status": 2})
    return Observation(**{**fields, **changes})


def stored(o: Observation) -> list:
    """The observation's row as PostgreSQL receives it (decoded)."""
    from tracker.db.rows import observation_row, rows_json

    [row] = orjson.loads(rows_json([observation_row(o)]))
    return row


def leaks(value, secret: str = KEY) -> bool:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return secret in text or secret[:6] in text


def test_an_answer_echoing_the_key_is_stored_with_the_key_masked():
    tlog.register_secret(KEY, sent=True)
    raw = {"sms_status": 2, "request": {"api_key": KEY, "user_id": "u1"},
           "echo": [f"sent with {KEY}", 7, None, {"nested": [KEY]}], KEY: "a key as a key"}
    row = stored(observation(raw=raw))
    assert not leaks(row[10])
    assert row[10] == {"sms_status": 2, "request": {"api_key": "***", "user_id": "u1"},
                       "echo": ["sent with ***", 7, None, {"nested": ["***"]}], "***": "a key as a key"}


def test_vendor_words_and_failure_echoing_the_key_are_stored_masked():
    tlog.register_secret(KEY, sent=True)
    words = f"no such message for token {KEY}"
    o = observation(state=State.failed, code=f"E:{KEY}", text=words,
                    failure=Failure(f"E:{KEY}", words, True), raw=None)
    row = stored(o)
    assert row[4] == "E:***" and row[5] == "no such message for token ***"
    assert row[7] == "E:***" and row[8] == "no such message for token ***" and row[9] is True
    assert not any(leaks(v) for v in row if v is not None)
    # a lookup failure: the vendor's words, no state, no raw
    row = stored(observation(state=None, code="404", text=words, raw=None))
    assert row[5] == "no such message for token ***"


def test_words_cut_inside_the_key_do_not_keep_its_start():
    tlog.register_secret(KEY, sent=True)
    words = text_of("Invalid token. " + "x" * 175 + " " + KEY)  # the adapter cuts at 200
    assert words.endswith(KEY[:9]) and KEY not in words
    row = stored(observation(state=None, code="404", text=words, raw={"error": words}))
    assert row[5].endswith(" ***") and not leaks(row[5]) and not leaks(row[10])


def test_a_secret_json_has_to_escape_is_found_and_the_json_stays_valid():
    tlog.register_secret(ODD, sent=True)
    raw = {"echo": f"<{ODD}>", "n": 1.5, "ok": True}
    row = stored(observation(raw=raw, text=f"said {ODD}"))
    assert row[10] == {"echo": "<***>", "n": 1.5, "ok": True} and row[5] == "said ***"


def test_rows_without_secrets_are_written_as_before():
    from tracker.db.rows import observation_row

    # near misses: the key's start not at the end of a string, or too short, or followed by another
    raw = {"status": "delivered", "ids": ["SECRE", "SECRET-cab", "SECRET-canar."], "n": 12.5}
    o = observation(raw=raw, text="SECRET-canar is not the key")
    before = observation_row(o)
    tlog.register_secret(KEY, sent=True)
    after = observation_row(o)
    assert orjson.dumps(after) == orjson.dumps(before)
    assert orjson.dumps(after[10]) == orjson.dumps(raw) and after[5] == "SECRET-canar is not the key"


def test_failure_words_on_message_and_transition_rows_are_masked():
    """The poller and intake write a message's failure (and its transition's) from the
    observation, not from its stored row: those rows mask it too."""
    from tracker.core.reduce import PlannedTransition, Report
    from tracker.db.rows import NewMessageRow, message_write, rows_json, transitions_json

    tlog.register_secret(KEY, sent=True)
    words = f"bad key {KEY}"
    [w] = orjson.loads(rows_json([message_write(1, state="failed", failure_code=KEY,
                                                failure_reason=words)]))
    assert w[3] == "***" and w[4] == "bad key ***"
    r = Report(5, 1, State.failed, "poll", NOW, KEY, words, True)
    [t] = orjson.loads(transitions_json([PlannedTransition(1, State.sent, State.failed, False, r)]))
    assert t[5] == "***" and t[6] == "bad key ***"
    n = NewMessageRow("sparksender", "1", "k", None, None, None, None, NOW, None, None, None,
                      "failed", None, KEY, words, True, None, None, None)
    [m] = orjson.loads(rows_json([n]))
    assert m[13] == "***" and m[14] == "bad key ***"


# --- scrub: the start of a secret that ends a text cut short ---------------------------------


def test_scrub_masks_the_start_of_a_secret_ending_a_cut_text():
    tlog.register_secret(KEY, sent=True)
    said = "the vendor said: " + "." * 180 + " "  # a text cut short is 200 characters or more
    assert tlog.scrub(said + "SECRET-can") == said + "***"
    assert tlog.scrub(said + "SECRET") == said + "***"  # 6 characters
    assert tlog.scrub(said + "SECRE") == said + "SECRE"  # 5: too little to tell
    assert tlog.scrub("SECRET-can, then more") == "SECRET-can, then more"  # not at the end: not cut
    assert tlog.scrub(f"{KEY} and {said}SECRET-canary-1") == f"*** and {said}***"


def test_poll_stats_mask_a_vendor_error_before_cutting_it():
    from tracker.config_types import VendorConfig
    from tracker.poller.clock import ManualClock
    from tracker.poller.health import VendorHealth

    tlog.register_secret(KEY, sent=True)
    h = VendorHealth(VendorConfig(name="scrub-test", circuit_failures=1), ManualClock())
    # The key straddles the 200th character, five of its characters before it (too few for
    # scrub to tell the start of a secret from any word): cut first, "SECRE" was kept.
    error = "account error http_401: Invalid token " + "x" * (194 - 38) + " " + KEY + " (echoed)"
    assert error.index(KEY) == 195
    with structlog.testing.capture_logs() as logs:
        h.record("account", error)
    last = h.stats.last_error
    assert len(last) <= 200 and KEY[:5] not in last and last.startswith("account error http_401")
    [opened] = [e for e in logs if e["event"].startswith("vendor circuit open")]
    assert KEY[:5] not in opened["reason"]
    # ... and with more of it before the cut
    h.record("account", "x" * 189 + " " + KEY)
    assert not leaks(h.stats.last_error)


def test_only_the_secrets_vendors_are_sent_are_masked_in_rows_and_numbers_too():
    # A DSN's password ("tracker" on a developer's machine) masked in vendors' data rewrote
    # their host names and words: rows mask only what a vendor is sent (and so may echo).
    tlog.register_secret("tracker")  # the database's: logs only
    tlog.register_secret("12345678", sent=True)  # a vendor's numeric key
    raw = {"StatusCallback": "https://tracker.example.com/cb", "apikey": 12345678, "n": 42}
    row = stored(observation(text="via tracker.example.com", raw=raw))
    assert row[-1] == {"StatusCallback": "https://tracker.example.com/cb", "apikey": "***",
                       "n": 42}
    assert row[5] == "via tracker.example.com"
    assert tlog.scrub("dsn password tracker") == "dsn password ***"  # logs: every one


def test_a_payload_is_masked_by_whole_secrets_only_and_keeps_every_key():
    # A vendor's payload is never cut short: the start of a secret in it is no leak (a number
    # that is the key's first digits was turned into "***"), and two keys masked alike are kept.
    from tracker.masking import mask_secrets_in_json

    tlog.register_secret("98765432", sent=True)
    assert orjson.loads(mask_secrets_in_json(b'{"a":9876543,"b":98765432,"c":"x-98765432/y"}')) == {
        "a": 9876543, "b": "***", "c": "x-***/y"}
    assert orjson.loads(mask_secrets_in_json(b'{"98765432":1,"***":2}')) == {"***": 1, "****": 2}
