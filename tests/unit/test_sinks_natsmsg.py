"""What a NATS sink publishes (tracker.sinks.natsmsg), pure parts: the size the server counts
against max_payload, and whether a stream's subject filters take every subject the sink can publish
(the enabled vendors' events: every state but `submitted`)."""
from __future__ import annotations

import pytest

from tracker.core.states import State
from tracker.sinks.natsmsg import (TooLarge, check_size, headers, matches, never_publishable, not_taken,
                                   published_subjects, size)


def test_the_size_counts_the_header_block_as_the_server_does():
    # nats-server's own figure for this message: "maximum payload exceeded: 1040 vs 1024"
    assert size(b"x" * 1012, {"Nats-Msg-Id": "3"}) == 1040
    hdrs = headers(3, "SMS_EVENTS")
    assert hdrs == {"Nats-Msg-Id": "3", "Nats-Expected-Stream": "SMS_EVENTS"}
    assert size(b"", hdrs) == len(b"NATS/1.0\r\nNats-Msg-Id: 3\r\nNats-Expected-Stream: SMS_EVENTS\r\n\r\n")


def test_a_body_that_fits_only_without_its_headers_is_refused_for_good():
    hdrs = headers(12345, "SMS_EVENTS")
    body = b"x" * (1024 - size(b"", hdrs))
    check_size(body, hdrs, 1024)  # exactly at the limit: sent
    with pytest.raises(TooLarge) as e:
        check_size(body + b"x", hdrs, 1024)
    assert never_publishable(e.value) and "1025 bytes" in str(e.value) and "max_payload of 1024" in str(e.value)


@pytest.mark.parametrize("pattern, subject, taken", [
    ("sms.events.>", "sms.events.twilio.sent", True),
    ("sms.>", "sms.events.twilio.sent", True),
    (">", "sms.events.twilio.sent", True),
    ("sms.events.*.*", "sms.events.twilio.sent", True),
    ("sms.events.*.sent", "sms.events.twilio.sent", True),
    ("sms.events.*", "sms.events.twilio.sent", False),  # one token, not two
    ("sms.events.twilio.sent.>", "sms.events.twilio.sent", False),  # '>' wants at least one more
    ("sms.events.*.*.*", "sms.events.twilio.sent", False),
    ("other.>", "sms.events.twilio.sent", False),
    ("sms.event.>", "sms.events.twilio.sent", False),
])
def test_subject_filters(pattern, subject, taken):
    assert matches(pattern, subject) is taken


def test_a_stream_must_take_every_subject_the_sink_publishes():
    assert not_taken("sms.events", ["sms.events.>"]) == []
    assert not_taken("sms.events", ["other.>", "sms.*.*.*"]) == []
    assert not_taken("sms.events", []) == published_subjects("sms.events")
    left = not_taken("sms.events", ["sms.events.*.delivered", "sms.events.twilio.>"])
    assert "sms.events.skycore.sent" in left and not [s for s in left if ".delivered" in s or ".twilio." in s]


def test_only_the_subjects_an_event_can_have_must_be_taken():
    # No event goes to `submitted`, and a vendor not enabled publishes nothing: a stream without
    # those subjects was refused, and the sink published nothing for good.
    assert not [s for s in published_subjects("sms.events") if s.endswith(".submitted")]
    assert {s.rsplit(".", 1)[1] for s in published_subjects("sms.events", ["twilio"])} == {
        s.name for s in State if s is not State.submitted}
    assert not_taken("sms.events", [f"sms.events.*.{s.name}" for s in State if s is not State.submitted]) == []
    assert not_taken("sms.events", ["sms.events.twilio.>"], ["twilio"]) == []
    assert not_taken("sms.events", ["sms.events.twilio.>"], ["twilio", "sparrow"]) == published_subjects(
        "sms.events", ["sparrow"])
    assert not_taken("sms.events", ["sms.events.*.sent"], ["twilio"]) == [
        s for s in published_subjects("sms.events", ["twilio"]) if not s.endswith(".sent")]
